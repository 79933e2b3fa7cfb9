"""The Linux sandbox engine: containers on this machine with runc, overlayfs and cgroups."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import re
import resource
import secrets
import shutil
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cove.config import Settings, parse_size
from cove.egress.proxy import Decision, EgressProxy, SecretsTLS
from cove.egress.resolver import Resolver, host_addresses, parse_test_hosts
from cove.egress.tls import CertificateAuthority, upstream_context
from cove.errors import NotFound, SandboxError
from cove.sandbox.base import Command, EgressCallback, ExitOutcome, Limits, SandboxEngine, memory_bytes
from cove.sandbox.images.store import Image, ImageStore
from cove.sandbox.linux import cgroups
from cove.sandbox.linux.container import LinuxSandbox
from cove.sandbox.linux.disk import DiskMaker
from cove.sandbox.linux.disk_pool import DiskPool
from cove.sandbox.linux.display import install_agent
from cove.sandbox.linux.gate import Gate
from cove.sandbox.linux.host import Host
from cove.sandbox.linux.initbin import ensure_busybox, ensure_init_binary
from cove.sandbox.linux.launch import Launcher, resolve_runtime
from cove.sandbox.linux.overlay import mounts_under, unmount, unmount_all
from cove.sandbox.linux.pool_demand import PoolDemand
from cove.sandbox.linux.runc import Runc
from cove.sandbox.linux.sinks import PipeBudget

log = logging.getLogger(__name__)
_WARM_UP_MS = 10_000
_POOL_ID = re.compile(r"pool_[0-9a-f]{48}")
_SNAPSHOT_ID = re.compile(r"snap_[0-9A-Za-z]{1,64}")
_PR_SET_CHILD_SUBREAPER = 36
_POOL_CHECK_S = 5.0
"""How often the pool keeper looks at demand without a create waking it (to shrink the pool)."""
_POOL_LULL_S = 0.1
_POOL_LULL_MAX_S = 1.0
"""The pool refills once creates pause for ``_POOL_LULL_S``, or after this long in a steady stream."""
_POOL_FIRST_COMMAND_S = 0.02
"""How long a refill waits after a create: a client's first command usually follows its create within
milliseconds, and a container start (tens of ms of CPU) beside it would slow that command by a
millisecond or more on a small machine (measured: first exec 4.8-5.4 ms at once, 3.9-4.0 ms after)."""


def _start_slots() -> int:
    """Containers starting at once: enough to keep every core busy while some wait on the kernel,
    few enough that a burst cannot pile hundreds of runc processes onto the machine."""
    return max(8, 4 * (os.cpu_count() or 1))


def _container_nofile(wanted: int) -> int:
    """Containers' open-file limit, within the server's own hard limit: runc cannot give a container
    more than it has, and asking would fail every start."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and wanted > hard:
        log.warning("COVE_NOFILE_LIMIT=%d is above this server's hard open-file limit; containers get %d",
                    wanted, hard)
        return int(hard)
    return wanted


class LinuxEngine(SandboxEngine):
    def __init__(self, settings: Settings, images: ImageStore, *, subreaper: bool = True) -> None:
        """``subreaper``: containers' inits become this process's children once runc exits (it reaps them).
        A fleet host passes False: its containers must not die or hang with the Ray worker it runs in, so
        they go to the machine's init instead (docs/fleet.md)."""
        self.settings = settings
        self.subreaper = subreaper
        self.images = images
        self.containers_dir = settings.data_dir / "containers"
        self.libexec = settings.data_dir / "libexec"
        self._egress_ca = CertificateAuthority(settings.data_dir / "egress-ca")
        extra_ca = str(settings.egress_ca_file) if settings.egress_ca_file else None
        self.egress = EgressProxy(
            Resolver(hosts=parse_test_hosts(settings.egress_test_hosts), forbidden=host_addresses()),
            allowed_ports=settings.egress_port_list,
            secrets_tls=SecretsTLS(self._egress_ca, upstream_context(extra_ca)))
        self._host: Host | None = None
        """What the containers share; known once ``start`` has the init binary."""
        self._live: dict[str, LinuxSandbox] = {}
        """Sandboxes by container (API) id."""
        self.pool_demand = PoolDemand(settings.warm_pool, settings.warm_pool_max)
        self.pool_image = settings.default_image
        self.pool_limits = Limits(memory="1g", cpus=settings.default_cpu_limit)
        self._pool: list[LinuxSandbox] = []
        self._pool_keeper: asyncio.Task[None] | None = None
        self._pool_wanted = asyncio.Event()
        """Set by a create that took from the pool (or could have): the keeper looks again at once."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._start_threads = ThreadPoolExecutor(max_workers=_start_slots(), thread_name_prefix="cove-start")
        self.disk_pool = DiskPool(settings.data_dir, settings.disk_pool)

    @property
    def host(self) -> Host:
        if self._host is None:
            raise SandboxError("The container engine has not been started.")
        return self._host

    async def start(self) -> None:
        # Container inits outlive runc: as a subreaper Cove becomes their parent and can reap them.
        if self.subreaper:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.containers_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.containers_dir.chmod(0o700)  # 0711 before the gate; runc reaches containers through it now
        self.libexec.mkdir(parents=True, exist_ok=True, mode=0o755)
        settings = self.settings
        runtime: Runc | Launcher
        gate: Gate | None = None
        if resolve_runtime(settings.runtime) == "cove":
            # The launcher opens host paths as host root, before it becomes container root: no gate
            # (one that runc used before a crash is removed).
            Gate(settings.data_dir, settings.subuid_base).close()
            libexec = self.libexec
            runtime = Launcher(settings.data_dir / "launch", hidden=(settings.data_dir,))
        else:
            gate = Gate(settings.data_dir, settings.subuid_base)
            gate.check_reachable()
            gate.open()
            libexec = gate.expose(self.libexec, "libexec")
            runtime = Runc(settings.data_dir / "runc", hidden=(settings.data_dir, gate.path))
        init_binary = ensure_init_binary(self.libexec)
        ensure_busybox(self.libexec)
        await asyncio.to_thread(self.disk_pool.open)
        self._host = Host(
            containers_dir=self.containers_dir, libexec=libexec, gate=gate,
            init_binary=init_binary, display_agent=install_agent(self.libexec), uid_base=settings.subuid_base,
            pids_limit=settings.pids_limit,
            runc=runtime,
            nofile_limit=_container_nofile(settings.nofile_limit),
            disks=DiskMaker(self.disk_pool, parse_size(settings.disk_limit), settings.subuid_base),
            egress=self.egress,
            egress_ca_pem=self._egress_ca.cert_pem, start_slots=asyncio.Semaphore(_start_slots()),
            start_threads=self._start_threads,
            pipes=PipeBudget.derived(settings.background_pipes_per_container, settings.background_pipes_per_project,
                                     settings.background_pipes))
        await self._clean_crash_leftovers()
        self._remove_unadopted_pool_dirs()
        self._remove_orphan_disks()
        if self.pool_demand.floor:
            self._pool_keeper = asyncio.create_task(self._keep_pool())

    async def _clean_crash_leftovers(self) -> None:
        """A crashed Cove leaves runtime state, mounts and cgroups; none of it may linger. Containers
        the other runtime started (``COVE_RUNTIME`` changed since the crash) are removed as well."""
        runtimes: list[Runc | Launcher] = [self.host.runc]
        runc_state, launch_state = self.settings.data_dir / "runc", self.settings.data_dir / "launch"
        if isinstance(self.host.runc, Launcher) and runc_state.is_dir() and any(runc_state.iterdir()):
            runtimes.append(Runc(runc_state, hidden=(self.settings.data_dir,)))
        elif isinstance(self.host.runc, Runc) and any(launch_state.glob("*.cgroup")):
            runtimes.append(Launcher(launch_state, hidden=(self.settings.data_dir,)))
        for runtime in runtimes:
            for container_id in await runtime.list_ids():
                log.info("removing leftover container runtime %s", container_id)
                await runtime.delete(container_id)
        for point in mounts_under(self.containers_dir):
            unmount(point)
        cgroups.remove_leftovers("/cove")

    # -- ids: a container's API id names its directory, or a symlink to a pooled one's ------------
    def _runtime_id(self, container_id: str) -> str:
        link = self.containers_dir / container_id
        if link.is_symlink():
            target = os.readlink(link)
            if _POOL_ID.fullmatch(target):
                return target
        return container_id

    async def create(self, container_id: str, image: str, limits: Limits, *,
                     snapshot_id: str | None = None) -> LinuxSandbox:
        memory_bytes(limits.memory)  # an unknown tier is refused before anything is made
        if snapshot_id is not None:
            source = self._snapshot_disk(snapshot_id)
            return await self._start_new(container_id, self.images.pinned(snapshot_id), limits,
                                         live_as=container_id, source=source)
        pooled = self._take_pooled(image, limits)
        if pooled is not None:
            pooled.limits = limits  # equal to the pool's, but labelled with its project
            (self.containers_dir / container_id).symlink_to(pooled.id)
            self._live[container_id] = pooled
            return pooled
        return await self._start_new(container_id, self.images.get(image), limits, live_as=container_id)

    async def _start_new(self, runtime_id: str, image: Image, limits: Limits, live_as: str | None,
                         source: Path | None = None) -> LinuxSandbox:
        sandbox = LinuxSandbox(self.host, runtime_id, image, limits)
        if live_as is not None:
            self._live[live_as] = sandbox
        prepared = asyncio.ensure_future(self.host.blocking_start(functools.partial(self._prepare, sandbox, source)))
        try:
            await asyncio.shield(prepared)
            if source is None:  # a copy of a snapshot starts on first use: a fork costs its disk copy only
                await sandbox.exec_ready()
        except BaseException:
            # A cancelled wait leaves the thread mounting: undo only what it has finished making.
            await asyncio.gather(prepared, return_exceptions=True)
            await self._remove(sandbox.id, sandbox)
            if live_as is not None:
                self._live.pop(live_as, None)
            raise
        return sandbox

    def _prepare(self, sandbox: LinuxSandbox, source: Path | None) -> None:
        """In a start thread, since both block: the pin (the container keeps the layers it started from,
        even if the image is rebuilt or removed), written durably under the image store's lock, which
        a prune holds for its whole run; then the disk and mounts."""
        self.images.pin(sandbox.id, sandbox.image)
        sandbox.prepare(source)

    # -- snapshots: a container's disk, copied by reference, with the image it runs on ------------
    async def snapshot(self, container_id: str, snapshot_id: str) -> int:
        sandbox = self._live.get(container_id)
        if sandbox is None:  # not started since the server did: its disk is not mounted
            runtime_id = self._runtime_id(container_id)
            if not (self.containers_dir / runtime_id).is_dir():
                raise NotFound(f"Container {container_id} has no files on disk.", code="container_not_found")
            sandbox = LinuxSandbox(self.host, runtime_id, self.images.pinned(runtime_id), Limits())
        target = self._snapshot_disk(snapshot_id)
        await asyncio.to_thread(self.images.pin, snapshot_id, sandbox.image)
        try:
            return await sandbox.copy_disk(target)
        except BaseException:
            await self.delete_snapshot(snapshot_id)
            raise

    async def delete_snapshot(self, snapshot_id: str) -> None:
        await asyncio.to_thread(self._snapshot_disk(snapshot_id).unlink, True)
        self.images.unpin(snapshot_id)

    def _snapshot_disk(self, snapshot_id: str) -> Path:
        if not _SNAPSHOT_ID.fullmatch(snapshot_id):
            raise NotFound(f"No snapshot found with id '{snapshot_id}'.", code="snapshot_not_found")
        return self.disk_pool.snapshots / f"{snapshot_id}.img"

    def watch_egress(self, callback: EgressCallback) -> None:
        """The proxy's decisions, each with its container's project (from the limits it runs under, which
        name the project of the request that made or last reached it)."""
        def decided(decision: Decision) -> None:
            sandbox = self._live.get(decision.client)
            callback(decision, sandbox.limits.project if sandbox is not None else "")

        self.egress.on_decision = decided

    async def get(self, container_id: str, limits: Limits) -> LinuxSandbox:
        sandbox = self._live.get(container_id)
        if sandbox is None:
            runtime_id = self._runtime_id(container_id)
            if not (self.containers_dir / runtime_id).is_dir():
                raise NotFound(f"Container {container_id} has no files on disk.", code="container_not_found")
            sandbox = LinuxSandbox(self.host, runtime_id, self.images.pinned(runtime_id), limits)
            self._live[container_id] = sandbox
        return sandbox

    async def stop(self, container_id: str) -> None:
        sandbox = self._live.pop(container_id, None)
        if sandbox is not None:
            await sandbox.stop()

    async def destroy(self, container_id: str) -> None:
        sandbox = self._live.pop(container_id, None)
        runtime_id = sandbox.id if sandbox is not None else self._runtime_id(container_id)
        await self._remove(runtime_id, sandbox)
        if runtime_id != container_id:
            (self.containers_dir / container_id).unlink(missing_ok=True)

    async def _remove(self, runtime_id: str, sandbox: LinuxSandbox | None) -> None:
        if sandbox is not None:
            await sandbox.stop()
        else:
            if self.host.runc.has_state(runtime_id):
                await self.host.runc.delete(runtime_id)
            await asyncio.to_thread(unmount_all, self.containers_dir / runtime_id / "rootfs",
                                    self.containers_dir / runtime_id / "disk")
        await asyncio.to_thread(self._remove_files, runtime_id)

    def _remove_files(self, runtime_id: str) -> None:
        # rmtree never follows symlinks, so links planted inside cannot redirect the delete.
        shutil.rmtree(self.containers_dir / runtime_id, True)
        (self.disk_pool.containers / f"{runtime_id}.img").unlink(missing_ok=True)
        self.images.unpin(runtime_id)

    # -- the warm pool: started containers waiting for creates with the default image and limits --
    def _take_pooled(self, image: str, limits: Limits) -> LinuxSandbox | None:
        if image != self.pool_image or limits != self.pool_limits or not self.pool_demand.floor:
            return None
        self._pool_wanted.set()
        layers = self.images.get(image).layers
        while self._pool:
            sandbox = self._pool.pop(0)
            if sandbox.running and sandbox.image.layers == layers:
                self.pool_demand.record(served=True)
                return sandbox
            self._remove_later(sandbox)  # stale: the image was rebuilt
        self.pool_demand.record(served=False)
        return None

    def _remove_later(self, sandbox: LinuxSandbox) -> None:
        self._track(self._remove(sandbox.id, sandbox))

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Runs ``work`` as a task that ``close`` waits for."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _keep_pool(self) -> None:
        """Holds the pool at ``pool_demand``'s target for as long as the engine runs: starts what is
        missing, up to a start slot's worth at once (creates that find the pool empty start their own
        meanwhile), and removes what demand no longer asks for. Starts under way count as pool: a
        create taking from the pool while some start starts another at once, rather than once they
        all end, so a client creating faster than one start takes does not drain it."""
        width = _start_slots()
        starting: set[asyncio.Task[None]] = set()
        while True:
            self._pool_wanted.clear()
            missing = self.pool_demand.target() - len(self._pool) - len(starting)
            if missing > 0 and len(starting) < width:
                await self._lull()
                for _ in range(min(missing, width - len(starting))):
                    # A task the engine tracks, putting its container in the pool itself: when the
                    # keeper is cancelled (the server stops), ``close`` still waits for starts under
                    # way and then removes what they made, rather than leaving it mounted.
                    task = self._track(self._start_into_pool())
                    starting.add(task)
                    task.add_done_callback(functools.partial(self._started_for_pool, starting))
                continue
            for _ in range(min(-missing, len(self._pool))):
                self._remove_later(self._pool.pop())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_POOL_CHECK_S):
                    await self._pool_wanted.wait()

    def _started_for_pool(self, starting: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        """A pool start ended: the keeper looks again at once, unless it failed (then it waits for the
        next create or ``_POOL_CHECK_S``, so a broken image is not retried in a loop)."""
        starting.discard(task)
        if task.cancelled():
            return
        if (failure := task.exception()) is not None:
            log.warning("warm pool: could not start a container (%s); creates start their own", failure)
            return
        self._pool_wanted.set()

    async def _lull(self) -> None:
        """Waits for a pause in a burst of creates (at most ``_POOL_LULL_MAX_S``): starting containers
        for the pool while a burst takes from it would slow the very creates the pool is there to
        serve. A burst is more creates within ``_POOL_LULL_S`` than the machine starts at once (its
        start slots). Fewer are no burst, however steady (a client creating, using, deleting, dozens
        a second): the pool refills behind each once its first command has had
        ``_POOL_FIRST_COMMAND_S``, so the next create finds a container waiting."""
        await asyncio.sleep(max(0.0, _POOL_FIRST_COMMAND_S - (time.monotonic() - self.pool_demand.last_create)))
        deadline = time.monotonic() + _POOL_LULL_MAX_S
        while (now := time.monotonic()) < deadline:
            if self.pool_demand.within(_POOL_LULL_S, now) <= _start_slots():
                return
            quiet = now - self.pool_demand.last_create
            if quiet >= _POOL_LULL_S:
                return
            await asyncio.sleep(_POOL_LULL_S - quiet)

    async def _start_into_pool(self) -> None:
        self._pool.append(await self._start_pooled())

    async def _start_pooled(self) -> LinuxSandbox:
        """One container for the pool, ready to hand out: started, and its shell run once, so the
        first command a client sends costs what any later one does (the first spawn in a new
        container pays for the shell's path lookups and page mappings in its fresh overlay)."""
        runtime_id = f"pool_{secrets.token_hex(24)}"
        sandbox = await self._start_new(runtime_id, self.images.get(self.pool_image), self.pool_limits,
                                        live_as=None)
        try:
            warmed = await sandbox.exec(Command("true", _WARM_UP_MS, 1000))
            if warmed.outcome != ExitOutcome(exit_code=0):
                raise SandboxError(f"a new container's shell did not run: {warmed.outcome}")
        except BaseException:
            await self._remove(sandbox.id, sandbox)
            raise
        return sandbox

    def _remove_unadopted_pool_dirs(self) -> None:
        adopted = {os.readlink(p) for p in self.containers_dir.iterdir() if p.is_symlink()}
        for directory in self.containers_dir.iterdir():
            if _POOL_ID.fullmatch(directory.name) and directory.name not in adopted:
                shutil.rmtree(directory, ignore_errors=True)
                self.images.unpin(directory.name)

    def _remove_orphan_disks(self) -> None:
        """Disks whose container directory is gone (a crash between the two deletes)."""
        for image in self.disk_pool.containers.glob("*.img"):
            if not (self.containers_dir / image.stem).is_dir():
                image.unlink(missing_ok=True)

    async def close(self) -> None:
        if self._pool_keeper is not None:
            self._pool_keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pool_keeper
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.egress.aclose()
        pool, self._pool = self._pool, []
        for sandbox in pool:
            with contextlib.suppress(Exception):
                await self._remove(sandbox.id, sandbox)
        live, self._live = self._live, {}
        for sandbox in live.values():
            with contextlib.suppress(Exception):
                await sandbox.stop()
        if self._host is not None and self._host.gate is not None:
            self._host.gate.close()
        await asyncio.to_thread(self.disk_pool.close)
        self._start_threads.shutdown(wait=False, cancel_futures=True)
