"""Kernel overlayfs mounts: read-only image layers under one persistent writable layer."""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from cove.errors import SandboxError

log = logging.getLogger(__name__)
_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2
_MS_NOSUID = 0x2
_MS_NODEV = 0x4


def mount_overlay(lowers: Sequence[Path], upper: Path, work: Path, target: Path) -> None:
    """Mounts ``lowers`` (bottom first) under ``upper`` at ``target``."""
    if not lowers:
        raise SandboxError("An image needs at least one layer.")
    lowerdir = ":".join(str(layer) for layer in reversed(lowers))
    # index/xino/metacopy off: each layer set is mounted by one overlay at a time, and plain
    # copy-up keeps an upper dir usable as a lower layer later (snapshots, image layers).
    options = f"lowerdir={lowerdir},upperdir={upper},workdir={work},index=off,xino=off,metacopy=off"
    if len(options) >= 4096:
        raise SandboxError("Too many image layers to mount in one overlay.")
    rc = _libc.mount(b"overlay", os.fsencode(target), b"overlay", _MS_NOSUID | _MS_NODEV,
                     options.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"Mounting the container filesystem failed: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Detaches ``target`` if it is mounted; lazy so busy file handles never wedge a delete."""
    if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: already gone
            log.error("unmounting %s failed: %s", target, os.strerror(err))
            raise SandboxError(f"Unmounting a container filesystem failed: {os.strerror(err)}")  # no host path


def unmount_all(*targets: Path) -> None:
    """``unmount`` of each, in order (one call to hand a worker thread)."""
    for target in targets:
        unmount(target)


def mounts_under(prefix: Path) -> list[Path]:
    """Mount points below ``prefix`` (from /proc/self/mountinfo), deepest first."""
    found: list[Path] = []
    root = str(prefix).rstrip("/") + "/"
    with Path("/proc/self/mountinfo").open() as info:
        for line in info:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(root):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)
