"""The warm pool's size follows demand: a burst of creates grows it, quiet shrinks it back."""

from __future__ import annotations

from pathlib import Path

from cove.sandbox.linux.pool_demand import PoolDemand, memory_to_spare


def test_a_burst_grows_the_pool_and_quiet_shrinks_it_back() -> None:
    demand = PoolDemand(floor=4, ceiling=128, window_s=10.0, half_life_s=60.0)
    assert demand.target(now=0.0) == 4
    for i in range(100):
        demand.record(now=1.0 + i / 100)
    assert demand.target(now=2.0) == 104  # the next burst of the same size finds the pool full
    assert demand.target(now=1.99 + 60.0) == 54  # one half-life after the burst peaked
    assert demand.target(now=1.99 + 600.0) == 4  # back to the floor


def test_creates_the_pool_serves_do_not_grow_it() -> None:
    demand = PoolDemand(floor=4, ceiling=128)
    for i in range(100):  # one client, create after create, each served from the pool
        demand.record(now=i / 20, served=True)
    assert demand.target(now=5.0) == 4
    assert demand.within(0.99, now=4.95) == 20


def test_the_ceiling_bounds_the_pool() -> None:
    demand = PoolDemand(floor=2, ceiling=16)
    for i in range(50):
        demand.record(now=float(i) / 50)
    assert demand.target(now=1.0) == 16


def test_memory_to_spare_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    200 kB\n")
    assert not memory_to_spare(meminfo)
    meminfo.write_text("MemTotal:       1000 kB\nMemAvailable:    900 kB\n")
    assert memory_to_spare(meminfo)
