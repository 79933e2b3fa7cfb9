"""The sandbox protocol: what the rest of Cove may ask of a container, and nothing about how.

``SandboxEngine`` owns where containers live (their layers, runtime state and limits); a
``Sandbox`` is one container: run commands, reach its files, stop it. The Linux engine in
``sandbox/linux`` is the implementation Cove ships.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from cove.egress.policy import EgressPolicy
from cove.sandbox.fs import ContainerFS

MEMORY_TIERS = {"1g": 1 << 30, "4g": 4 << 30, "16g": 16 << 30, "64g": 64 << 30}
"""Memory limits as OpenAI names them."""


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


OutputCallback = Callable[[Literal["stdout", "stderr"], str], None]
"""Receives output text as the command produces it."""


@dataclass(frozen=True)
class Limits:
    memory: str = "1g"
    cpus: float = 1.0
    network: EgressPolicy | None = None
    """None: loopback only. A policy: an egress proxy on the container's loopback, allowing its domains."""


class Sandbox(abc.ABC):
    """One container. Safe to use from many tasks at once."""

    id: str

    @abc.abstractmethod
    async def exec(self, command: Command, on_output: OutputCallback | None = None) -> CommandOutput:
        """Runs one command, starting the container first if it is not running."""

    @abc.abstractmethod
    async def files(self) -> ContainerFS:
        """Host-side access to the container's files (works while it is stopped too)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Ends every process; files stay, and the next use starts it again."""

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """Whether its processes are alive now."""


class SandboxEngine(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None:
        """Prepares the engine and cleans what a crash left behind."""

    @abc.abstractmethod
    async def create(self, container_id: str, image: str, limits: Limits) -> Sandbox:
        """Makes a new container (its writable layer and runtime config) and starts it."""

    @abc.abstractmethod
    async def get(self, container_id: str, limits: Limits) -> Sandbox:
        """The handle of an existing container (with the image it was created from), from disk if needed."""

    @abc.abstractmethod
    async def destroy(self, container_id: str) -> None:
        """Stops a container and frees its processes, mounts, cgroups and disk."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stops every container (files are kept)."""
