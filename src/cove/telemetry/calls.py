"""Model turns and hosted tool calls: one context manager each times the call, counts it and, when
tracing, puts a span around it (OpenTelemetry's GenAI names: ``chat <model>``, ``execute_tool <type>``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from cove.telemetry import metrics
from cove.telemetry.tracing import span

_STATUSES = frozenset({"completed", "incomplete", "failed", "in_progress", "searching", "interpreting"})
"""Item statuses a tool's output may carry: any other value (a tool's own) is not made a label."""


class Usage(Protocol):
    """A turn's token counts (``cove.upstream.base.Usage``, which this package may not import)."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int


@dataclass
class ModelCall:
    """What the caller tells of a turn as it ends: its tokens (``finished``)."""

    model: str
    tokens: dict[str, int] | None = None
    span: Any = None

    def finished(self, usage: Usage) -> None:
        self.tokens = {"input": usage.input_tokens, "output": usage.output_tokens, "cached": usage.cached_tokens,
                       "reasoning": usage.reasoning_tokens}
        if self.span is not None:
            self.span.set_attributes({"gen_ai.usage.input_tokens": usage.input_tokens,
                                      "gen_ai.usage.output_tokens": usage.output_tokens})


@dataclass
class ToolCall:
    """A hosted call in flight: its output item, when it ends, gives the outcome (``ended``)."""

    output: dict[str, Any] | None = None

    def ended(self, output: dict[str, Any]) -> dict[str, Any]:
        self.output = output
        return output


@contextmanager
def model_call(model: str, upstream_model: str) -> Iterator[ModelCall]:
    """One model turn of ``model`` (the name the request gave), served as ``upstream_model``."""
    call = ModelCall(model)
    started = time.perf_counter()
    outcome = "error"
    with span(f"chat {upstream_model}", {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                                          "gen_ai.response.model": upstream_model}) as current:
        call.span = current
        try:
            yield call
            outcome = "ok"
        except asyncio.CancelledError:  # the response was cancelled or timed out: not the upstream's failure
            outcome = "cancelled"
            raise
        finally:
            label = metrics.admit_model(model) if outcome == "ok" else metrics.model_label(model)
            metrics.UPSTREAM_SECONDS.labels(label, outcome).observe(time.perf_counter() - started)
            for kind, count in (call.tokens or {}).items():
                if count:
                    metrics.UPSTREAM_TOKENS.labels(label, kind).inc(count)


@contextmanager
def tool_call(tool_type: str, call: dict[str, Any]) -> Iterator[ToolCall]:
    """One hosted call of a tool of ``tool_type``; the output item the caller hands to ``ended`` gives
    the outcome, its ``status`` (``completed`` when it has none; ``error`` when the call raised)."""
    running = ToolCall()
    started = time.perf_counter()
    outcome = "error"
    with span(f"execute_tool {tool_type}", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.type": tool_type,
                                             "gen_ai.tool.call.id": str(call.get("call_id") or call.get("id"))}):
        try:
            yield running
            status = running.output.get("status") if running.output is not None else None
            outcome = status if isinstance(status, str) and status in _STATUSES else "completed"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            metrics.TOOL_CALLS.labels(tool_type, outcome).inc()
            metrics.TOOL_SECONDS.labels(tool_type).observe(time.perf_counter() - started)

