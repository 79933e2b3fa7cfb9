"""What a tool is to Cove, declared once in the tool's own module and registered in ``registry.py``.

    Tool          a ``type`` a request's ``tools`` may name: its schema, how a Chat Completions
    │             model sees it, whether it runs here or on the client, its item types
    └── HostedTool  runs here, in the response's container: its call item, stream events and output

A chat upstream only knows functions, so every tool is offered as a function with a clear
description; a hosted call becomes the tool's own item (``shell_call`` ...) in the response, and in
the next model turn's context it is a function call again. A Responses upstream that knows a tool
(``native_form``) gets it in its own shape and answers with its own call items.
"""

from __future__ import annotations

import abc
import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from cove.ids import new_id
from cove.sandbox.base import Screen
from cove.search.base import SearchEngine
from cove.tools.citations import Sources
from cove.tools.events import EventSink
from cove.tools.mcp_client import McpAccess
from cove.tools.workspace import Workspace

T = TypeVar("T")
Q = TypeVar("Q")


class ToolConfig(BaseModel):
    """One entry of a request's ``tools``. A tool's schema lists every field the ``openai`` SDK's param
    type declares for it (``sdk_type``), plus Cove's documented extensions; anything else is refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: str


class ToolArgumentsError(ValueError):
    """The model's arguments do not fit the tool; the message is shown to the model."""


@dataclass
class ToolRun:
    """What a hosted call runs with: the container, the response it streams into, and the web search
    engine the service picked for the project (None: none configured)."""

    workspace: Workspace
    events: EventSink
    screen: Screen | None = None
    """The display the request's computer tool asks for, if it has one (its size and environment)."""
    search: SearchEngine | None = None
    sources: Sources = field(default_factory=Sources)
    """The web sources the model has been shown, numbered for citations (``citations.py``)."""
    mcp: McpAccess | None = None
    """The response's connections to MCP servers (None: MCP is not available here)."""


class Tool(abc.ABC):
    types: ClassVar[tuple[str, ...]]
    """The request ``type`` names it answers to (the first is its own; later ones are aliases)."""
    config: ClassVar[type[ToolConfig]]
    """Its request schema."""
    sdk_type: ClassVar[type | None] = None
    """The ``openai`` SDK param type its schema mirrors (a test keeps the two in step); None: Cove's own."""
    extensions: ClassVar[tuple[str, ...]] = ()
    """Fields its schema adds to ``sdk_type`` (Cove's extensions, each documented in docs/tools.md)."""
    name: ClassVar[str]
    """The function a chat model calls (function tools: the name the request gives)."""
    call_type: ClassVar[str]
    """The item type of its calls in a response's ``output``."""
    output_type: ClassVar[str]
    """The item type of a call's result (the same as ``call_type`` when one item holds both)."""
    native_form: ClassVar[dict[str, Any] | None] = None
    """The tool as a Responses upstream runs it client-side (it answers with ``call_type`` items)."""
    owns_items: ClassVar[bool] = True
    other_items: ClassVar[tuple[str, ...]] = ()
    """More item types of its own that a model reads back through it (an MCP server's tool listing)."""
    """Whether ``call_type`` and ``output_type`` are its own (False: another tool's, which reads them back)."""

    def function_name(self, config: ToolConfig) -> str:
        return self.name

    def function_names(self, config: ToolConfig) -> list[str]:
        """Every function a chat model may call for it (most tools: one)."""
        return [self.function_name(config)]

    def model_tools(self, config: ToolConfig, native: bool) -> list[dict[str, Any]]:
        """What the upstream is offered: the tool's client-side form for a Responses upstream that knows
        it (``native``), else its function."""
        return [self.native_form if native and self.native_form is not None else self.function(config)]

    def call_name(self, config: ToolConfig, function: str) -> tuple[str, str | None]:
        """The ``name`` and ``namespace`` a call of ``function`` has in the response."""
        return function, None

    @abc.abstractmethod
    def function(self, config: ToolConfig) -> dict[str, Any]:
        """The function tool a Chat Completions model is offered."""

    def check(self, config: ToolConfig, param: str) -> None:  # noqa: B027 - most schemas say it all
        """Rules the schema cannot express; failures name ``param`` (``tools[i]``) plus the field."""

    def settle(self, config: ToolConfig, entries: list[tuple[Tool, ToolConfig]]) -> None:  # noqa: B027
        """Settles what depends on the request's other tools (the computer is hosted beside a hosted
        shell); most tools depend on nothing but their own entry."""

    def hosted(self, config: ToolConfig) -> bool:
        """Whether Cove runs its calls (else the response ends with the call, for the client to run)."""
        return False

    def choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        """A ``tool_choice`` naming this tool, as a chat model is told it (the function to call)."""
        return {"type": "function", "name": self.name}

    def client_item(self, call_id: str, arguments: str) -> dict[str, Any] | None:
        """A call the client runs in the tool's own item shape; None keeps the streamed ``function_call``."""
        return None

    @abc.abstractmethod
    def model_context(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """One of its items (``call_type`` or ``output_type``) as a chat model reads it back."""

    def as_native(self, item: dict[str, Any]) -> dict[str, Any]:
        """One of its items for a Responses upstream: where the tool ran is Cove's business, not the model's."""
        if item.get("type") == self.call_type and "environment" in item:
            return {**item, "environment": {"type": "local"}}
        return item


class HostedTool(Tool):
    container: ClassVar[bool] = True
    """Whether its calls run in the response's container (web search: no, it needs none)."""

    def hosted(self, config: ToolConfig) -> bool:
        return True

    def uses_container(self, config: ToolConfig) -> bool:
        """Whether the request's ``config`` of it needs the response's container (most tools: ``container``)."""
        return self.container

    def bind(self, config: ToolConfig, function: str) -> HostedTool:
        """The tool that runs a call of ``function`` with the request's ``config`` (most tools: itself;
        one with several functions or options its calls need returns an instance for them)."""
        return self

    def environment(self, config: ToolConfig) -> dict[str, Any] | None:
        """The container it asks for (``container_auto`` options or a ``container_reference``); None: any."""
        return None

    @abc.abstractmethod
    async def call_item(self, call_id: str, arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any]:
        """The response item for a call (raises ``ToolArgumentsError`` for arguments that do not fit)."""

    async def emit_call(self, call: dict[str, Any], run: ToolRun) -> None:
        """Puts the call in the response (added, then done)."""
        call["status"] = "completed"
        await run.events.item(call)

    @abc.abstractmethod
    async def refused(self, call_id: str, arguments: str, message: str,
                      workspace: Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
        """A call whose ``arguments`` (as the model wrote them) do not fit: this tool's own call item and a
        failed output of its own type saying ``message`` (the same item twice when one holds both).
        Clients such as the agents SDK resolve a call by its item type, so it never becomes a
        ``function_call``; the model reads the output's text next turn and can correct the call."""

    @abc.abstractmethod
    async def run(self, call: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        """Runs the call in the container and returns its output item (already emitted)."""

    def held(self, call: dict[str, Any]) -> bool:
        """Whether the call waits for the client's word before it runs (a computer call's pending
        safety checks): the response ends with it, and the client's answer releases it (``resume``)."""
        return False

    async def resume(self, call: dict[str, Any], answer: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        """Runs a held call the client's ``answer`` released; returns its output item (already emitted)."""
        raise NotImplementedError(f"{self.name} holds no calls")

    def function_arguments(self, call: dict[str, Any]) -> dict[str, Any]:
        """The call item's arguments as the model wrote them (for the next turn's context)."""
        return dict(call.get("action") or call.get("operation") or {})

    def native_arguments(self, item: dict[str, Any]) -> dict[str, Any]:
        """The arguments of a call a Responses upstream made in the tool's own shape (what ``call_item``
        takes); beyond the model's arguments they may carry what the upstream added (safety checks)."""
        return self.function_arguments(item)

    def output_text(self, output: dict[str, Any]) -> str:
        """The output item as the text a model reads back."""
        return json.dumps(output.get("output"), ensure_ascii=False)

    def model_context(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        context = []
        if item.get("type") == self.call_type:
            context.append({"type": "function_call", "id": item.get("id", new_id("fc")), "call_id": item["call_id"],
                            "name": self.name, "arguments": json.dumps(self.function_arguments(item))})
        if item.get("type") == self.output_type:  # one item may hold the call and its outputs
            context.append({"type": "function_call_output", "id": item.get("id", new_id("fco")),
                            "call_id": item["call_id"], "output": self.output_text(item)})
        return context


async def relay(work: Awaitable[T], queue: asyncio.Queue[Q], emit: Callable[[Q], Awaitable[None]]) -> T:
    """Awaits ``work`` while emitting what it puts on ``queue`` (its streamed output), in order. Cancelled
    (the response cancelled, or past its time limit), it cancels ``work``: a command stops with its call."""
    task = asyncio.ensure_future(work)
    getter: asyncio.Future[Q] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait([task, getter], return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                await emit(getter.result())
                continue
            while not queue.empty():
                await emit(queue.get_nowait())
            return task.result()
    finally:
        for pending in (task, getter):
            if pending is not None:
                pending.cancel()


def parse_arguments(arguments: str) -> dict[str, Any]:
    """A call's JSON arguments as an object; anything else as no arguments."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
