"""The sandbox protocol: what the rest of Cove may ask of a container, and nothing about how.

``SandboxEngine`` owns where containers live (their layers, runtime state and limits); a
``Sandbox`` is one container: run commands, reach its files, stop it; ``Files`` are its files as
the host reaches them. The Linux engine in ``sandbox/linux`` is the implementation Cove ships;
``cove.testing`` has an in-memory one for tests of the layers above.
"""

from __future__ import annotations

import abc
import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from cove.egress.policy import EgressPolicy
from cove.egress.proxy import Decision
from cove.errors import InvalidRequest, SandboxError

EgressCallback = Callable[[Decision, str], None]
"""Receives each of an engine's egress proxy decisions with the project of the container it was made for
(the service writes it to that container's audit trail)."""

MEMORY_TIERS = {"1g": 1 << 30, "4g": 4 << 30, "16g": 16 << 30, "64g": 64 << 30}
"""Memory limits as OpenAI names them."""


def memory_bytes(tier: str) -> int:
    try:
        return MEMORY_TIERS[tier]
    except KeyError:
        raise InvalidRequest(f"Invalid memory_limit {tier!r}: expected one of {', '.join(MEMORY_TIERS)}.",
                             param="memory_limit") from None


class ExitOutcome(BaseModel):
    type: Literal["exit"] = "exit"
    exit_code: int


class TimeoutOutcome(BaseModel):
    type: Literal["timeout"] = "timeout"


Outcome = Annotated[ExitOutcome | TimeoutOutcome, Field(discriminator="type")]


class CommandOutput(BaseModel):
    """One command's result, in the shape of the shell tool's ``shell_call_output`` entries."""

    stdout: str
    stderr: str
    outcome: Outcome


@dataclass(frozen=True)
class Command:
    command: str
    """A shell command line, run with the image's shell (bash, else sh, else Cove's busybox)."""
    timeout_ms: int
    """Wall-clock limit; on expiry the command's whole process tree is killed."""
    max_output_length: int
    """Characters kept of stdout and stderr together; the middle of longer output is cut."""
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None


OutputCallback = Callable[[Literal["stdout", "stderr"], str], "asyncio.Future[None] | None"]
"""Receives all output text as the command produces it (the command's result keeps only its capped
part). It may return a future: no more output is read until the future is done, and the command
blocks on its full pipe meanwhile, so a slow consumer holds back a fast command."""


@dataclass(frozen=True)
class Limits:
    memory: str = "1g"
    cpus: float = 1.0
    network: EgressPolicy | None = None
    """None: loopback only. A policy: an egress proxy on the container's loopback, allowing its domains."""
    project: str = field(default="", compare=False)
    """Whose share of the server's budgets (background pipes) the container uses. A label, not a
    limit: it takes no part in comparisons, so a warm pooled container serves any project."""


NAME_MAX = 255
"""Bytes in one path component (Linux): a longer one fails in the kernel, so it is refused first."""


def normalize_path(path: str) -> PurePosixPath:
    """An absolute, lexically clean container path; refuses what no sane client sends (and what
    the kernel would refuse later: a NUL, lone surrogates that no file name can encode, or a
    component longer than ``NAME_MAX`` bytes)."""
    if not path or "\x00" in path or len(path) > 4096 or not _encodable(path):
        raise InvalidRequest("Invalid path.", param="path")
    clean = PurePosixPath("/", path)
    if any(part in ("..", ".") for part in clean.parts):
        raise InvalidRequest(f"Path {path!r} may not contain '..' or '.' components.", param="path")
    if any(len(part.encode()) > NAME_MAX for part in clean.parts):
        raise InvalidRequest(f"Path {path!r} has a name longer than {NAME_MAX} bytes.", param="path")
    return clean


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    is_dir: bool
    mtime: float


@dataclass(frozen=True)
class FileContent:
    data: bytes
    mode: int
    """Permission bits, so that a rewrite can keep them (an executable stays executable)."""


SKILLS_DIR = "/skills"
"""Where a container's skills are, each in ``/skills/<name>/``: read-only to everything in the container."""


@dataclass(frozen=True)
class SkillFile:
    """One file of a skill: its path inside the skill's folder (relative, already checked)."""

    path: str
    data: bytes
    executable: bool = False


WALK_VISITS = 50_000
"""Entries (files and directories alike) one listing or walk looks at before it stops and returns what
it found. A walk costs per entry, above all per directory opened (about 18 us each here: a tree of
300,000 empty directories took 5.4 s to walk), and it contains no files for a file limit to stop it.
50,000 keeps one walk under a second of a worker thread while leaving room for five times the
10,000 files a listing returns."""


class Files(abc.ABC):
    """A container's files as the host reaches them, whether it runs or not.

    Paths are container paths, resolved as if the container's root were ``/``: nothing planted
    inside (``..``, symlinks) leads outside. Errors are Cove's: ``NotFound`` for a missing path,
    ``InvalidRequest`` for a path that cannot be used, ``Conflict`` for a directory where a file
    is expected.
    """

    @abc.abstractmethod
    async def stat(self, path: str) -> Entry | None:
        """The entry at ``path`` (symlinks followed inside the container), or None."""

    @abc.abstractmethod
    async def read(self, path: str, limit: int) -> FileContent:
        """A regular file whole; one larger than ``limit`` bytes is refused (``InvalidRequest``)."""

    @abc.abstractmethod
    async def stream(self, path: str) -> tuple[int, AsyncIterator[bytes]]:
        """A regular file's size and its bytes, opened now (so a missing file fails here)."""

    @abc.abstractmethod
    async def write(self, path: str, chunks: Iterable[bytes], mode: int | None = None) -> int:
        """Atomically replaces ``path`` (parents made, owned by container root); returns its size."""

    @abc.abstractmethod
    async def delete(self, path: str) -> None:
        """Removes a file; a missing one is fine, a directory is a ``Conflict``."""

    @abc.abstractmethod
    async def list_dir(self, path: str, depth: int = 1, limit: int = 10_000,
                       visits: int = WALK_VISITS) -> list[Entry]:
        """Entries under the directory ``path`` down to ``depth`` levels, each directory followed by its
        contents, by name; symlinks listed, never followed. At most ``limit`` entries, and only among
        the first ``visits`` entries looked at: past that the listing is cut short, never an error."""

    @abc.abstractmethod
    async def walk_files(self, path: str, limit: int = 10_000, visits: int = WALK_VISITS) -> list[Entry]:
        """Regular files under ``path`` at any depth (none if it is missing), at most ``limit``,
        shallowest first, among the first ``visits`` entries looked at (files and directories)."""


DISPLAY_ENVIRONMENTS = ("browser", "linux", "ubuntu", "windows", "mac")
"""OpenAI's computer ``environment`` values. Cove's displays are Linux: ``browser`` opens Chromium full
screen, the others show a plain desktop (a model told ``windows`` still sees Linux)."""


@dataclass(frozen=True)
class Screen:
    """The display a computer tool or ``POST /v1/containers/{id}/computer`` asks for on first use."""

    width: int = 1024
    height: int = 768
    environment: str = "browser"


class Channel(abc.ABC):
    """A byte stream to a program in the container (the live view's RFB connection)."""

    @abc.abstractmethod
    async def read(self) -> bytes:
        """The next bytes the program wrote; ``b""`` once it has closed its end."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Sends bytes to the program (waits while its end is full)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Ends the program and frees the stream."""


class Display(abc.ABC):
    """A container's screen: an X server started on first use, with a window manager and, for
    ``environment: "browser"``, Chromium full screen. Actions are OpenAI's computer actions as the
    ``openai`` SDK types them (``{"type": "click", "x", "y", "button"}``, ``double_click``, ``drag``
    with ``path``, ``keypress`` with ``keys``, ``move``, ``scroll``, ``type``, ``wait``, ``screenshot``);
    one that does not fit is an ``InvalidRequest`` naming ``actions[i]``. Safe to use from many tasks
    at once: actions on one display run one batch at a time."""

    screen: Screen
    """What it was started with (a later request for another size gets this one)."""

    @abc.abstractmethod
    async def act(self, actions: list[dict[str, Any]]) -> bytes:
        """Performs the actions in order and returns a PNG of the screen, at display size, taken once
        it stopped changing (or after a bound)."""

    @abc.abstractmethod
    async def screenshot(self) -> bytes:
        """A PNG of the screen now, without waiting for it to settle."""

    @abc.abstractmethod
    async def vnc(self) -> Channel:
        """A new RFB (VNC) connection to the screen, for a person to watch or take over."""


TERMINAL_MAX_SIDE = 1000
"""Columns or rows a terminal may have (the kernel takes up to 65535; nothing real needs more)."""


@dataclass(frozen=True)
class TerminalRequest:
    """What a terminal runs: ``command`` with the image's shell (``-c``), or None for an interactive
    shell, on a terminal ``cols`` x ``rows``."""

    command: str | None = None
    cols: int = 80
    rows: int = 24
    env: dict[str, str] = field(default_factory=dict)


class Terminal(abc.ABC):
    """A program on a pseudo-terminal in the container: raw bytes both ways, a size, an exit code."""

    @abc.abstractmethod
    async def read(self) -> bytes:
        """The next bytes the terminal shows; ``b""`` once no process holds it any more."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Types ``data`` (waits while the terminal's input is full)."""

    @abc.abstractmethod
    def resize(self, cols: int, rows: int) -> None:
        """Sets the size; the program gets SIGWINCH."""

    @abc.abstractmethod
    async def wait(self) -> int:
        """The program's exit code (128 + N for a death by signal N)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Ends the program (and everything it started on the terminal) and frees the terminal."""


class Sandbox(abc.ABC):
    """One container. Safe to use from many tasks at once."""

    id: str

    @abc.abstractmethod
    async def exec(self, command: Command, on_output: OutputCallback | None = None) -> CommandOutput:
        """Runs one command, starting the container first if it is not running."""

    @abc.abstractmethod
    async def files(self) -> Files:
        """The container's files (reachable while it is stopped too)."""

    async def connect_port(self, port: int) -> socket.socket:
        """A TCP connection to ``127.0.0.1:port`` as the container itself sees it (its own network:
        never the host's), starting the container first if it is not running; nothing listening is a
        ``ConnectionRefusedError``. Engines that cannot reach into containers refuse."""
        raise InvalidRequest("This server cannot reach ports in containers.", code="ports_not_supported")

    async def terminal(self, request: TerminalRequest) -> Terminal:
        """Starts a program on a new pseudo-terminal, starting the container first if it is not
        running. Engines without terminals refuse (``InvalidRequest``)."""
        raise InvalidRequest("This server's containers have no terminals.", code="terminal_not_supported")

    async def channel(self, argv: list[str]) -> Channel:
        """A long-lived program in the container (``argv``, with the environment commands get) talking over
        its stdin and stdout, as an MCP server over stdio does; closing the channel ends it."""
        raise SandboxError("This container cannot run long-lived programs.")

    async def display(self, screen: Screen | None = None) -> Display:
        """The container's display, started with ``screen`` if it is not running yet (None: the
        defaults). Containers whose image has no display refuse (``InvalidRequest``)."""
        raise InvalidRequest("This container's image has no display: create it from a desktop image.",
                             code="no_display")

    @property
    def has_display(self) -> bool:
        """Whether ``display()`` starts a display rather than refusing (known without starting one, so a
        request can be refused before anything runs)."""
        return False

    @abc.abstractmethod
    async def stop(self) -> None:
        """Ends every process; files stay, and the next use starts it again."""

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """Whether its processes are alive now."""

    async def pause(self) -> None:
        """Freezes every process where it is (no CPU; memory, files and sockets kept) until ``resume``;
        a stopped container has nothing to freeze. Engines that cannot freeze refuse."""
        raise InvalidRequest("This server's containers cannot be paused.", code="pause_not_supported")

    async def resume(self) -> None:
        """Thaws what ``pause`` froze; a container that is not paused is left as it is."""
        if self.paused:
            raise InvalidRequest("This server's containers cannot be resumed.", code="pause_not_supported")

    @property
    def paused(self) -> bool:
        """Whether its processes are frozen now (commands would wait: resume first)."""
        return False

    async def add_skill(self, name: str, files: Iterable[SkillFile]) -> str:
        """Puts a skill's files at ``SKILLS_DIR/<name>/``, read-only to the container, in place of any
        skill of that name; returns that path. Engines that cannot mount skills refuse."""
        raise InvalidRequest("This server's containers cannot carry skills.", code="skills_not_supported")


class SandboxEngine(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None:
        """Prepares the engine and cleans what a crash left behind."""

    @abc.abstractmethod
    async def create(self, container_id: str, image: str, limits: Limits, *,
                     snapshot_id: str | None = None) -> Sandbox:
        """Makes a new container (its writable layer and runtime config) and starts it; with
        ``snapshot_id``, on a copy of that snapshot's files and on its image (``image`` is unused)."""

    @abc.abstractmethod
    async def snapshot(self, container_id: str, snapshot_id: str) -> int:
        """Keeps the container's files as they are now under ``snapshot_id`` (O(1) in their size
        where the disks allow); returns the bytes the snapshot holds."""

    @abc.abstractmethod
    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Frees a snapshot (nothing happens for one that does not exist)."""

    @abc.abstractmethod
    async def get(self, container_id: str, limits: Limits) -> Sandbox:
        """The handle of an existing container (with the image it was created from), from disk if needed."""

    @abc.abstractmethod
    async def stop(self, container_id: str) -> None:
        """Ends the container's processes and releases its mounts; its files stay, and ``get`` then
        ``exec`` starts it again."""

    @abc.abstractmethod
    async def destroy(self, container_id: str) -> None:
        """Stops a container and frees its processes, mounts, cgroups and disk."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stops every container (files are kept)."""

    def watch_egress(self, callback: EgressCallback) -> None:
        """Sends the engine's egress proxy decisions to ``callback`` from now on. An engine without a
        proxy (the in-memory one) makes none."""
        return
