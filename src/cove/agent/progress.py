"""What a running response is doing, and the point it could go on from after a restart.

The loop keeps a ``Progress`` up to date: its step (a model turn, hosted calls), the hosted calls in
flight and since when, and a checkpoint at each turn's end (and when a turn's hosted calls start):
the counters, the usage and which output items the finished turns put into the model's context. The
service writes it to the response's row (every ``COVE_HEARTBEAT_SECONDS`` for a heartbeat, and each
checkpoint at once), shows it at ``GET /v1/responses/{id}/progress``, logs calls that run too long,
and resumes a background response from its checkpoint after a restart (``agent/resume.py``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Call:
    """A hosted call in flight."""

    call_id: str
    tool: str
    started_at: float = field(default_factory=time.time)
    reported: bool = False
    """Logged as stuck already (once per call)."""


@dataclass
class Progress:
    started_at: float = field(default_factory=time.time)
    """When the response started running (wall clock: its time limit counts from here, across restarts)."""
    step: str = "starting"
    """``starting``, ``model`` (a model turn streams) or ``tools`` (hosted calls run)."""
    step_started_at: float = field(default_factory=time.time)
    turns: int = 0
    """Model turns finished (``COVE_MAX_TURNS`` / ``COVE_BACKGROUND_MAX_TURNS`` count them)."""
    calls: dict[str, Call] = field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None
    """The response as of its last finished turn, as JSON (``Turn.checkpoint`` makes it)."""
    on_checkpoint: Callable[[], Awaitable[None]] | None = None
    """Stores a new checkpoint (the service sets it for background responses)."""

    def enter(self, step: str) -> None:
        self.step, self.step_started_at = step, time.time()

    async def save(self, checkpoint: dict[str, Any]) -> None:
        self.checkpoint = checkpoint
        if self.on_checkpoint is not None:
            await self.on_checkpoint()

    def as_json(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "step": self.step, "step_started_at": self.step_started_at,
                "turns": self.turns, "calls": [asdict(call) for call in self.calls.values()],
                "checkpoint": self.checkpoint}

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Progress:
        """A progress as stored (none stored: one starting now)."""
        if not data:
            return cls()
        calls = {call["call_id"]: Call(**call) for call in data.get("calls") or []}
        return cls(started_at=data["started_at"], step=data["step"], step_started_at=data["step_started_at"],
                   turns=data["turns"], calls=calls, checkpoint=data.get("checkpoint"))
