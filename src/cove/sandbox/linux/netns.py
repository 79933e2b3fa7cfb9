"""A listening socket inside a container's network namespace, owned by Cove.

A thread joins the container's network namespace (``setns`` changes only the calling thread),
binds ``127.0.0.1:port`` there, and the socket then lives in the container's network while Cove
serves it. This is how a container with a network policy reaches the egress proxy: it has no
route out at all, only a proxy on its own loopback.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from cove.errors import SandboxError

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"Joining a container's network failed: {os.strerror(err)}")


def _listen(init_pid: int, port: int) -> socket.socket:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
            sock.setblocking(False)
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)
    return sock


async def listen_in(init_pid: int, port: int) -> socket.socket:
    """A listening socket on ``127.0.0.1:port`` inside the network namespace of ``init_pid``.

    It runs on a thread of its own that is then discarded, so no pooled thread can ever be left
    inside a container's network.
    """
    with ThreadPoolExecutor(max_workers=1) as once:
        return await asyncio.get_running_loop().run_in_executor(once, _listen, init_pid, port)
