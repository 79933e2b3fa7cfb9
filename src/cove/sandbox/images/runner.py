"""Run one build step: a command inside an image's layers, capturing its changes as a new layer.

The layers become a kernel overlay with a fresh upper dir (the new layer) and runc runs the
command in the foreground with the same isolation as a workload container, except that it shares
the host's network so that apt and pip can download.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from cove.errors import ImageError, SandboxError
from cove.sandbox.images.layers import lookup
from cove.sandbox.images.store import ImageStore, remove_tree
from cove.sandbox.linux.gate import Gate
from cove.sandbox.linux.initbin import ensure_busybox
from cove.sandbox.linux.overlay import mount_overlay, unmount
from cove.sandbox.linux.spec import ContainerSpec, ResourceLimits, build_spec

Progress = Callable[[str], None]
"""Receives build output one line at a time."""

HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
# Mount points runc needs in the rootfs: it cannot create them itself, because from inside the
# user namespace it may not mkdir in directories that the overlay shows as owned by others.
_MOUNT_POINTS = ((".cove", True), ("proc", True), ("dev", True), ("sys", True),
                 ("etc/resolv.conf", False), ("etc/hosts", False))
_Added = list[tuple[Path, tuple[int, ...]]]


def ensure_libexec(data_dir: Path) -> Path:
    """``<data_dir>/libexec`` holding busybox: bind-mounted read-only at ``/.cove``."""
    libexec = data_dir / "libexec"
    ensure_busybox(libexec)
    return libexec


def run_step(store: ImageStore, data_dir: Path, layers: Sequence[Path], upper: Path, *,
             args: list[str], env: Sequence[str], cwd: str, progress: Progress) -> None:
    """Run ``args`` over ``layers`` with ``upper`` as the writable layer; raise ImageError with the
    output's tail if it fails. ``upper`` is left holding exactly the command's changes."""
    scratch = store.new_tmp("run-")
    # runc, as container root, reaches the step's root and libexec only through a gate of its own.
    gate = Gate(scratch, store.uid_base)
    try:
        gate.check_reachable()
    except SandboxError as exc:
        remove_tree(scratch)
        raise ImageError(f"A build step cannot run: {exc.message}") from exc
    os.chown(scratch, 0, store.uid_base)  # the view's root: container root passes, nobody else
    scratch.chmod(0o710)
    rootfs, work, bundle = scratch / "rootfs", scratch / "work", scratch / "bundle"
    for directory in (rootfs, work, bundle):
        directory.mkdir(mode=0o755)
    (bundle / "hosts").write_text(HOSTS)
    (bundle / "hosts").chmod(0o644)
    added: _Added = []
    mounted = False
    try:
        added = _add_mount_points(layers, upper, store.uid_base)
        try:
            mount_overlay(layers, upper, work, rootfs)
        except SandboxError as exc:
            raise ImageError(f"Cannot mount the image for a build step: {exc}") from exc
        mounted = True
        gate.open()
        view = gate.expose(scratch, "scratch")
        cid = f"cove-build-{uuid.uuid4().hex[:16]}"
        config = build_spec(ContainerSpec(
            rootfs=view / "rootfs", hostname="cove-build",
            libexec_dir=gate.expose(ensure_libexec(data_dir), "libexec"),
            limits=_build_limits(), cgroup_path=f"/cove-build/{cid}", uid_base=store.uid_base,
            args=args, env=list(env), hosts_file=view / "bundle" / "hosts", host_network=True,
            resolv_conf=Path("/etc/resolv.conf")))
        config["process"]["cwd"] = cwd or "/"
        (bundle / "config.json").write_text(json.dumps(config))
        _run_runc(data_dir / "runc-build", view / "bundle", cid, progress)
    finally:
        try:
            gate.close()
            if mounted:
                unmount(rootfs)
        finally:
            remove_tree(scratch)
        _remove_mount_points(upper, added)


def _run_runc(state_dir: Path, bundle: Path, cid: str, progress: Progress) -> None:
    runc = shutil.which("runc") or "/usr/sbin/runc"
    base = [runc, "--root", str(state_dir)]
    tail: collections.deque[str] = collections.deque(maxlen=50)
    # --no-new-keyring: a session keyring per run would count against the kernel's key quota of
    # the container root uid (200 keys), shared by every container; builds need none, and the
    # seccomp profile denies the keyring syscalls anyway.
    command = [*base, "run", "--no-new-keyring", "--bundle", str(bundle), cid]
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as proc:
        try:
            code = stream_lines(proc, tail, progress)
        except BaseException:
            subprocess.run([*base, "kill", cid, "KILL"], capture_output=True, check=False)
            raise
        finally:
            subprocess.run([*base, "delete", "--force", cid], capture_output=True, check=False)
    if code != 0:
        output = "\n".join(tail) or "(no output)"
        raise ImageError(f"Build step failed with exit status {code}:\n{output}")


def stream_lines(proc: subprocess.Popen[bytes], tail: collections.deque[str], progress: Progress) -> int:
    """Feed a process's output to ``progress`` line by line (keeping the last ones in ``tail``);
    returns its exit status."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\r\n").rsplit("\r", 1)[-1]
        tail.append(line)
        progress(line)
    return proc.wait()


def _build_limits() -> ResourceLimits:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ResourceLimits(memory_bytes=memory, cpus=float(os.cpu_count() or 1), pids=4096,
                          nofile=4096)


def match_root(layers: Sequence[Path], upper: Path) -> None:
    """Give a new layer's root the attributes of the image's ``/`` (the upper's root wins)."""
    top = layers[-1].lstat()
    os.chown(upper, top.st_uid, top.st_gid)
    os.chmod(upper, stat.S_IMODE(top.st_mode))


def _add_mount_points(layers: Sequence[Path], upper: Path, uid_base: int) -> _Added:
    """Create missing mount points in ``upper`` (and their parents, with the attributes the lower
    layers give them); returns what was made, to be undone by ``_remove_mount_points``."""
    added: _Added = []
    match_root(layers, upper)
    for rel, is_dir in _MOUNT_POINTS:
        st = lookup(layers, rel)
        if st is not None and (stat.S_ISDIR if is_dir else stat.S_ISREG)(st.st_mode):
            continue
        parent = rel.rpartition("/")[0]
        if parent and not (upper / parent).exists():
            pst = lookup(layers, parent)
            if pst is not None and not stat.S_ISDIR(pst.st_mode):
                raise ImageError(f"/{parent} in this image is not a directory")
            (upper / parent).mkdir()
            owner = (pst.st_uid, pst.st_gid) if pst else (uid_base, uid_base)
            os.chown(upper / parent, *owner)
            os.chmod(upper / parent, stat.S_IMODE(pst.st_mode) if pst else 0o755)
            added.append((upper / parent, _ident(upper / parent)))
        path = upper / rel
        if is_dir:
            path.mkdir(mode=0o755)
        else:
            path.touch(mode=0o644)
        os.chown(path, uid_base, uid_base)
        added.append((path, _ident(path)))
    return added


def _remove_mount_points(upper: Path, added: _Added) -> None:
    """Undo ``_add_mount_points`` where the step left things as they were."""
    for path, ident in reversed(added):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            if _ident(path)[:4] == ident[:4] and not any(path.iterdir()):
                path.rmdir()
        elif _ident(path) == ident and st.st_size == 0:
            path.unlink()


def _ident(path: Path) -> tuple[int, ...]:
    st = path.lstat()
    return st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns
