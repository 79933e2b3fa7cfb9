"""How many started containers the warm pool should hold: as many as recent bursts of creates took.

A fixed pool of a few serves one agent at a time, but a burst of a hundred creates empties it at
once and the rest start cold, each paying for a runc start on a busy machine. So the pool learns:
its target is the most creates seen within any ``window_s`` lately, decaying by half every
``half_life_s`` once the bursts stop, never below the configured floor nor above the ceiling, and
only above the floor while the host has memory to spare (pooled containers are idle, but each holds
a mount, a loop device and a few processes).
"""

from __future__ import annotations

import collections
import math
import time
from pathlib import Path

_ARRIVALS_S = 1.0
_MEMORY_SPARE = 0.25
"""Fraction of the host's memory that must stay available for the pool to grow past its floor."""


class PoolDemand:
    def __init__(self, floor: int, ceiling: int, window_s: float = 10.0, half_life_s: float = 60.0) -> None:
        self.floor = floor
        self.ceiling = max(floor, ceiling)
        self.window_s = window_s
        self.half_life_s = half_life_s
        self._recent: collections.deque[float] = collections.deque()
        """Creates the pool could not serve, within ``window_s``."""
        self._arrivals: collections.deque[float] = collections.deque()
        """Every create within ``_ARRIVALS_S`` (``within``)."""
        self._peak = 0.0
        self._peak_at = 0.0
        self.last_create = -math.inf
        """When the last create came (``time.monotonic``)."""

    def record(self, now: float | None = None, *, served: bool = False) -> None:
        """One create of the pool's kind; ``served``: the pool had a container for it. Only creates it
        could not serve grow it: a client creating one container at a time, served each time, needs
        no more than the floor however fast it goes."""
        now = time.monotonic() if now is None else now
        self.last_create = now
        self._arrivals.append(now)
        while self._arrivals[0] < now - _ARRIVALS_S:
            self._arrivals.popleft()
        if served:
            return
        self._recent.append(now)
        self._forget(now)
        if len(self._recent) >= self._decayed_peak(now):
            self._peak, self._peak_at = float(len(self._recent)), now

    def target(self, now: float | None = None) -> int:
        """How many containers the pool should hold now."""
        now = time.monotonic() if now is None else now
        self._forget(now)
        wanted = self.floor + max(len(self._recent), math.ceil(self._decayed_peak(now) - 0.5))
        if wanted > self.floor and not memory_to_spare():
            return self.floor
        return max(self.floor, min(self.ceiling, wanted))

    def within(self, seconds: float, now: float | None = None) -> int:
        """How many creates came in the last ``seconds``: one at a time is a client working, many a burst."""
        now = time.monotonic() if now is None else now
        return sum(1 for at in self._arrivals if at >= now - seconds)

    def _forget(self, now: float) -> None:
        while self._recent and self._recent[0] < now - self.window_s:
            self._recent.popleft()

    def _decayed_peak(self, now: float) -> float:
        return float(self._peak * 0.5 ** ((now - self._peak_at) / self.half_life_s))


def memory_to_spare(meminfo: Path = Path("/proc/meminfo")) -> bool:
    """Whether more than ``_MEMORY_SPARE`` of the host's memory is available."""
    fields: dict[str, int] = {}
    for line in meminfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            fields[key] = int(value.split()[0])
    total, available = fields.get("MemTotal", 0), fields.get("MemAvailable", 0)
    return total > 0 and available > _MEMORY_SPARE * total
