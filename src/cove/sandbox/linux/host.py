"""What every container on this machine shares, handed by the engine to each container it makes.

A container needs to know where its directory lives, which init and runc to start, the limits every
container gets and the egress proxy that serves its network; it needs nothing else of the engine,
so it never imports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cove.egress.proxy import EgressProxy
from cove.sandbox.linux.disk import DiskMaker
from cove.sandbox.linux.gate import Gate
from cove.sandbox.linux.launch import Launcher
from cove.sandbox.linux.runc import Runc
from cove.sandbox.linux.sinks import PipeBudget

T = TypeVar("T")


@dataclass(frozen=True)
class Host:
    containers_dir: Path
    """One directory per container (a pooled one's API id is a symlink to its directory)."""
    libexec: Path
    """Bind-mounted read-only at ``/.cove`` in every container: the init and a static busybox (its
    view in the gate, where runc can reach it; the directory itself with the launcher)."""
    gate: Gate | None
    """Where runc finds a container's directory while it starts the container (``gate.py``); None
    with the launcher, which opens host paths as host root."""
    init_binary: Path
    display_agent: str
    """The display agent's path inside containers (``display.py``), beside the init under ``/.cove``."""
    runc: Runc | Launcher
    """What starts containers (``COVE_RUNTIME``): runc, or cove-launch (``launch.py``)."""
    uid_base: int
    """Host uid of container root (container uids 0-65535 map onto ``uid_base + 0-65535``)."""
    pids_limit: int
    nofile_limit: int
    disks: DiskMaker
    """Makes each container's writable filesystem (its size is the disk quota)."""
    egress: EgressProxy
    """Serves the network of containers with an allowlist, on a socket inside each one's namespace."""
    egress_ca_pem: bytes
    """Cove's egress CA, trusted only by containers with domain secrets."""
    start_slots: asyncio.Semaphore
    """Bounds concurrent runc starts, so a burst of creates cannot starve the machine."""
    start_threads: ThreadPoolExecutor
    """Where container starts block (disk, mounts, runc): threads of their own, as many as start
    slots, so a burst's starts never queue behind the server's other blocking work (file reads,
    deletes) in the default executor, nor that work behind them."""
    pipes: PipeBudget
    """How many pipes background processes may keep open in the server (per container, project, in all)."""

    async def blocking_start(self, function: Callable[[], T]) -> T:
        """``function()`` in one of the start threads."""
        return await asyncio.get_running_loop().run_in_executor(self.start_threads, function)
