"""Where container disks live: a filesystem that copies a file by reference (reflink).

Snapshots and forks copy a container's whole disk image, and they must cost the same whether the
container wrote nothing or a gigabyte. A reflink copy (``FICLONE``) shares every block with its
source and costs one entry per extent of the image (a few dozen for a disk with a gigabyte written
in big files), not one write per block; later writes on either side go to new blocks. Making a
container's empty disk from the template is a reflink too.

ext4, the usual host filesystem, has no reflinks; XFS and btrfs have. When the data dir is not on
one of them, Cove keeps its disks in an XFS filesystem of its own: a sparse file in the data dir,
formatted once and loop-mounted at start. It takes from the host only what is written into it,
and gives freed blocks back (``discard`` punches holes in the file). Its nominal size is that of
the filesystem the data dir is on, so it can never be the smaller of the two.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import shutil
import subprocess
from pathlib import Path

from cove.errors import SandboxError
from cove.sandbox.linux.disk import attach_loop, copy_sparse

log = logging.getLogger(__name__)
_libc = ctypes.CDLL(None, use_errno=True)

_FICLONE = 0x40049409
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MNT_DETACH = 2
_POOL_FILE = "disks.xfs"
_MKFS_XFS = ("mkfs.xfs", "-q", "-m", "reflink=1", "-l", "size=64m")
"""A 64 MiB log, not mkfs's default of up to 2 GiB, which it writes out in full."""
_MIN_POOL_BYTES = 16 << 30


def clone(source: Path, target: Path) -> None:
    """``target`` as a reflink copy of ``source``: O(extents), every block shared until written."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.ioctl(dst, _FICLONE, src)
        except OSError:
            os.close(dst)
            target.unlink(missing_ok=True)
            raise
        os.close(dst)
    finally:
        os.close(src)


def supports_reflinks(directory: Path) -> bool:
    """Whether files in ``directory`` can be cloned by reference (a clone is tried)."""
    probe, copy = directory / ".reflink-probe", directory / ".reflink-probe-copy"
    try:
        probe.write_bytes(b"cove")
        clone(probe, copy)
        return True
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS):
            return False
        raise
    finally:
        probe.unlink(missing_ok=True)
        copy.unlink(missing_ok=True)


def sync_filesystem(mountpoint: Path) -> None:
    """Writes out everything the filesystem at ``mountpoint`` holds in memory and commits its journal
    (syncfs(2)): its image is then a consistent ext4 (the journal replays on its next mount)."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            raise SandboxError(f"Syncing a container disk failed: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


class DiskPool:
    """The directory container disks and snapshots are kept in, on a filesystem with reflinks.

    ``mode`` ``auto`` mounts Cove's own XFS pool when the data dir's filesystem has no reflinks;
    ``off`` keeps disks in the data dir as they are, and copies them block by block (O(size))."""

    def __init__(self, data_dir: Path, mode: str) -> None:
        self.root = data_dir / "disks"
        self._pool_file = data_dir / _POOL_FILE
        self._mode = mode
        self._mounted_here = False
        self.reflinks = False

    @property
    def containers(self) -> Path:
        return self.root / "containers"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    def open(self) -> None:
        """Makes the pool ready (blocking: formats it the first time, mounts it if needed)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._mode == "auto":
            if os.path.ismount(self.root):
                self._mounted_here = self._pool_file.exists()  # left mounted by a Cove that crashed
            elif not supports_reflinks(self.root):
                self._mount_pool()
        self.root.chmod(0o700)  # the pool's own root, once mounted
        for directory in (self.containers, self.snapshots, self.templates):
            directory.mkdir(exist_ok=True, mode=0o700)
        self.reflinks = supports_reflinks(self.root)
        if not self.reflinks:
            log.warning("container disks are on a filesystem without reflinks: snapshots and forks copy "
                        "every written block (COVE_DISK_POOL=%s)", self._mode)

    def _mount_pool(self) -> None:
        if not self._pool_file.exists():
            self._format_pool()
        backing = os.open(self._pool_file, os.O_RDWR | os.O_CLOEXEC)
        try:
            loop, device = attach_loop(backing)
        finally:
            os.close(backing)
        try:
            # discard: blocks XFS frees are punched out of the pool file, back to the host.
            if _libc.mount(device.encode(), os.fsencode(self.root), b"xfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                           b"discard") != 0:
                raise SandboxError(f"Mounting the disk pool failed: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(loop)
        self._mounted_here = True
        log.info("container disks are in an XFS pool at %s", self.root)

    def _format_pool(self) -> None:
        if shutil.which("mkfs.xfs", path="/usr/sbin:/sbin:/usr/bin:/bin") is None:
            raise SandboxError("The disk pool needs mkfs.xfs (Debian package xfsprogs), or set COVE_DISK_POOL=off.")
        host = os.statvfs(self._pool_file.parent)
        size = max(host.f_blocks * host.f_frsize, _MIN_POOL_BYTES)
        partial = self._pool_file.with_suffix(".partial")
        with partial.open("wb") as handle:
            handle.truncate(size)
        result = subprocess.run([*_MKFS_XFS, str(partial)], capture_output=True, text=True, check=False,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise SandboxError(f"Formatting the disk pool failed: {result.stderr.strip() or result.returncode}")
        os.replace(partial, self._pool_file)  # a crash mid-mkfs never leaves a half-made pool

    def close(self) -> None:
        """Unmounts a pool this process mounted (lazily: a container disk still mounted keeps it)."""
        if self._mounted_here:
            _libc.umount2(os.fsencode(self.root), _MNT_DETACH)
            self._mounted_here = False

    def copy(self, source: Path, target: Path) -> None:
        """``target`` as a copy of the disk image ``source``: a reflink where the pool has them."""
        try:
            if self.reflinks:
                try:
                    clone(source, target)
                    return
                except OSError as exc:  # a disk made before the pool, on the data dir's filesystem
                    if exc.errno != errno.EXDEV:
                        raise
            copy_sparse(source, target)
        except OSError as exc:
            raise SandboxError(f"Copying a container disk failed: {os.strerror(exc.errno or 0)}") from exc
