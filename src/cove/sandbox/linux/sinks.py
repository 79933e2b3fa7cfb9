"""Pipes that background processes still hold after their command ended, and the server's budget for them.

``python3 -m http.server &`` inherits the command's stdout; closing Cove's end would make its next
write fail (EPIPE, or death by SIGPIPE), so a sink keeps the read end open and drains it until the
pipe closes or the container stops. Each kept pipe is a file descriptor of the server, so how many
are kept is capped per container, per project and in total (``PipeBudget``): past a cap the pipe is
closed as before, and the process sees EPIPE on its next write to it. A background process that
floods its pipe is drained only at a trickle (``_BURST``, then ``_RATE``): its writes block on the
full pipe, and it costs the server no CPU.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections import Counter
from dataclasses import dataclass, field

_READ_SIZE = 65536
_BURST = 1 << 20
"""Bytes a background pipe may deliver at once: log lines and a start-up banner flow freely."""
_RATE = 16 << 10
"""Bytes per second a background pipe is drained at past its burst: a flood (``yes &``) is read
64 KiB every four seconds and otherwise waits blocked in ``write``."""


def server_fd_limit() -> int:
    """The server's own cap on open files (its soft ``RLIMIT_NOFILE``)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class PipeBudget:
    """How many pipes background processes may keep open in the server, shared by every container.

    Without a total, a few containers full of ``sleep 1000 &`` would take every file descriptor the
    server has, and each tenant's next request would fail with EMFILE; without a per-project cap one
    tenant could take the whole total from the others.
    """

    per_container: int
    per_project: int
    total: int
    _by_project: Counter[str] = field(default_factory=Counter)

    @classmethod
    def derived(cls, per_container: int, per_project: int | None, total: int | None) -> PipeBudget:
        """Unset caps follow the server's fd limit: half of it in total (the other half is for client
        connections, each container's control and proxy sockets, running commands and the database),
        a quarter of that per project."""
        total = server_fd_limit() // 2 if total is None else total
        return cls(per_container, total // 4 if per_project is None else per_project, total)

    @property
    def open(self) -> int:
        return self._by_project.total()

    def take(self, project: str) -> bool:
        """Books one pipe for ``project``; False when a project or server cap is reached."""
        if self.open >= self.total or self._by_project[project] >= self.per_project:
            return False
        self._by_project[project] += 1
        return True

    def give(self, project: str) -> None:
        self._by_project[project] -= 1
        if not self._by_project[project]:
            del self._by_project[project]


@dataclass
class _Pipe:
    project: str
    credit: float
    stamp: float
    timer: asyncio.TimerHandle | None = None


class OutputSinks:
    """The pipes one container's background processes still hold, drained within ``budget``."""

    def __init__(self, budget: PipeBudget) -> None:
        self._budget = budget
        self._pipes: dict[int, _Pipe] = {}

    def adopt(self, fd: int, project: str) -> None:
        """Keeps draining ``fd`` if the caps allow, else closes it (the writer then gets EPIPE)."""
        if len(self._pipes) >= self._budget.per_container or not self._budget.take(project):
            os.close(fd)
            return
        loop = asyncio.get_running_loop()
        self._pipes[fd] = _Pipe(project, credit=_BURST, stamp=loop.time())
        loop.add_reader(fd, self._drain, fd)

    def _drain(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._release(fd)
            return
        loop = asyncio.get_running_loop()
        pipe = self._pipes[fd]
        now = loop.time()
        pipe.credit = min(_BURST, pipe.credit + (now - pipe.stamp) * _RATE) - len(data)
        pipe.stamp = now
        if pipe.credit < 0:  # flooding: stop reading until the rate has paid for what was read
            loop.remove_reader(fd)
            pipe.timer = loop.call_later(-pipe.credit / _RATE, self._resume, fd)

    def _resume(self, fd: int) -> None:
        pipe = self._pipes.get(fd)
        if pipe is not None:
            pipe.timer = None
            asyncio.get_running_loop().add_reader(fd, self._drain, fd)

    def _release(self, fd: int) -> None:
        pipe = self._pipes.pop(fd)
        if pipe.timer is not None:
            pipe.timer.cancel()
        asyncio.get_running_loop().remove_reader(fd)
        self._budget.give(pipe.project)
        os.close(fd)

    def close(self) -> None:
        for fd in list(self._pipes):
            self._release(fd)
