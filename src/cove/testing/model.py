"""A model that plays a script: each turn's text, reasoning and tool calls, in order, instantly."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from cove.upstream.base import (
    Finish,
    Model,
    ModelEvent,
    ModelRequest,
    NativeItem,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)


@dataclass
class Call:
    """A function call the model makes: hosted tools are called by their function names (``shell`` ...)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    """An object, or the raw text (to script arguments that are not valid JSON)."""
    call_id: str | None = None
    """Default ``call_<turn>_<n>``."""
    namespace: str | None = None
    """The namespace tool the function belongs to, as a Responses upstream says it."""


@dataclass
class Reply:
    """One model turn."""

    text: str = ""
    calls: list[Call] = field(default_factory=list)
    reasoning: str = ""
    native_items: list[dict[str, Any]] = field(default_factory=list)
    """Finished items as a Responses upstream sends them (``shell_call`` ...), for ``native_tools``."""
    finish: Literal["stop", "length", "tool_calls", "content_filter"] | None = None
    """Default ``tool_calls`` when the turn calls tools, else ``stop``."""
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=10, output_tokens=5))


Script = Reply | Callable[[ModelRequest], Reply]


class ScriptedModel(Model):
    def __init__(self, script: Iterable[Script] = (), *, native_tools: bool = False,
                 context_window: int = 8192, chunk: int = 4) -> None:
        self.script: deque[Script] = deque(script)
        self.native_tools = native_tools
        self.context_window = context_window
        self.chunk = chunk
        """Characters per text and argument delta, so streaming is exercised."""
        self.requests: list[ModelRequest] = []
        """Every request the loop sent, in order."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        self.requests.append(request)
        if not self.script:
            raise AssertionError(f"the model was called for turn {len(self.requests)}, which is not scripted")
        turn = self.script.popleft()
        reply = turn(request) if callable(turn) else turn
        for event in self._events(reply, len(self.requests)):
            yield event

    def _events(self, reply: Reply, number: int) -> Iterable[ModelEvent]:
        yield from (ReasoningDelta(piece) for piece in self._pieces(reply.reasoning))
        yield from (TextDelta(piece) for piece in self._pieces(reply.text))
        for index, call in enumerate(reply.calls):
            yield ToolCallStart(index, call.call_id or f"call_{number}_{index}", call.name, call.namespace)
            arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
            yield from (ToolCallDelta(index, piece) for piece in self._pieces(arguments))
        yield from (NativeItem(item) for item in reply.native_items)
        called = bool(reply.calls or reply.native_items)
        yield Finish(reply.finish or ("tool_calls" if called else "stop"), reply.usage)

    def _pieces(self, text: str) -> list[str]:
        return [text[i:i + self.chunk] for i in range(0, len(text), self.chunk)]
