"""The Linux sandbox engine: containers on this machine with runc, overlayfs and cgroups."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import shutil
import stat
from pathlib import Path

from cove.config import Settings
from cove.errors import InvalidRequest, NotFound, SandboxError
from cove.sandbox.base import MEMORY_TIERS, Limits, SandboxEngine
from cove.sandbox.images.store import ImageStore
from cove.sandbox.linux import cgroups
from cove.sandbox.linux.container import LinuxSandbox
from cove.sandbox.linux.initbin import ensure_busybox, ensure_init_binary
from cove.sandbox.linux.overlay import mounts_under, unmount
from cove.sandbox.linux.runc import Runc

log = logging.getLogger(__name__)
_PR_SET_CHILD_SUBREAPER = 36


def _check_traversable(path: Path) -> None:
    """Container root is an unprivileged host uid: it must be able to pass through to its rootfs."""
    for directory in (path, *path.parents):
        if not directory.stat().st_mode & stat.S_IXOTH:
            raise SandboxError(f"{directory} is not searchable by others (mode o+x), so containers under "
                               f"{path} cannot reach their root filesystem: use another COVE_DATA_DIR or "
                               f"chmod o+x {directory}.")


class LinuxEngine(SandboxEngine):
    def __init__(self, settings: Settings, images: ImageStore) -> None:
        root = settings.data_dir
        self.images = images
        self.containers_dir = root / "containers"
        self.libexec = root / "libexec"
        self.runc = Runc(root / "runc")
        self.uid_base = settings.subuid_base
        self.pids_limit = settings.pids_limit
        self.nofile_limit = settings.nofile_limit
        self.start_slots = asyncio.Semaphore(8)
        """Bounds concurrent runc starts so a burst of creates cannot starve the machine."""
        self._live: dict[str, LinuxSandbox] = {}
        self.init_binary = self.libexec / "cove-init"

    @staticmethod
    def memory_bytes(tier: str) -> int:
        try:
            return MEMORY_TIERS[tier]
        except KeyError:
            raise InvalidRequest(
                f"Invalid memory_limit {tier!r}: expected one of {', '.join(MEMORY_TIERS)}.",
                param="memory_limit") from None

    async def start(self) -> None:
        # Container inits outlive runc: as a subreaper Cove becomes their parent and can reap them.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.containers_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        _check_traversable(self.containers_dir)
        self.libexec.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.init_binary = ensure_init_binary(self.libexec)
        ensure_busybox(self.libexec)
        await self._clean_crash_leftovers()

    async def _clean_crash_leftovers(self) -> None:
        """A crashed Cove leaves runc state, mounts and cgroups; none of it may linger."""
        for container_id in await self.runc.list_ids():
            log.info("removing leftover container runtime %s", container_id)
            await self.runc.delete(container_id)
        for point in mounts_under(self.containers_dir):
            unmount(point)
        cgroups.remove_leftovers("/cove")

    def _sandbox(self, container_id: str, limits: Limits) -> LinuxSandbox:
        sandbox = self._live.get(container_id)
        if sandbox is None:
            sandbox = LinuxSandbox(self, container_id, self.images.pinned(container_id), limits)
            self._live[container_id] = sandbox
        return sandbox

    async def create(self, container_id: str, image: str, limits: Limits) -> LinuxSandbox:
        self.memory_bytes(limits.memory)
        # The container keeps the layers it started from, even if the image is rebuilt or removed.
        self.images.pin(container_id, self.images.get(image))
        sandbox = self._sandbox(container_id, limits)
        sandbox.prepare()
        try:
            await sandbox.exec_ready()
        except BaseException:
            await self.destroy(container_id)
            raise
        return sandbox

    async def get(self, container_id: str, limits: Limits) -> LinuxSandbox:
        if container_id not in self._live and not (self.containers_dir / container_id).is_dir():
            raise NotFound(f"Container {container_id} has no files on disk.", code="container_not_found")
        return self._sandbox(container_id, limits)

    async def destroy(self, container_id: str) -> None:
        sandbox = self._live.pop(container_id, None)
        if sandbox is not None:
            await sandbox.stop()
        else:
            await self.runc.delete(container_id)
            unmount(self.containers_dir / container_id / "rootfs")
        directory = self.containers_dir / container_id
        # rmtree never follows symlinks, so links planted inside cannot redirect the delete.
        await asyncio.to_thread(shutil.rmtree, directory, True)
        self.images.unpin(container_id)

    async def stop_idle(self, container_id: str) -> None:
        sandbox = self._live.get(container_id)
        if sandbox is not None:
            await sandbox.stop()

    async def close(self) -> None:
        live, self._live = self._live, {}
        for sandbox in live.values():
            with contextlib.suppress(Exception):
                await sandbox.stop()
