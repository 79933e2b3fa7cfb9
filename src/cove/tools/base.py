"""The hosted-tool protocol: how a tool the server runs looks to the model, to the client and to the loop.

A chat upstream only knows functions, so each hosted tool is offered as a function with a clear
description; its call becomes the tool's own item (``shell_call`` ...) in the response, and in the
next model turn's context it is a function call again.
"""

from __future__ import annotations

import abc
import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from cove.agent.builder import ResponseBuilder
from cove.ids import new_id
from cove.tools.workspace import Workspace

T = TypeVar("T")
Q = TypeVar("Q")


async def relay(work: Awaitable[T], queue: asyncio.Queue[Q], emit: Callable[[Q], Awaitable[None]]) -> T:
    """Awaits ``work`` while emitting what it puts on ``queue`` (its streamed output), in order."""
    task = asyncio.ensure_future(work)
    while True:
        getter = asyncio.ensure_future(queue.get())
        await asyncio.wait([task, getter], return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            await emit(getter.result())
            continue
        getter.cancel()
        while not queue.empty():
            await emit(queue.get_nowait())
        return task.result()


class ToolArgumentsError(ValueError):
    """The model's arguments do not fit the tool; the message is shown to the model."""


@dataclass
class ToolRun:
    """What a tool call runs with: the container and the response being built."""

    workspace: Workspace
    builder: ResponseBuilder


class HostedTool(abc.ABC):
    tool_type: str
    """The ``type`` in the request's ``tools``."""
    function_name: str
    """The function a chat upstream sees."""
    call_type: str
    output_type: str
    native_form: ClassVar[dict[str, Any] | None] = None
    """The tool as a Responses upstream runs it client-side (it returns the calls to Cove), if any."""

    def as_native(self, item: dict[str, Any]) -> dict[str, Any]:
        """An item for a Responses upstream: where the tool ran is Cove's business, not the model's."""
        if item.get("type") == self.call_type and "environment" in item:
            return {**item, "environment": {"type": "local"}}
        return item

    @abc.abstractmethod
    def function(self, config: dict[str, Any]) -> dict[str, Any]:
        """The function tool definition offered to upstreams that cannot run this tool natively."""

    @abc.abstractmethod
    async def call_item(self, call_id: str, arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any]:
        """The response item for a call (raises ``ToolArgumentsError`` for arguments that do not fit)."""

    async def emit_call(self, call: dict[str, Any], run: ToolRun) -> None:
        """Puts the call in the response (added, then done)."""
        call["status"] = "completed"
        await run.builder.item(call)

    @abc.abstractmethod
    async def run(self, call: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        """Runs the call in the container and returns its output item (already emitted)."""

    def function_arguments(self, call: dict[str, Any]) -> dict[str, Any]:
        """The call item's arguments as the model wrote them (for the next turn's context)."""
        return dict(call.get("action") or call.get("operation") or {})

    def output_text(self, output: dict[str, Any]) -> str:
        """The output item as the text a model reads back."""
        return json.dumps(output.get("output"), ensure_ascii=False)

    def as_function_call(self, call: dict[str, Any]) -> dict[str, Any]:
        return {"type": "function_call", "id": call.get("id", new_id("fc")), "call_id": call["call_id"],
                "name": self.function_name, "arguments": json.dumps(self.function_arguments(call))}

    def as_function_output(self, output: dict[str, Any]) -> dict[str, Any]:
        return {"type": "function_call_output", "id": output.get("id", new_id("fco")), "call_id": output["call_id"],
                "output": self.output_text(output)}
