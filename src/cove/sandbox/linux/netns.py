"""Sockets inside a container's network namespace, owned by Cove.

A thread joins the container's network namespace (``setns`` changes only the calling thread) and
makes a socket there; a socket belongs to the namespace it was made in for its whole life, so it
then lives in the container's network while Cove uses it from the event loop. A listening one is how
a container with a network policy reaches the egress proxy (it has no route out at all, only a proxy
on its own loopback); a connecting one is how a preview URL reaches a port in the container: its
``127.0.0.1`` is the container's loopback, never the host's.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cove.errors import SandboxError

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"Joining a container's network failed: {os.strerror(err)}")


def _in_netns(init_pid: int, make: Callable[[], socket.socket]) -> socket.socket:
    """``make()`` run inside the network namespace of ``init_pid`` (blocking: on a thread of its own)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(own)
        raise SandboxError("The container is not running.") from None
    try:
        _setns(target)
        try:
            return make()
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _stream_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


async def _on_own_thread(init_pid: int, make: Callable[[], socket.socket]) -> socket.socket:
    """A thread of its own that is then discarded, so no pooled thread can ever be left inside a
    container's network."""
    with ThreadPoolExecutor(max_workers=1) as once:
        return await asyncio.get_running_loop().run_in_executor(once, _in_netns, init_pid, make)


async def listen_in(init_pid: int, port: int) -> socket.socket:
    """A listening socket on ``127.0.0.1:port`` inside the network namespace of ``init_pid``."""
    return await _on_own_thread(init_pid, functools.partial(_listen, port))


async def connect_in(init_pid: int, port: int) -> socket.socket:
    """A TCP connection to ``127.0.0.1:port`` inside the network namespace of ``init_pid`` (its
    loopback: the address cannot name anything outside the container)."""
    sock = await _on_own_thread(init_pid, _stream_socket)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock
