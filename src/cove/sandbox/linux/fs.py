"""File access inside a container's root from the host, immune to ``..`` and symlink escapes.

Every lookup goes through ``openat2(2)`` with ``RESOLVE_IN_ROOT``: the kernel resolves ``..`` and
symlinks (absolute ones too) as if the container root were ``/``, so nothing a hostile container
plants can make Cove open a host file. Final components are created or removed relative to an
already resolved parent directory with no-follow semantics.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import itertools
import os
import stat
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import PurePosixPath

from cove.errors import Conflict, InvalidRequest, NotFound
from cove.sandbox.base import WALK_VISITS, Entry, FileContent, Files, normalize_path

_SYS_OPENAT2 = 437
_RESOLVE_NO_XDEV = 0x01
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_RESOLVE = _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_XDEV
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _openat2(dirfd: int, path: str, flags: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE)
    fd = int(_libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


class ContainerFS:
    """Reads and writes files under ``root`` (the container's merged root) on behalf of the API."""

    def __init__(self, root: str, uid: int, gid: int) -> None:
        self.root = root
        self.uid = uid
        self.gid = gid

    @contextmanager
    def _rootfd(self) -> Iterator[int]:
        fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def _open(self, path: PurePosixPath, flags: int) -> Iterator[int]:
        with self._rootfd() as rootfd:
            try:
                fd = _openat2(rootfd, str(path), flags)
            except OSError as exc:
                raise _translate(exc, path) from exc
        try:
            yield fd
        finally:
            os.close(fd)

    def _makedirs(self, path: PurePosixPath) -> None:
        current = PurePosixPath("/")
        for part in path.parts[1:]:
            with self._open(current, os.O_PATH | os.O_DIRECTORY) as parent:
                try:
                    os.mkdir(part, 0o755, dir_fd=parent)
                    os.chown(part, self.uid, self.gid, dir_fd=parent, follow_symlinks=False)
                except FileExistsError:
                    pass
            current = current / part

    def write(self, path: str, chunks: Iterable[bytes], mode: int | None = None) -> int:
        """Atomically writes a file (temp name, then rename) with permission bits ``mode`` (default
        0644); returns its size."""
        target = normalize_path(path)
        if target == PurePosixPath("/"):
            raise InvalidRequest("Cannot write to '/'.", param="path")
        self._makedirs(target.parent)
        tmp_name = f".cove-upload-{os.urandom(6).hex()}"
        size = 0
        with self._open(target.parent, os.O_PATH | os.O_DIRECTORY) as parent:
            fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=parent)
            try:
                with os.fdopen(fd, "wb", closefd=False) as handle:
                    for chunk in chunks:
                        handle.write(chunk)
                        size += len(chunk)
                os.fchown(fd, self.uid, self.gid)
                if mode is not None:
                    os.fchmod(fd, stat.S_IMODE(mode))
            except BaseException:
                os.close(fd)
                os.unlink(tmp_name, dir_fd=parent)
                raise
            os.close(fd)
            try:
                os.rename(tmp_name, target.name, src_dir_fd=parent, dst_dir_fd=parent)
            except OSError as exc:
                os.unlink(tmp_name, dir_fd=parent)
                raise _translate(exc, target) from exc
        return size

    @contextmanager
    def open_read(self, path: str) -> Iterator[tuple[int, int]]:
        """Yields (fd, size) of a regular file."""
        with self._open(normalize_path(path), os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK) as fd:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidRequest(f"{path!r} is not a regular file.", param="path")
            yield fd, info.st_size

    def read(self, path: str, limit: int) -> FileContent:
        with self.open_read(path) as (fd, size):
            if size > limit:
                raise InvalidRequest(f"the file is too large ({size} bytes; the limit is {limit}).", param="path")
            mode = os.fstat(fd).st_mode
            chunks: list[bytes] = []
            total = 0
            while chunk := os.read(fd, 1 << 20):
                total += len(chunk)
                if total > limit:  # it grew while being read
                    raise InvalidRequest(f"the file is too large (over {limit} bytes).", param="path")
                chunks.append(chunk)
        return FileContent(b"".join(chunks), stat.S_IMODE(mode))

    def stat(self, path: str) -> Entry | None:
        target = normalize_path(path)
        try:
            with self._open(target, os.O_PATH) as fd:
                info = os.fstat(fd)
        except NotFound:
            return None
        return Entry(str(target), info.st_size, stat.S_ISDIR(info.st_mode), info.st_mtime)

    def delete(self, path: str) -> None:
        target = normalize_path(path)
        with self._open(target.parent, os.O_PATH | os.O_DIRECTORY) as parent:
            try:
                os.unlink(target.name, dir_fd=parent)
            except FileNotFoundError:
                pass
            except IsADirectoryError as exc:
                raise Conflict(f"{path!r} is a directory.", param="path") from exc

    def walk_files(self, path: str, limit: int = 10_000, visits: int = WALK_VISITS) -> list[Entry]:
        """Regular files under ``path`` (recursively, not following symlinks), at most ``limit``,
        breadth first among the first ``visits`` entries seen (so files near the top are found
        even when deep trees exhaust the budget)."""
        found: list[Entry] = []
        pending = deque([normalize_path(path)])
        while pending and len(found) < limit and visits > 0:
            current = pending.popleft()
            try:
                with self._open(current, os.O_RDONLY | os.O_DIRECTORY) as fd, os.scandir(fd) as entries:
                    for entry in itertools.islice(entries, visits):
                        visits -= 1
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(current / entry.name)
                        elif entry.is_file(follow_symlinks=False):
                            info = entry.stat(follow_symlinks=False)
                            found.append(Entry(str(current / entry.name), info.st_size, False, info.st_mtime))
            except (NotFound, InvalidRequest):
                continue
        return found[:limit]

    def list_dir(self, path: str, depth: int = 1, limit: int = 10_000, visits: int = WALK_VISITS) -> list[Entry]:
        """Entries of the directory ``path`` down to ``depth`` levels, each directory followed by its
        contents, by name (the order ``find`` would print them in, made deterministic). Symlinks are
        listed but never followed; unreadable subdirectories are skipped. Only the first ``visits``
        entries read are listed."""
        found: list[Entry] = []
        budget = visits

        def visit(directory: PurePosixPath, level: int, top: bool) -> None:
            nonlocal budget
            try:
                with self._open(directory, os.O_RDONLY | os.O_DIRECTORY) as fd, os.scandir(fd) as entries:
                    children = [(entry.name, entry.is_dir(follow_symlinks=False), entry.stat(follow_symlinks=False))
                                for entry in itertools.islice(entries, budget)]
            except (NotFound, InvalidRequest, PermissionError):
                if top:
                    raise
                return
            budget -= len(children)
            for name, is_dir, info in sorted(children, key=lambda child: child[0]):
                if len(found) >= limit:
                    return
                found.append(Entry(str(directory / name), info.st_size, is_dir, info.st_mtime))
                if is_dir and level < depth and budget > 0:
                    visit(directory / name, level + 1, False)

        visit(normalize_path(path), 1, True)
        return found


def _translate(exc: OSError, path: PurePosixPath) -> Exception:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(f"No such file in the container: {str(path)!r}.", param="path", code="file_not_found")
    if exc.errno in (errno.EXDEV, errno.ELOOP):
        return InvalidRequest(f"Path {str(path)!r} leaves the container's filesystem.", param="path")
    if exc.errno == errno.EISDIR:
        return Conflict(f"{str(path)!r} is a directory.", param="path")
    return exc


_WALKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cove-walk")
"""Walks and listings get threads of their own: many listings of huge trees then queue for these two
instead of holding every thread of the default pool, in which other tenants' file reads, context
fitting and container set-up run."""


class HostFiles(Files):
    """``Files`` over a ``ContainerFS``: each operation runs in a worker thread, so a slow disk or a
    huge directory never holds up the event loop."""

    def __init__(self, fs: ContainerFS) -> None:
        self.fs = fs

    async def stat(self, path: str) -> Entry | None:
        return await asyncio.to_thread(self.fs.stat, path)

    async def read(self, path: str, limit: int) -> FileContent:
        return await asyncio.to_thread(self.fs.read, path, limit)

    async def stream(self, path: str) -> tuple[int, AsyncIterator[bytes]]:
        def size() -> int:
            with self.fs.open_read(path) as (_fd, length):
                return length
        return await asyncio.to_thread(size), self._chunks(path)

    async def _chunks(self, path: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        with self.fs.open_read(path) as (fd, _size):
            while chunk := await asyncio.to_thread(os.read, fd, chunk_size):
                yield chunk

    async def write(self, path: str, chunks: Iterable[bytes], mode: int | None = None) -> int:
        return await asyncio.to_thread(self.fs.write, path, chunks, mode)

    async def delete(self, path: str) -> None:
        await asyncio.to_thread(self.fs.delete, path)

    async def list_dir(self, path: str, depth: int = 1, limit: int = 10_000,
                       visits: int = WALK_VISITS) -> list[Entry]:
        return await asyncio.get_running_loop().run_in_executor(
            _WALKERS, self.fs.list_dir, path, depth, limit, visits)

    async def walk_files(self, path: str, limit: int = 10_000, visits: int = WALK_VISITS) -> list[Entry]:
        return await asyncio.get_running_loop().run_in_executor(_WALKERS, self.fs.walk_files, path, limit, visits)
