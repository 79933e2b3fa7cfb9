"""The only way container root reaches host files: a directory that only the mapped range can enter.

runc starts a container from inside its user namespace, as container root (host uid and gid
``uid_base``), and that process must walk the host path to the container's root filesystem and
bind-mount sources. Walking the data dir would need it open to every local user (o+x), and with it
every container's files, at predictable paths. Instead the data dir is 0700 and runc is given
paths under a gate, ``/run/cove/<hash of the owner>`` (0710, group ``uid_base``): a local user
cannot pass it, container root can. A container's directory is bind-mounted into the gate only
while runc starts it; the container keeps its root in its own mount namespace afterwards.

The gate is a private mount of its own, so nothing mounted in it propagates out, and each view is
made private before it is detached, so detaching it never propagates to the mounts it copied.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from cove.errors import SandboxError
from cove.sandbox.linux.overlay import mounts_under, unmount

RUNTIME_ROOT = Path("/run/cove")
_libc = ctypes.CDLL(None, use_errno=True)
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18


def _mounted(path: Path) -> bool:
    """Whether something is mounted at ``path``. ``os.path.ismount`` cannot tell: a bind mount from
    the same filesystem has the same device as its parent."""
    with Path("/proc/self/mountinfo").open() as info:
        return any(line.split()[4].encode().decode("unicode_escape") == str(path) for line in info)


def _unmount_all(path: Path) -> None:
    """Detaches everything at and below ``path``, stacked mounts included."""
    for point in mounts_under(path):
        unmount(point)
    for _ in range(8):  # bounded: a mount table this function misreads must not hang start-up
        if not _mounted(path):
            return
        unmount(path)


def _mount(source: bytes | None, target: Path, flags: int) -> None:
    if _libc.mount(source, os.fsencode(target), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"Preparing the container gate failed: {os.strerror(err)}")


class Gate:
    def __init__(self, owner: Path, uid_base: int, root: Path = RUNTIME_ROOT) -> None:
        """``owner``: what the gate serves (a data dir), so each has its own."""
        self.path = root / hashlib.sha256(str(owner).encode()).hexdigest()[:16]
        self.root = root
        self.gid = uid_base

    def check_reachable(self) -> None:
        """Container root is an unprivileged host uid: it must be able to walk down to the gate."""
        for directory in (self.root, *self.root.parents):
            if directory.exists() and not directory.stat().st_mode & stat.S_IXOTH:
                raise SandboxError(f"{directory} is not searchable by others (mode o+x), so container root "
                                   f"cannot reach a root filesystem through {self.root}: chmod o+x {directory}.")

    def open(self) -> None:
        """Makes the gate (a private mount, 0710 root:``uid_base``), clearing what a crash left in it."""
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.root.chmod(0o711)
        self.path.mkdir(mode=0o710, exist_ok=True)
        _unmount_all(self.path)
        _mount(os.fsencode(self.path), self.path, _MS_BIND)
        _mount(None, self.path, _MS_PRIVATE)
        os.chown(self.path, 0, self.gid)
        self.path.chmod(0o710)
        for entry in self.path.iterdir():  # mount points of views a crash left
            with contextlib.suppress(OSError):
                entry.rmdir()

    def close(self) -> None:
        _unmount_all(self.path)
        shutil.rmtree(self.path, ignore_errors=True)

    def expose(self, source: Path, name: str) -> Path:
        """``source`` (with what is mounted below it) at ``<gate>/<name>`` until ``hide``."""
        view = self.path / name
        view.mkdir(exist_ok=True)
        _mount(os.fsencode(source), view, _MS_BIND | _MS_REC)
        _mount(None, view, _MS_PRIVATE | _MS_REC)
        return view

    def hide(self, name: str) -> None:
        view = self.path / name
        unmount(view)  # detaches the whole tree: the view is one mount (``open`` cleared the gate)
        with contextlib.suppress(FileNotFoundError):
            view.rmdir()

    @contextlib.contextmanager
    def exposing(self, source: Path, name: str) -> Iterator[Path]:
        view = self.expose(source, name)
        try:
            yield view
        finally:
            self.hide(name)
