"""A container's writable layer lives on its own small filesystem: a sparse ext4 image, loop-mounted.

That is the disk quota: writes past the image's size fail inside the container with ENOSPC, and
the host's disk cannot be filled by one container. The image is sparse, so it costs what is
written (about 4 MiB of ext4 metadata for a new 10g disk).

Making one per container is on every cold create's path, so neither step spawns a program: mkfs
runs once per size and owner, into a template image, and each container's disk is a copy of it made
by the disk pool (``disk_pool.py``: a reflink, or where there are none a sparse copy of the template's
data extents, ~1 ms, where mkfs.ext4 took ~10 ms); the loop
device is attached with ``LOOP_CONFIGURE`` (Linux 5.8+) and mounted with mount(2) (where mount(8) took ~7 ms).
The copies share the template's filesystem UUID, which nothing in Cove or the kernel relies on.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from cove.errors import SandboxError

if TYPE_CHECKING:
    from cove.sandbox.linux.disk_pool import DiskPool

_MKFS_OPTIONS = ("-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner={uid}:{uid}")
_TEMPLATE_VERSION = 1
"""Part of a template's file name: bump it when ``_MKFS_OPTIONS`` change, so old templates are unused."""

_libc = ctypes.CDLL(None, use_errno=True)
_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LO_FLAGS_AUTOCLEAR = 4
_LOOP_CONFIG = struct.Struct("=II5Q4I64s64s32s2Q8Q")
"""``struct loop_config``: fd, block_size, then ``struct loop_info64`` and reserved words."""
_LOOP_ATTEMPTS = 32
"""A free loop device can be taken by another attach between asking and configuring: retry."""
_MS_NOSUID = 0x2
_MS_NODEV = 0x4


def create_disk(image: Path, size_bytes: int, uid: int) -> None:
    """A new, empty filesystem of ``size_bytes`` whose root belongs to container root (runs mkfs)."""
    with image.open("wb") as handle:
        handle.truncate(size_bytes)
    options = [option.format(uid=uid) for option in _MKFS_OPTIONS]
    _run(["mkfs.ext4", *options, str(image)])


class DiskMaker:
    """Makes container disks of one size and owner: reflink copies of a template made once with mkfs,
    or of a snapshot's disk."""

    def __init__(self, pool: DiskPool, size_bytes: int, uid: int) -> None:
        self.pool = pool
        self.size_bytes = size_bytes
        self.template = pool.templates / f"ext4-v{_TEMPLATE_VERSION}-{size_bytes}-{uid}.img"
        self._uid = uid
        self._lock = threading.Lock()
        """Creates run ``make`` in worker threads: the first of them makes the template."""

    def make(self, image: Path, source: Path | None = None) -> None:
        """A new filesystem at ``image``: empty, or a copy of the disk ``source`` (blocking: run it
        in a worker thread)."""
        self.pool.copy(source or self._ensure_template(), image)

    def _ensure_template(self) -> Path:
        if self.template.exists():
            return self.template
        with self._lock:
            if not self.template.exists():
                partial = self.template.with_suffix(".partial")
                partial.unlink(missing_ok=True)
                create_disk(partial, self.size_bytes, self._uid)
                os.replace(partial, self.template)  # a crash mid-mkfs never leaves a template
        return self.template


def copy_sparse(source: Path, target: Path) -> None:
    """Copies ``source`` to a new file ``target`` extent by extent, so its holes stay holes."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(src).st_size
            offset = 0
            while offset < size:
                try:
                    start = os.lseek(src, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # no data after offset
                        break
                    raise
                end = os.lseek(src, start, os.SEEK_HOLE)
                _copy_range(src, dst, start, end)
                offset = end
            os.ftruncate(dst, size)
        finally:
            os.close(dst)
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise SandboxError(f"Making a container disk failed: {os.strerror(exc.errno or 0)}") from exc
    finally:
        os.close(src)


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    """Bytes ``start``-``end`` of ``src`` to the same offsets of ``dst``: in the kernel where it can
    (``copy_file_range``), else (EXDEV: another kind of filesystem) through a buffer."""
    while start < end:
        try:
            copied = os.copy_file_range(src, dst, end - start, start, start)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            chunk = os.pread(src, min(end - start, 1 << 20), start)
            copied = os.pwrite(dst, chunk, start) if chunk else 0
        if copied == 0:
            raise SandboxError("Copying a container disk ended early.")
        start += copied


def mount_disk(image: Path, target: Path) -> None:
    """Mounts ``image`` (nosuid, nodev) at ``target`` through a loop device that detaches itself
    when the filesystem is unmounted, as ``mount -o loop`` does."""
    target.mkdir(exist_ok=True)
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        loop, device = attach_loop(backing)
    finally:
        os.close(backing)
    try:
        if _libc.mount(device.encode(), os.fsencode(target), b"ext4", _MS_NOSUID | _MS_NODEV, None) != 0:
            err = ctypes.get_errno()
            raise SandboxError(f"Mounting a container disk failed: {os.strerror(err)}")
    finally:
        os.close(loop)  # the mount holds the device now; unmounted, autoclear detaches it


def attach_loop(backing: int) -> tuple[int, str]:
    """A free loop device configured onto ``backing`` with autoclear: (its open fd, its path)."""
    config = _LOOP_CONFIG.pack(backing, 0, 0, 0, 0, 0, 0, 0, 0, 0, _LO_FLAGS_AUTOCLEAR,
                               b"", b"", b"", 0, 0, *([0] * 8))
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(_LOOP_ATTEMPTS):
            number = fcntl.ioctl(control, _LOOP_CTL_GET_FREE)
            device = f"/dev/loop{number}"
            loop = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(loop, _LOOP_CONFIGURE, config)
            except OSError as exc:
                os.close(loop)
                if exc.errno == errno.EBUSY:  # another attach took it first
                    continue
                raise SandboxError(f"Attaching a container disk failed: {os.strerror(exc.errno or 0)}") from exc
            return loop, device
    except OSError as exc:
        raise SandboxError(f"Attaching a container disk failed: {os.strerror(exc.errno or 0)}") from exc
    finally:
        os.close(control)
    raise SandboxError("Attaching a container disk failed: no free loop device.")


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    if result.returncode != 0:
        detail = result.stderr.strip() or str(result.returncode)
        for arg in argv[1:]:  # a client reads this message: the host's paths stay out of it
            if arg.startswith("/"):
                detail = detail.replace(arg, "<host path>")
        raise SandboxError(f"{argv[0]} failed for a container disk: {detail}")
