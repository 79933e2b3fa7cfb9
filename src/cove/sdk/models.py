"""The SDK's return values, shaped and named as E2B's SDK has them where Cove has the same thing."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class CommandResult:
    """A finished command: all it printed (never cut) and its exit code."""

    stdout: str
    stderr: str
    exit_code: int


class FileType(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"


@dataclass(frozen=True)
class EntryInfo:
    """One entry of ``files.list``."""

    name: str
    path: str
    type: FileType
    size: int
    modified_time: float


@dataclass(frozen=True)
class WriteInfo:
    """A file ``files.write`` made: its container file id (``/v1/containers/{id}/files``), path, size."""

    id: str
    path: str
    size: int

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class FilesystemEventType(StrEnum):
    CREATE = "create"
    WRITE = "write"
    REMOVE = "remove"


@dataclass(frozen=True)
class FilesystemEvent:
    """A change ``files.watch_dir`` saw: ``name`` is the path relative to the watched directory."""

    name: str
    type: FilesystemEventType


@dataclass
class Logs:
    """What a cell printed, in pieces as it printed them (E2B's ``Logs``)."""

    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    """One result of a cell: the value of its last expression (``text``, ``is_main_result``) or a
    matplotlib figure (``png``, base64, as E2B gives it)."""

    text: str | None = None
    png: str | None = None
    is_main_result: bool = False

    def formats(self) -> list[str]:
        return [name for name in ("text", "png") if getattr(self, name) is not None]


@dataclass(frozen=True)
class ExecutionError:
    """An exception a cell raised: its class name, message and the formatted traceback."""

    name: str
    value: str
    traceback: str


@dataclass
class Execution:
    """What ``run_code`` did (E2B's ``Execution``)."""

    results: list[Result] = field(default_factory=list)
    logs: Logs = field(default_factory=Logs)
    error: ExecutionError | None = None

    @property
    def text(self) -> str | None:
        """The main result's text: the value of the cell's last expression, as a notebook shows it."""
        return next((result.text for result in self.results if result.is_main_result), None)


@dataclass(frozen=True)
class PtySize:
    rows: int = 24
    cols: int = 80


@dataclass(frozen=True)
class SandboxInfo:
    """The container object of ``/v1/containers`` (``raw`` keeps every field)."""

    sandbox_id: str
    name: str
    status: str
    image: str | None
    created_at: int
    raw: dict[str, Any]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> SandboxInfo:
        return cls(raw["id"], raw.get("name", ""), raw.get("status", ""), raw.get("image"),
                   int(raw.get("created_at") or 0), raw)


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot of a sandbox's files (``container.snapshot``); ``Sandbox.create(snapshot_id=...)`` starts one."""

    snapshot_id: str
    sandbox_id: str
    name: str | None
    size: int
    image: str | None

    @classmethod
    def of(cls, raw: dict[str, Any]) -> SnapshotInfo:
        return cls(raw["id"], raw.get("container_id", ""), raw.get("name"), int(raw.get("bytes") or 0),
                   raw.get("image"))
