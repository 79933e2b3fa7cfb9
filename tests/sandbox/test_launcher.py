"""cove-launch (``launch.py``): a container it starts is isolated as runc's are, a hostile root
filesystem cannot send its mounts elsewhere, and a failed start reports why and leaves nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.errors import SandboxError
from cove.sandbox.linux import cgroups
from cove.sandbox.linux.initbin import ensure_busybox
from cove.sandbox.linux.launch import Launcher, build_plan, cgroup_dirs
from cove.sandbox.linux.spec import (
    DEFAULT_PATH,
    MASKED_PATHS,
    READONLY_PATHS,
    ContainerSpec,
    ResourceLimits,
    build_spec,
)

UID_BASE = 100000


def _spec(bundle: Path, args: list[str], cgroup_path: str = "/cove-test/x") -> ContainerSpec:
    return ContainerSpec(
        rootfs=bundle / "rootfs", hostname="launched", libexec_dir=bundle / "libexec",
        limits=ResourceLimits(memory_bytes=256 << 20, cpus=0.5, pids=64, nofile=1024),
        cgroup_path=cgroup_path, uid_base=UID_BASE, args=args, env=[f"PATH={DEFAULT_PATH}"],
        hosts_file=bundle / "hosts", skills_dir=bundle / "skills")


def test_plan_follows_the_spec() -> None:
    config = build_spec(_spec(Path("/b"), ["/.cove/init", "0"]))
    plan = build_plan(config, [Path("/sys/fs/cgroup/pids/cove-test/x")], None, Path("/s.bpf"), 9)
    text = " ".join(plan)
    for mount in config["mounts"]:
        assert mount["destination"] in plan
    assert plan[plan.index("--") + 1:] == ["/.cove/init", "0"]
    assert all(f"readonly {path}" in text for path in READONLY_PATHS)
    assert all(f"mask {path}" in text for path in MASKED_PATHS)
    assert "nnp" in plan and "seccomp /s.bpf" in text and "uidmap 0 100000 65536\n" in text
    caps = plan[plan.index("caps") + 1:plan.index("caps") + 6]
    assert caps == ["a00405fb", "a00405fb", "a00405fb", "0", "0"]  # the 12 of spec.CAPABILITIES


needs_root = pytest.mark.skipif(os.geteuid() != 0 or cgroups.is_unified(),
                                reason="needs root and cgroup v1 (hybrid)")


@pytest.fixture
def bundle(tmp_path: Path) -> Iterator[Path]:
    """A root filesystem of directories (container root's) with the busybox at /.cove."""
    rootfs = tmp_path / "rootfs"
    for rel in ("", "proc", "dev", "sys", "tmp", "etc", ".cove", "skills"):
        (rootfs / rel).mkdir(exist_ok=True)
        os.chown(rootfs / rel, UID_BASE, UID_BASE)
    (rootfs / "etc" / "hosts").touch()
    ensure_busybox(tmp_path / "libexec")
    (tmp_path / "skills").mkdir()
    (tmp_path / "hosts").write_text("127.0.0.1\tlocalhost\n")
    tmp_path.chmod(0o700)  # host root's alone, as Cove's data dir: no gate
    yield tmp_path


def _launch(bundle: Path, script: str) -> tuple[Launcher, str, int]:
    container_id = f"t{secrets.token_hex(6)}"
    config = build_spec(_spec(bundle, ["/.cove/busybox", "sh", "-c", script], f"/cove-test/{container_id}"))
    (bundle / "config.json").write_text(json.dumps(config))
    launcher = Launcher(bundle / "state")
    host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = launcher.run_detached(container_id, bundle, child_end, bundle / "init.log")
    finally:
        child_end.close()
        host_end.close()
    return launcher, container_id, pid


def _wait(pid: int) -> None:
    fd = os.pidfd_open(pid)
    try:
        assert select.select([fd], [], [], 10)[0], "the container did not finish"
    finally:
        os.close(fd)


def _cleanup(launcher: Launcher, container_id: str) -> None:
    asyncio.run(launcher.delete(container_id))
    for directory in cgroup_dirs(f"/cove-test/{container_id}"):
        assert not directory.exists()
    for directory in cgroup_dirs("/cove-test"):
        with contextlib.suppress(OSError):
            directory.rmdir()


@needs_root
def test_isolated_as_runc_does(bundle: Path) -> None:
    bb = "/.cove/busybox"
    launcher, container_id, pid = _launch(bundle, (
        f"{bb} cat /proc/self/uid_map; {bb} grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; "
        f"{bb} hostname; {bb} cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes; "
        f"echo x > /proc/sys/kernel/domainname && echo procsys-writable; "
        f"{bb} mount -t tmpfs none /tmp && echo mounted; {bb} mknod /tmp/sda b 8 0 && echo mknod"))
    try:
        _wait(pid)
        out = (bundle / "init.log").read_text()
    finally:
        _cleanup(launcher, container_id)
    assert out.split()[0:3] == ["0", str(UID_BASE), "65536"]
    assert "CapEff:\t00000000a00405fb" in out and "CapBnd:\t00000000a00405fb" in out
    assert "NoNewPrivs:\t1" in out and "Seccomp:\t2" in out
    assert "\nlaunched\n" in out and "\n64\n" in out and f"\n{256 << 20}\n" in out
    assert "procsys-writable" not in out and "mounted" not in out and "mknod" not in out.split()


@needs_root
def test_symlinks_in_the_root_stay_inside(bundle: Path) -> None:
    """Mount targets behind symlinks (absolute, or climbing with ..) resolve inside the root."""
    escape = Path("/tmp") / f"cove-escape-{secrets.token_hex(4)}"
    rootfs = bundle / "rootfs"
    (rootfs / "skills").rmdir()
    (rootfs / "skills").symlink_to(escape)  # absolute: the host's /tmp if resolved on the host
    (rootfs / "etc" / "hosts").unlink()
    (rootfs / "etc").rename(rootfs / "etc.real")
    (rootfs / "etc").symlink_to(f"../../../../../../../../{escape.name}-etc")
    launcher, container_id, pid = _launch(bundle, "/.cove/busybox ls -d /tmp/cove-escape-*")
    try:
        _wait(pid)
    finally:
        _cleanup(launcher, container_id)
    assert not escape.exists() and not Path(f"/{escape.name}-etc").exists()
    assert (rootfs / escape.relative_to("/")).is_dir()  # made inside the root instead
    assert (rootfs / f"{escape.name}-etc" / "hosts").exists()
    assert str(escape) in (bundle / "init.log").read_text()


@needs_root
@pytest.mark.parametrize(("setup", "expected"), [
    ("proc-symlink", "proc"),
    ("hosts-into-proc", "/proc"),
    ("no-init", "executing"),
])
def test_failures_report_and_leave_nothing(bundle: Path, setup: str, expected: str) -> None:
    rootfs = bundle / "rootfs"
    script = "true"
    if setup == "proc-symlink":
        (rootfs / "proc").rmdir()
        (rootfs / "proc").symlink_to("tmp")
    elif setup == "hosts-into-proc":
        (rootfs / "etc" / "hosts").unlink()
        (rootfs / "etc" / "hosts").symlink_to("/proc/sys/kernel/hostname")
    else:
        (bundle / "libexec" / "busybox").unlink()
    container_id = f"t{secrets.token_hex(6)}"
    config = build_spec(_spec(bundle, ["/.cove/busybox", "sh", "-c", script], f"/cove-test/{container_id}"))
    (bundle / "config.json").write_text(json.dumps(config))
    launcher = Launcher(bundle / "state", hidden=(bundle,))
    host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        with pytest.raises(SandboxError) as failure:
            launcher.run_detached(container_id, bundle, child_end, bundle / "init.log")
    finally:
        child_end.close()
        host_end.close()
    message = failure.value.message
    assert message.startswith("Starting the container failed: ") and expected in message
    assert "\n" not in message and str(bundle) not in message
    assert not launcher.has_state(container_id)
    assert not any(directory.exists() for directory in cgroup_dirs(f"/cove-test/{container_id}"))
    for directory in cgroup_dirs("/cove-test"):
        with contextlib.suppress(OSError):
            directory.rmdir()

@needs_root
def test_a_crashed_servers_container_is_found_and_killed(bundle: Path) -> None:
    """After a crash the next server finds its containers (list_ids) and delete kills what still runs."""
    _first, container_id, pid = _launch(bundle, "/.cove/busybox sleep 1000 & /.cove/busybox sleep 1000")
    pidfd = os.pidfd_open(pid)
    try:
        again = Launcher(bundle / "state")  # the next server, on the same data dir
        assert asyncio.run(again.list_ids()) == [container_id] and again.has_state(container_id)
        _cleanup(again, container_id)
        assert select.select([pidfd], [], [], 5)[0], "the init was not killed"
        assert asyncio.run(again.list_ids()) == []
    finally:
        os.close(pidfd)
