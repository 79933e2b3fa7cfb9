"""One Linux container: an overlay root, a runc-started init, and commands run through that init.

The writable layer lives on disk, so a container survives a server restart with its files; its
processes do not (the init exits when Cove's end of the control socket closes), and it starts
again on next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from cove.errors import Conflict, CoveError, InvalidRequest, SandboxError
from cove.sandbox.base import (
    SKILLS_DIR,
    Channel,
    Command,
    CommandOutput,
    Display,
    ExitOutcome,
    Files,
    Limits,
    OutputCallback,
    Sandbox,
    Screen,
    SkillFile,
    Terminal,
    TerminalRequest,
    TimeoutOutcome,
    memory_bytes,
)
from cove.sandbox.images.layers import lookup
from cove.sandbox.images.store import Image
from cove.sandbox.linux import cgroups
from cove.sandbox.linux.disk import mount_disk
from cove.sandbox.linux.disk_pool import sync_filesystem
from cove.sandbox.linux.display import LinuxDisplay, SocketChannel, check_screen, display_of
from cove.sandbox.linux.fs import ContainerFS, HostFiles
from cove.sandbox.linux.host import Host
from cove.sandbox.linux.init_client import InitClient, Job, SpawnError
from cove.sandbox.linux.netns import connect_in, listen_in
from cove.sandbox.linux.overlay import mount_overlay, unmount_all
from cove.sandbox.linux.process import InitUnresponsive, ProcessRequest, run_process, spawn_connected
from cove.sandbox.linux.sinks import OutputSinks
from cove.sandbox.linux.spec import CA_BUNDLE, COVE_DIR, DEFAULT_PATH, ContainerSpec, ResourceLimits, build_spec
from cove.sandbox.linux.terminal import LinuxTerminal
from cove.sandbox.redact import RedactedTerminal, Redactor

_SCAFFOLD_DIRS = ("proc", "dev", "sys", "tmp", COVE_DIR.lstrip("/"))
_SCAFFOLD_FILES = ("etc/hosts",)
_SHELLS = ("/bin/bash", "/bin/sh")
PROXY_PORT = 3128
"""Where a container with a network policy finds the egress proxy, on its own loopback."""
_SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_MAX_CA_BUNDLE = 8 << 20
_TRUST_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO",
                    "NODE_EXTRA_CA_CERTS", "npm_config_cafile")
"""What OpenSSL, requests, curl, pip, git (GnuTLS), Node and npm read for the CAs they trust."""


class LinuxSandbox(Sandbox):
    def __init__(self, host: Host, container_id: str, image: Image, limits: Limits) -> None:
        self.id = container_id
        self.host = host
        self.image = image
        self.limits = limits
        self.dir = host.containers_dir / container_id
        legacy = self.dir / "disk.img"  # containers made before the disk pool keep theirs
        self.disk_image = legacy if legacy.exists() else host.disks.pool.containers / f"{container_id}.img"
        self.disk = self.dir / "disk"
        # Containers made before disk quotas keep their writable layer directly in their directory.
        base = self.dir if (self.dir / "upper").is_dir() and not self.disk_image.exists() else self.disk
        self.upper = base / "upper"
        self.work = base / "work"
        self.rootfs = self.dir / "rootfs"
        self.cgroup_path = f"/cove/{container_id}"
        self._init: InitClient | None = None
        self._init_pid = 0
        self._shell = ""
        self._sinks = OutputSinks(host.pipes)
        self._lock = asyncio.Lock()
        self._skills_lock = asyncio.Lock()
        self._image_env = dict(entry.split("=", 1) for entry in image.env if "=" in entry)
        self._display: LinuxDisplay | None = None
        self._paused = False

    # -- layout ---------------------------------------------------------------------------------
    def prepare(self, source: Path | None = None) -> None:
        """Creates the writable layer on its own disk (empty, or a copy of the snapshot disk
        ``source``), with the mount points runc needs in it.

        Blocking (a disk image copied and mounted): the engine runs it in a worker thread."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o711)
        self.host.disks.make(self.disk_image, source)
        self.rootfs.mkdir(exist_ok=True)
        # A copied disk was scaffolded when it was first made; its upper layer is now the container's
        # to shape (a symlink where a scaffold dir was), and root must not walk it. It is mounted when
        # the container starts or its files are used.
        if source is None:
            mount_disk(self.disk_image, self.disk)
            for path in (self.upper, self.work):
                path.mkdir(exist_ok=True)
            self._scaffold(self.host.uid_base)
        hostname = self.id[:63]
        (self.dir / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")

    def _scaffold(self, uid: int) -> None:
        """What runc mounts onto, and ``/mnt/data``, in a new container's empty upper layer."""
        os.chown(self.upper, uid, uid)
        for rel in _SCAFFOLD_DIRS:
            if not self._in_image(rel):
                self._make_owned(rel, is_dir=True)
        for rel in _SCAFFOLD_FILES:
            if not self._in_image(rel):
                self._make_owned(rel, is_dir=False)
        self._own_data_dir()

    def _make_owned(self, rel: str, *, is_dir: bool) -> None:
        current = self.upper
        parts = Path(rel).parts
        for index, part in enumerate(parts):
            current = current / part
            if index == len(parts) - 1 and not is_dir:
                current.touch(exist_ok=True)
            else:
                current.mkdir(exist_ok=True)
            os.lchown(current, self.host.uid_base, self.host.uid_base)

    def _own_data_dir(self) -> None:
        """``/mnt/data``: 0755 and container root's, whatever the image says (older default images
        made it 0777); the upper layer's copy of ``/mnt`` keeps the image's owner and mode."""
        uid = self.host.uid_base
        mnt = self.upper / "mnt"
        if not mnt.is_dir():
            mnt.mkdir()
            shown = lookup(self.image.layers, "mnt")
            if shown is not None and stat.S_ISDIR(shown.st_mode):
                os.lchown(mnt, shown.st_uid, shown.st_gid)
                mnt.chmod(stat.S_IMODE(shown.st_mode))
            else:
                os.lchown(mnt, uid, uid)
                mnt.chmod(0o755)
        data = mnt / "data"
        data.mkdir(exist_ok=True)
        os.lchown(data, uid, uid)
        data.chmod(0o755)

    async def copy_disk(self, target: Path) -> int:
        """Copies the container's disk to ``target`` as it is now (a reflink where the pool has
        them), consistent (``_copy_disk``); returns the bytes the copy holds (counted as if none
        were shared)."""
        if not self.disk_image.exists():
            raise Conflict(f"Container {self.id} predates container disks: it has no disk to copy.",
                           code="container_without_disk")
        async with self._lock:  # no stop unmounts the disk meanwhile
            await asyncio.to_thread(self._copy_disk, target)
        return os.stat(target).st_blocks * 512

    def _copy_disk(self, target: Path) -> None:
        """With the container's processes frozen (cgroup freezer: no new writes) its filesystem is
        synced, so the image holds every write and a committed journal, then copied. Not FIFREEZE:
        the kernel's filesystem freeze waits for RCU grace periods, 30-40 ms here on a busy machine."""
        if not os.path.ismount(self.disk):
            self.host.disks.pool.copy(self.disk_image, target)
            return
        thaw = self.running and not self._paused
        if thaw:
            _freeze(self.cgroup_path)
        try:
            sync_filesystem(self.disk)
            self.host.disks.pool.copy(self.disk_image, target)
        finally:
            if thaw:
                cgroups.set_frozen(self.cgroup_path, False)

    def _in_image(self, rel: str) -> bool:
        return lookup(self.image.layers, rel) is not None

    def _ensure_mounted(self) -> None:
        if not self.dir.is_dir():
            raise SandboxError(f"Container {self.id} has no files on disk.")
        if self.disk_image.exists() and not os.path.ismount(self.disk):
            mount_disk(self.disk_image, self.disk)
        if not os.path.ismount(self.rootfs):
            mount_overlay(self.image.layers, self.upper, self.work, self.rootfs)

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._init is not None and not self._init.closed

    async def files(self) -> Files:
        async with self._lock:
            await asyncio.to_thread(self._ensure_mounted)  # mount(8) and friends block
        return HostFiles(self._fs())

    def _fs(self) -> ContainerFS:
        """The mounted root, as container root sees it (files made through it are owned by container root)."""
        return ContainerFS(str(self.rootfs), self.host.uid_base, self.host.uid_base)

    async def exec_ready(self) -> None:
        """Starts the container now rather than on its first command."""
        await self._ensure_started()

    async def _ensure_started(self) -> InitClient:
        if self._paused:  # a command in a frozen container would wait for ever
            await self.resume()
        init = self._init
        if init is not None and not init.closed:
            return init
        async with self._lock:
            if self._init is not None and not self._init.closed:
                return self._init
            await self._cleanup_runtime()
            async with self.host.start_slots:
                self._init = await self._start()
            return self._init

    async def _start(self) -> InitClient:
        host = self.host
        host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # In a worker thread: mounts, files and runc's ~30 ms never hold the event loop.
        started = asyncio.ensure_future(host.blocking_start(functools.partial(self._run_init, child_end)))
        try:
            try:
                self._init_pid = await asyncio.shield(started)
            except asyncio.CancelledError:
                # The thread goes on: wait for its container (and its use of ``child_end``), so the
                # caller's cleanup finds the init's pid and runc's state to remove.
                with contextlib.suppress(Exception):
                    self._init_pid = await started
                raise
        except BaseException:
            host_end.close()
            raise
        finally:
            child_end.close()
        host_end.setblocking(False)
        init = InitClient(host_end)
        if self.limits.network is not None:
            try:
                sock = await listen_in(self._init_pid, PROXY_PORT)
                await host.egress.listen_socket(self.id, self.limits.network, sock)
            except BaseException:
                init.close()
                raise
        return init

    def _run_init(self, control: socket.socket) -> int:
        """Mounts what is not mounted and starts the container with runc (blocking, in one thread
        hop); its init gets ``control``. Returns the init's pid."""
        host = self.host
        self._ensure_mounted()
        ca_bundle = self._ca_bundle()
        # runc, as container root, reaches the directory only through the gate (``gate.py``); the
        # launcher opens host paths as host root and needs none.
        with host.gate.exposing(self.dir, self.id) if host.gate is not None else contextlib.nullcontext(
                self.dir) as bundle:
            spec = ContainerSpec(
                rootfs=bundle / "rootfs", hostname=self.id[:63], libexec_dir=host.libexec,
                limits=ResourceLimits(memory_bytes=memory_bytes(self.limits.memory), cpus=self.limits.cpus,
                                      pids=host.pids_limit, nofile=host.nofile_limit),
                cgroup_path=self.cgroup_path, uid_base=host.uid_base,
                args=[f"{COVE_DIR}/{host.init_binary.name}", "0"], env=[f"PATH={DEFAULT_PATH}"],
                hosts_file=bundle / "hosts", ca_bundle=bundle / ca_bundle.name if ca_bundle else None,
                skills_dir=bundle / self._skills_dir().name)
            (self.dir / "config.json").write_text(json.dumps(build_spec(spec)))
            pid = host.runc.run_detached(self.id, bundle, control, self.dir / "init.log")
        self._shell = self._find_shell()
        return pid

    def _skills_dir(self) -> Path:
        """The host side of the container's read-only ``SKILLS_DIR``: owned by host root (outside the
        container's uid range), so nothing in the container can change it even through another path."""
        skills = self.dir / "skills"
        skills.mkdir(mode=0o755, exist_ok=True)
        return skills

    async def add_skill(self, name: str, files: Iterable[SkillFile]) -> str:
        async with self._skills_lock:  # two writers of one name would trip over each other's renames
            await asyncio.to_thread(self._write_skill, name, list(files))
        return f"{SKILLS_DIR}/{name}"

    def _write_skill(self, name: str, files: list[SkillFile]) -> None:
        """Writes the skill beside its place and swaps it in, so a reader never sees half of it. The
        service checked every path; they are checked again here, where a bad one would write outside."""
        if not name or "/" in name or name.startswith("."):
            raise InvalidRequest(f"Not a skill name: {name!r}.", param="skills")
        root = self._skills_dir()
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            staging.chmod(0o755)
            for file in files:
                target = staging.joinpath(*PurePosixPath(file.path).parts)
                if ".." in PurePosixPath(file.path).parts or not target.is_relative_to(staging):
                    raise InvalidRequest(f"Not a path inside a skill: {file.path!r}.", param="skills")
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                target.write_bytes(file.data)
                target.chmod(0o755 if file.executable else 0o644)
            old = root / f".{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (root / name).rename(old)
            staging.rename(root / name)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _ca_bundle(self) -> Path | None:
        """For a container with domain secrets: its image's trusted CAs plus Cove's egress CA.

        Only such containers trust the CA, so the proxy can stand in for no other container's servers.
        """
        if self.limits.network is None or not self.limits.network.domain_secrets:
            return None
        fs = self._fs()
        system = b""
        with (contextlib.suppress(CoveError), fs.open_read(_SYSTEM_CA_BUNDLE) as (fd, _size),
              os.fdopen(os.dup(fd), "rb") as source):
            system = source.read(_MAX_CA_BUNDLE)
        bundle = self.dir / "ca-certificates.crt"
        bundle.write_bytes(system.rstrip(b"\n") + b"\n" + self.host.egress_ca_pem)
        return bundle

    def _find_shell(self) -> str:
        fs = self._fs()
        for candidate in _SHELLS:
            entry = fs.stat(candidate)
            if entry is not None and not entry.is_dir:
                return candidate
        return f"{COVE_DIR}/busybox"

    async def display(self, screen: Screen | None = None) -> Display:
        """The one display of a container whose image declares one (``DISPLAY`` in its env, as the
        desktop image does), for the container's lifetime; its agent is started now if it is not
        running (then at ``screen``: after a stop the next display may have another size)."""
        if display_of(self._image_env) is None:
            return await super().display(screen)
        requested = check_screen(screen) if screen is not None else None
        if self._display is None:
            self._display = LinuxDisplay(requested or Screen(), self.host.display_agent, self.connect)
        await self._display.start(requested)
        return self._display

    @property
    def has_display(self) -> bool:
        return display_of(self._image_env) is not None

    async def channel(self, argv: list[str]) -> Channel:
        job, sock = await self.connect(["/bin/sh", "-c", 'exec "$0" "$@"', *argv])  # found on PATH, as commands are
        reader, writer = await asyncio.open_connection(sock=sock)
        return SocketChannel(job, reader, writer)

    async def connect(self, argv: list[str]) -> tuple[Job, socket.socket]:
        """Starts a long-lived process (with the environment commands get) whose stdin and stdout
        are a socket; returns its job and the host's end (``process.spawn_connected``)."""
        env = self._environment({})
        init = await self._ensure_started()
        return await spawn_connected(init, argv, env, "/")

    async def connect_port(self, port: int) -> socket.socket:
        await self._ensure_started()
        return await connect_in(self._init_pid, port)

    async def terminal(self, request: TerminalRequest) -> Terminal:
        """The image's shell (interactive, or running ``request.command``) on a terminal init allocates,
        with the environment commands get but ``TERM=xterm-256color``, in the image's workdir."""
        env = self._environment({"TERM": "xterm-256color", **request.env})
        init = await self._ensure_started()
        cwd = self.image.workdir or "/"
        entry = self._fs().stat(cwd)
        if entry is None or not entry.is_dir:
            cwd = "/"
        shell = [self._shell, "sh"] if self._shell.endswith("busybox") else [self._shell]
        argv = shell if request.command is None else [*shell, "-c", request.command]
        job = await init.spawn_pty(argv, env, cwd, request.cols, request.rows)
        secrets = self.limits.network.domain_secrets if self.limits.network is not None else ()
        if secrets:  # as a command's output: a value a server echoed back shows as its placeholder
            return RedactedTerminal(LinuxTerminal(job), {secret.value: secret.placeholder for secret in secrets})
        return LinuxTerminal(job)

    async def stop(self) -> None:
        async with self._lock:
            await self._cleanup_runtime()
            if self._display is not None:
                self._display.detach()
            await asyncio.to_thread(unmount_all, self.rootfs, self.disk)

    async def _cleanup_runtime(self) -> None:
        """Ends the init (and with it every process), reaps it and removes runc's state."""
        if self._paused:  # frozen processes cannot die (cgroup v1): thaw them for the kill
            with contextlib.suppress(OSError):
                cgroups.set_frozen(self.cgroup_path, False)
            self._paused = False
        init, self._init = self._init, None
        if init is not None:
            init.close()
        if self.limits.network is not None:
            await self.host.egress.remove(self.id)
        self._sinks.close()
        if self._init_pid:
            await _wait_exit(self._init_pid, grace=5.0)
            self._init_pid = 0
        if self.host.runc.has_state(self.id):
            await self.host.runc.delete(self.id)

    # -- pause --------------------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return self._paused

    async def pause(self) -> None:
        """Freezes the container's cgroup (the kernel's freezer: no CPU, memory kept). A stopped
        container is marked paused with nothing to freeze; its next use starts it as usual."""
        async with self._lock:
            if self._paused:
                return
            if self.running:
                await asyncio.to_thread(_freeze, self.cgroup_path)
            self._paused = True

    async def resume(self) -> None:
        async with self._lock:
            if not self._paused:
                return
            if self.running:
                await asyncio.to_thread(cgroups.set_frozen, self.cgroup_path, False)
            self._paused = False

    # -- commands -------------------------------------------------------------------------------
    async def exec(self, command: Command, on_output: OutputCallback | None = None) -> CommandOutput:
        env = self._environment(command.env)
        init = await self._ensure_started()
        cwd = command.workdir or self.image.workdir or "/"
        argv = [self._shell, "sh", "-c", command.command] if self._shell.endswith("busybox") else [
            self._shell, "-c", command.command]
        oom_before = cgroups.oom_kills(self.cgroup_path)

        def oom_note() -> str | None:
            if cgroups.oom_kills(self.cgroup_path) > oom_before:
                return f"\ncove: killed: out of memory (container limit {self.limits.memory})\n"
            return None

        request = ProcessRequest(argv=argv, env=env, cwd=cwd, timeout_s=command.timeout_ms / 1000,
                                 max_output_length=command.max_output_length)
        secrets = self.limits.network.domain_secrets if self.limits.network is not None else ()
        if secrets:
            redactor = Redactor({secret.value: secret.placeholder for secret in secrets})
            streamed = redactor.stream(on_output) if on_output is not None else None
            result = await self._run(init, request, streamed, oom_note)
            if on_output is not None:
                redactor.flush(on_output)
            return redactor.output(result)
        return await self._run(init, request, on_output, oom_note)

    async def _run(self, init: InitClient, request: ProcessRequest, on_output: OutputCallback | None,
                   oom_note: Callable[[], str | None]) -> CommandOutput:
        def keep(fd: int) -> None:
            self._sinks.adopt(fd, self.limits.project)

        def missing_workdir(_error: SpawnError) -> CommandOutput | None:
            entry = self._fs().stat(request.cwd)
            if entry is not None and entry.is_dir:
                return None
            message = f"cove: working directory {request.cwd!r} does not exist\n"
            return CommandOutput(stdout="", stderr=message, outcome=ExitOutcome(exit_code=1))

        try:
            return await run_process(init, request, keep, on_output, oom_note, missing_workdir)
        except InitUnresponsive:
            await self.stop()
            note = "\ncove: the container stopped answering and was restarted\n"
            return CommandOutput(stdout="", stderr=note, outcome=TimeoutOutcome())
        except SandboxError:
            if init.closed:
                note = oom_note() or "\ncove: the container stopped while the command ran\n"
                return CommandOutput(stdout="", stderr=note, outcome=ExitOutcome(exit_code=137))
            raise

    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
               "HOSTNAME": self.id[:63]}
        env.update(self._image_env)
        if self.limits.network is not None:
            proxy = f"http://127.0.0.1:{PROXY_PORT}"
            env.update({"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy,
                        "NO_PROXY": "localhost,127.0.0.1,::1", "no_proxy": "localhost,127.0.0.1,::1"})
            if self.limits.network.domain_secrets:
                env.update(dict.fromkeys(_TRUST_VARIABLES, CA_BUNDLE))
                env.update({secret.name: secret.placeholder for secret in self.limits.network.domain_secrets})
        for key, value in extra.items():
            if not key or "=" in key or "\x00" in key or "\x00" in value:
                raise InvalidRequest(f"Invalid environment variable {key!r}.", param="env")
            env[key] = value
        return env


FREEZE_TIMEOUT = 2.0
"""How long the kernel may take to freeze every process (one in an uninterruptible wait delays it)."""


def _freeze(cgroup_path: str) -> None:
    """Freezes the cgroup and waits until the kernel says every process is; thaws and fails past
    ``FREEZE_TIMEOUT``. Blocking: runs in a worker thread."""
    cgroups.set_frozen(cgroup_path, True)
    deadline = time.monotonic() + FREEZE_TIMEOUT
    while not cgroups.is_frozen(cgroup_path):
        if time.monotonic() > deadline:
            cgroups.set_frozen(cgroup_path, False)
            raise SandboxError("The container's processes could not all be frozen; it keeps running.")
        time.sleep(0.001)  # a worker thread, polling the kernel's state


async def _wait_exit(pid: int, grace: float) -> None:
    """Waits for ``pid`` to end, then reaps it if it is our child (Cove is a child subreaper)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(pidfd, exited.set)
    try:
        try:
            async with asyncio.timeout(grace):
                await exited.wait()
        except TimeoutError:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            async with asyncio.timeout(grace):
                await exited.wait()
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
