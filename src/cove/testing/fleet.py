"""A simulated fleet node: a ``SandboxHost`` engine with containers in memory, for tests and bench/fleet.py.

Run a host on it with ``COVE_FLEET_HOST_ENGINE=cove.testing.fleet:simulated_host``. Commands are
understood just enough to exercise the fleet's paths: ``echo TEXT`` writes TEXT, ``sleep S`` takes S
seconds (a call in flight when a node dies), ``hostname`` writes the node's name (where placement put
the container), anything else exits 0 quietly. A snapshot is a copy of the container's files, kept by
the node that took it (as a real node keeps it on its disk): a container made from it starts with them.
"""

from __future__ import annotations

import asyncio
import copy

from cove.errors import NotFound
from cove.sandbox.base import Command, CommandOutput, ExitOutcome, Limits, Sandbox, SandboxEngine
from cove.sandbox.fleet.host import HostEngine
from cove.testing.sandbox import MemoryFiles, MemorySandbox

SIMULATED_IMAGES = frozenset({"default"})


class SimulatedEngine(SandboxEngine):
    def __init__(self, node: str = "local") -> None:
        self.node = node
        self.containers: dict[str, MemorySandbox] = {}
        self.snapshots: dict[str, MemoryFiles] = {}

    async def simulate(self, command: Command) -> CommandOutput:
        verb, _, rest = command.command.partition(" ")
        if verb == "sleep":
            await asyncio.sleep(float(rest))
        stdout = {"echo": rest + "\n", "hostname": self.node + "\n"}.get(verb, "")
        return CommandOutput(stdout=stdout, stderr="", outcome=ExitOutcome(exit_code=0))

    async def start(self) -> None:
        pass

    async def create(self, container_id: str, image: str, limits: Limits, *,
                     snapshot_id: str | None = None) -> Sandbox:
        files = None
        if snapshot_id is not None:
            if snapshot_id not in self.snapshots:
                raise NotFound(f"No snapshot found with id '{snapshot_id}'.", code="snapshot_not_found")
            files = copy.deepcopy(self.snapshots[snapshot_id])
        sandbox = self.containers[container_id] = MemorySandbox(files, run=self.simulate, container_id=container_id)
        return sandbox

    async def snapshot(self, container_id: str, snapshot_id: str) -> int:
        files = await (await self.get(container_id, Limits())).files()
        assert isinstance(files, MemoryFiles)
        self.snapshots[snapshot_id] = copy.deepcopy(files)
        return sum(len(data) for data, _mode, _mtime in files.files.values())

    async def delete_snapshot(self, snapshot_id: str) -> None:
        self.snapshots.pop(snapshot_id, None)

    async def get(self, container_id: str, limits: Limits) -> Sandbox:
        try:
            return self.containers[container_id]
        except KeyError:
            raise NotFound(f"Container {container_id} has no files on disk.", code="container_not_found") from None

    async def stop(self, container_id: str) -> None:
        if container_id in self.containers:
            await self.containers[container_id].stop()

    async def destroy(self, container_id: str) -> None:
        self.containers.pop(container_id, None)

    async def close(self) -> None:
        self.containers.clear()


def simulated_host(node: str) -> HostEngine:
    return SimulatedEngine(node), lambda: SIMULATED_IMAGES
