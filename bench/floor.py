"""The machine's floor for ``bench/containers.py``: the same image files started by ``runc`` and
``bwrap`` directly, with no server in between, so the table shows how close Cove gets.

Both use the namespaces Cove's containers have (user, mount, pid, ipc, uts, network, cgroup) and
container root mapped to the same host uids, over an overlay of the image's layers. Each sample is a
process start from the CLI, as a user of either tool pays for it. Nothing here is installed: a tool
that is missing is reported and its rows skipped.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ID_BASE, ID_RANGE = 100000, 65536
"""Cove's ``COVE_SUBUID_BASE`` default: the image's files are owned by these uids on disk."""
_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


@dataclass
class Bundle:
    """An overlay of the image's layers and a runc config beside it."""

    directory: Path
    rootfs: Path

    def write_config(self, args: list[str]) -> None:
        mapping = [{"containerID": 0, "hostID": ID_BASE, "size": ID_RANGE}]
        config = {
            "ociVersion": "1.0.2",
            "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/",
                        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                        "noNewPrivileges": True},
            "root": {"path": str(self.rootfs), "readonly": False},
            "hostname": "floor",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}],
            "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "user",
                                                             "cgroup")],
                      "uidMappings": mapping, "gidMappings": mapping}}
        (self.directory / "config.json").write_text(json.dumps(config))


@contextlib.contextmanager
def bundle(layers: list[Path]) -> Iterator[Bundle]:
    """A private overlay of ``layers`` (bottom first) in a directory container root can reach."""
    directory = Path(tempfile.mkdtemp(prefix="cove-bench-floor-", dir="/var/tmp"))
    directory.chmod(0o711)
    upper, work, rootfs = directory / "upper", directory / "work", directory / "rootfs"
    for path in (upper, work, rootfs):
        path.mkdir()
    os.chown(upper, ID_BASE, ID_BASE)
    lower = ":".join(str(layer) for layer in reversed(layers))
    options = f"lowerdir={lower},upperdir={upper},workdir={work},index=off,xino=off,metacopy=off"
    if _libc.mount(b"overlay", os.fsencode(rootfs), b"overlay", 0, options.encode()) != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise OSError(ctypes.get_errno(), "mounting the floor's overlay failed")
    try:
        yield Bundle(directory, rootfs)
    finally:
        _libc.umount2(os.fsencode(rootfs), _MNT_DETACH)
        shutil.rmtree(directory, ignore_errors=True)


def _timed(argv: list[str], expect: str, n: int, warm: int) -> list[float]:
    samples = []
    for i in range(warm + n):
        started = time.perf_counter()
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        elapsed = (time.perf_counter() - started) * 1000
        if result.returncode != 0 or result.stdout != expect:
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()[-300:]}")
        if i >= warm:
            samples.append(elapsed)
    return samples


def runc_floor(layers: list[Path], n: int, warm: int) -> dict[str, list[float]]:
    """``runc run`` of ``echo hi`` (create to output), and ``runc exec`` / ``nsenter`` of ``true``
    in a running one."""
    runc = shutil.which("runc")
    if runc is None:
        raise FileNotFoundError("runc")
    state = Path(tempfile.mkdtemp(prefix="cove-bench-runc-", dir="/var/tmp"))
    try:
        with bundle(layers) as run_bundle:
            run_bundle.write_config(["/bin/sh", "-c", "echo hi"])
            run = _timed([runc, "--root", str(state), "run", "--bundle", str(run_bundle.directory),
                          "floor-run"], "hi\n", n, warm)
        with bundle(layers) as idle:
            idle.write_config(["/bin/sleep", "infinity"])
            subprocess.run([runc, "--root", str(state), "run", "--detach", "--bundle", str(idle.directory),
                            "floor-idle"], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)  # the pipes would stay open in sleep
            try:
                pid = json.loads(subprocess.run([runc, "--root", str(state), "state", "floor-idle"],
                                                check=True, capture_output=True, text=True).stdout)["pid"]
                exec_ = _timed([runc, "--root", str(state), "exec", "floor-idle", "/bin/sh", "-c", "true"], "",
                               n, warm)
                nsenter = _timed(["nsenter", "-t", str(pid), "-a", "/bin/sh", "-c", "true"], "", n, warm)
            finally:
                subprocess.run([runc, "--root", str(state), "delete", "--force", "floor-idle"],
                               capture_output=True, check=False, timeout=60)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return {"run_ms": run, "exec_ms": exec_, "nsenter_ms": nsenter}


def bwrap_floor(layers: list[Path], n: int, warm: int) -> dict[str, list[float]]:
    """``bwrap`` of ``echo hi`` over the same overlay, every namespace unshared."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise FileNotFoundError("bwrap")
    with bundle(layers) as root:
        argv = [bwrap, "--unshare-all", "--uid", "0", "--gid", "0", "--bind", str(root.rootfs), "/",
                "--proc", "/proc", "--dev", "/dev", "--die-with-parent", "/bin/sh", "-c", "echo hi"]
        return {"run_ms": _timed(argv, "hi\n", n, warm)}
