"""The fleet tests' Ray cluster on the simulated engine: one per module that asks for it (a cluster costs
about a gigabyte and ten seconds to start; a module may kill its nodes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ray_cluster import RayCluster, simulated_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with simulated_cluster() as ray:
        yield ray
