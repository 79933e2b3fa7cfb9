"""The fleet tests' Ray clusters, one per module that asks for it (a cluster costs about a gigabyte and
ten seconds to start; a module may kill its nodes): ``cluster`` on the simulated engine, or ``node``, a
head and one real node on 127.0.0.2-3 whose ``SandboxHost`` runs the Linux engine (runc) on a data dir
of its own and the shared images (its egress proxy knows ``NODE_SITE``), with ``fleet``, a server on it."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.config import Settings
from cove.sandbox.images.store import ImageStore
from cove.sandbox.linux.engine import LinuxEngine
from tests.conftest import IMAGES_DIR, Server, _server_env, data_dir, running_server
from tests.postgres import PostgresServer
from tests.ray_cluster import (
    HEAD_IP,
    NODE_SITE,
    REAL_NODE_IP,
    RayCluster,
    RayNode,
    hosts_reported,
    simulated_cluster,
)
from tests.scripted_upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with simulated_cluster() as ray:
        yield ray


@pytest.fixture(scope="module")
def node_dir() -> Iterator[Path]:
    path = data_dir("cove-fleet-node")
    yield path
    # What a killed host left (its containers belong to the machine's init): removed as a restarted host would.
    settings = Settings(data_dir=path, images_dir=IMAGES_DIR, warm_pool=0)
    engine = LinuxEngine(settings, ImageStore(settings.image_root, settings.subuid_base), subreaper=False)

    async def clean() -> None:
        await engine.start()
        await engine.close()

    asyncio.run(clean())
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def node(node_dir: Path) -> Iterator[RayNode]:
    ray = RayCluster()
    try:
        ray.add(HEAD_IP, head=True)
        yield ray.add(REAL_NODE_IP, {"cove_host:real": 1, "cove_slots": 10},
                      env={"COVE_DATA_DIR": str(node_dir), "COVE_IMAGES_DIR": str(IMAGES_DIR), "COVE_WARM_POOL": "0",
                           "COVE_EGRESS_TEST_HOSTS": f"{NODE_SITE}={REAL_NODE_IP}"})
    finally:
        ray.stop()


@pytest.fixture(scope="module")
def fleet(node: RayNode, upstream: ScriptedUpstream, postgres: PostgresServer | None) -> Iterator[Server]:
    env = {**_server_env(upstream, postgres), "COVE_RAY_ADDRESS": node.cluster.address, "COVE_RAY_NODE_IP": HEAD_IP,
           "COVE_FLEET_CALL_TIMEOUT": "10", "COVE_FLEET_CHECK_SECONDS": "0.5"}
    with running_server(data_dir("cove-fleet-api"), env) as srv:
        hosts_reported(srv, node.cluster, {"real"})
        yield srv
