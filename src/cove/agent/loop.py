"""The agent loop: model turn, hosted tools, model turn again ... until the model answers.

Hosted tools run here, several calls of one turn at once, and their calls and outputs join the
context of the next turn. Function tools (and tools in the client's environment) run on the
client: their calls end the response, and the client's outputs continue the chain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cove import telemetry
from cove.agent.builder import ResponseBuilder
from cove.agent.progress import Call, Progress
from cove.agent.request import CreateParams, sized
from cove.errors import ContextWindowExceeded
from cove.search.base import SearchEngine
from cove.tools.base import HostedTool, ToolArgumentsError, ToolRun
from cove.tools.citations import CALL_TYPE, Sources
from cove.tools.mcp import McpTool
from cove.tools.mcp_client import McpAccess
from cove.tools.toolbox import Toolbox
from cove.tools.web_search import WebSearchTool
from cove.tools.workspace import NoContainer, Workspace
from cove.upstream.base import Finish, Model, ModelRequest, Usage

if TYPE_CHECKING:
    from cove.agent.compaction import Compactor

_OUTPUT_RESERVE = 1024
"""Tokens kept free for the answer when ``max_output_tokens`` is not given."""


@dataclass
class Turn:
    model: Model
    upstream_model: str
    params: CreateParams
    context: list[dict[str, Any]]
    """Every item the model sees, oldest first (history, then this response's input)."""
    toolbox: Toolbox = field(default_factory=lambda: Toolbox([]))
    workspace: Workspace | None = None
    tools_ran: bool = False
    """After a turn that ran tools, ``tool_choice`` no longer forces a call (else "required" loops)."""
    max_turns: int = 50
    """Model turns per response (``COVE_MAX_TURNS``, ``COVE_BACKGROUND_MAX_TURNS``): a runaway agent ends
    ``incomplete`` here."""
    usage: Usage = field(default_factory=Usage)
    """Tokens this response's model turns (and compactions) spent so far."""
    progress: Progress = field(default_factory=Progress)
    """Its step, calls in flight and last checkpoint (``agent/progress.py``)."""
    output_used: int = 0
    """Output tokens this response's earlier model turns spent: ``max_output_tokens`` bounds them all,
    as on OpenAI, not each turn alone."""
    hosted_calls: int = 0
    """Hosted calls run so far in this response (``max_tool_calls`` counts them)."""
    max_tool_turns: int | None = None
    """Rounds of hosted calls the model may make before it must answer (``Model.max_tool_turns``)."""
    tool_turns: int = 0
    """Rounds of hosted calls run so far in this response."""
    compactor: Compactor | None = None
    """Compaction (``compaction.py``) before each model turn, when ``context_management`` or a
    ``compaction_trigger`` asks for it."""
    steering: list[Any] = field(default_factory=list)
    """Input the client queued while this response runs (WebSocket ``response.steer``). As on OpenAI, it
    does not join this response: at the next safe boundary (hosted tools done, before the next model
    turn) the response ends ``incomplete`` (``steered``) and the client's connection continues it with
    the queued input in a successor response."""
    released: list[tuple[HostedTool, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    """Held calls (a computer call's pending safety checks) the client's input acknowledges, with their
    tool and the client's answer: performed before the first model turn (``Toolbox.released``)."""
    generate: bool = True
    """False for a WebSocket warm-up (``generate: false``): the response completes at once, without
    output, so a later request can chain from its input, tools and instructions."""
    search: SearchEngine | None = None
    """The engine ``web_search`` calls use (the service picks it per project)."""
    upstream_search: bool = False
    """``COVE_WEB_SEARCH=upstream``: a Responses upstream runs web search itself; its
    ``web_search_call`` items are relayed as they come."""
    mcp: McpAccess | None = None
    """The response's MCP connections (the service opens them per project; None: no MCP here)."""
    sources: Sources | None = None
    """Web sources shown to the model, numbered for citations; made from the context on first use."""
    fitted: ModelRequest | None = None
    """The first model turn's request when it was already fitted to the window (on create, to refuse an
    oversized input as a 400), so that the run does not build and count it a second time."""

    context_base: int | None = field(init=False)
    """How many of ``context``'s first items are the history and input the service builds again on a
    resume; None once compaction replaced them (a checkpoint then holds the whole context)."""

    def __post_init__(self) -> None:
        self.context_base = len(self.context)

    def checkpoint(self, output: list[dict[str, Any]], pending: list[dict[str, Any]] | None = None,
                   client_calls: bool = False) -> dict[str, Any]:
        """This response as JSON, for a resume after a restart: its counters and usage, and what its turns
        added to the context, in order (items of ``output`` by id, any other item whole). ``pending``:
        the hosted calls now starting, which a resume must not run again blindly (``agent/resume.py``);
        ``client_calls``: their turn also called client tools, so the response ends after them."""
        shown = {id(item) for item in output}
        added = self.context[self.context_base or 0:]
        return {"turns": self.progress.turns, "tool_turns": self.tool_turns, "hosted_calls": self.hosted_calls,
                "usage": dataclasses.asdict(self.usage), "base": self.context_base is not None,
                "context": [item["id"] if id(item) in shown and "id" in item else item for item in added],
                "pending": pending or [], "client_calls": client_calls}

    @property
    def output_left(self) -> int | None:
        """What ``max_output_tokens`` leaves for the next model turn (None: no limit given)."""
        limit = self.params.max_output_tokens
        return None if limit is None else limit - self.output_used

    @property
    def hosted_left(self) -> int | None:
        """Hosted calls ``max_tool_calls`` still allows (None: no limit given)."""
        limit = self.params.max_tool_calls
        return None if limit is None else max(limit - self.hosted_calls, 0)

    @property
    def input_budget(self) -> int:
        """Tokens the next model turn's prompt may take: the window less the room kept for its answer."""
        return self.model.context_window - (self.output_left or _OUTPUT_RESERVE)


def model_request(turn: Turn) -> ModelRequest:
    params = turn.params
    fmt = (params.text or {}).get("format")
    native = turn.model.native_tools
    upstream_search = native and turn.upstream_search
    return ModelRequest(
        model=turn.upstream_model, input=turn.toolbox.as_model_context(turn.context, native, upstream_search),
        instructions=params.instructions,
        tools=turn.toolbox.model_tools(native, hosted=turn.hosted_left != 0, upstream_search=upstream_search),
        tool_choice="none" if _must_answer(turn) else _tool_choice(params.tool_choice, native, turn.tools_ran,
                                                                   upstream_search),
        parallel_tool_calls=params.parallel_tool_calls, max_output_tokens=turn.output_left,
        temperature=params.temperature, top_p=params.top_p, text_format=fmt if isinstance(fmt, dict) else None,
        reasoning=params.reasoning, user=params.safety_identifier or params.user,
        prompt_cache_key=params.prompt_cache_key, include=params.include or [], top_logprobs=params.top_logprobs)


def _tool_choice(choice: str | dict[str, Any] | None, native: bool, tools_ran: bool,
                 upstream_search: bool) -> str | dict[str, Any] | None:
    if tools_ran and choice is not None and choice != "none":
        return "auto"
    return Toolbox.choice(choice, native, upstream_search)


def check_input(turn: Turn, items: list[dict[str, Any]]) -> None:
    """The request's own input items as the upstream will read them: one it has no mapping for is a 400
    naming it (``input[3].type``) before anything runs, not a failed response. Items the model never
    reads as sent (a compaction item, which it reads as its summary) are not the upstream's to refuse."""
    native = turn.model.native_tools
    read = {id(item) for item in turn.context}
    for index, item in enumerate(items):
        if id(item) in read:
            context = turn.toolbox.as_model_context([item], native, native and turn.upstream_search)
            turn.model.check_input(context, f"input[{index}]")


def _must_answer(turn: Turn) -> bool:
    """Whether the model has used its rounds of hosted calls and must answer from their output now."""
    return turn.max_tool_turns is not None and turn.tool_turns >= turn.max_tool_turns


async def fit_context(turn: Turn, *, inline: bool = False) -> ModelRequest:
    """The request, cut to the model's context window as ``truncation`` allows.

    ``auto`` drops the oldest items (whole user turns, so a tool result never loses its call);
    ``disabled`` refuses an input that does not fit. Counting is CPU work proportional to the input
    (JSON or a tokenizer over what may be megabytes), so it runs in a worker thread, never on the
    event loop that serves every tenant; ``inline`` when the caller knows the context is small (a
    hand-over to a thread then costs more than the work).
    """
    return await sized(inline, _fit, turn)


def _fit(turn: Turn) -> ModelRequest:
    """Counts each item once, then finds the first cut that fits by running sums: linear in the input.

    A model's whole-prompt count need not be the sum of its parts (a chat template may frame the
    first message differently), so the chosen cut is counted once more and the difference, if any,
    carried to the cuts after it.
    """
    request = model_request(turn)
    budget = turn.input_budget
    count = turn.model.count_items(request)
    if count.total <= budget:
        return request
    if turn.params.truncation != "auto":
        raise ContextWindowExceeded(
            "The input exceeds the model's context window. Shorten it or use truncation: 'auto'.",
            param="input", code="context_length_exceeded")
    items = request.input
    # Where the input may start: at each later user message (so function calls and their outputs
    # stay together), and failing those at the newest item alone.
    cuts = [i for i in range(1, len(items)) if _is_user_message(items[i])]
    if len(items) > 1 and (not cuts or cuts[-1] != len(items) - 1):
        cuts.append(len(items) - 1)
    after = list(itertools.accumulate(reversed(count.items), initial=0))[::-1]  # after[i]: tokens of items[i:]
    slack = 0
    for cut in cuts:
        if count.fixed + after[cut] + slack > budget:
            continue
        request.input = items[cut:]
        counted = turn.model.count_tokens(request)
        if counted <= budget:
            return request
        slack = counted - count.fixed - after[cut]
    raise ContextWindowExceeded("The newest input alone exceeds the model's context window.",
                                param="input", code="context_length_exceeded")


def _is_user_message(item: dict[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") == "user"


@dataclass
class _Step:
    finish: Finish
    hosted: list[tuple[HostedTool, str, str]] = field(default_factory=list)
    """Server-side calls of this turn: (tool, call_id, arguments)."""
    client_calls: bool = False
    """Whether the turn also called tools the client runs: then the response ends after this turn."""


async def run_response(turn: Turn, builder: ResponseBuilder) -> None:
    """Model turns and hosted tool calls until the model answers, then ends the response."""
    usage = turn.usage
    if not turn.generate:
        await builder.complete(usage)
        return
    if turn.sources is None and turn.toolbox.searches and not turn.upstream_search:
        turn.sources = Sources.of(turn.context)  # sources earlier responses of the chain showed keep their numbers
    await _list_mcp(turn, builder)
    await _run_released(turn, builder)
    while turn.progress.turns < turn.max_turns:
        left = turn.output_left
        if left is not None and left <= 0:  # the tools ran, but no output budget is left to read them
            await builder.incomplete("max_output_tokens", usage)
            return
        if turn.compactor is not None:
            _add_usage(usage, await turn.compactor.before_turn(turn, builder))
            if turn.compactor.ends_response:  # a compaction_trigger asked for the compaction alone
                await builder.complete(usage)
                return
        fitted, turn.fitted = turn.fitted, None
        turn.progress.enter("model")
        request = fitted or await fit_context(turn)
        with telemetry.model_call(turn.params.model, turn.upstream_model) as model_call:
            step = await _model_turn(turn, request, builder)
            model_call.finished(step.finish.usage)
        turn.progress.turns += 1
        _add_usage(usage, step.finish.usage)
        turn.output_used = usage.output_tokens
        if step.finish.reason in ("length", "content_filter"):
            reason = "max_output_tokens" if step.finish.reason == "length" else "content_filter"
            await builder.incomplete(reason, usage)
            return
        if not step.hosted:
            if turn.workspace is not None and turn.workspace.citations:
                await builder.annotate(turn.workspace.citations)
            await builder.complete(usage)
            return
        await _run_hosted(turn, step, builder)
        turn.tools_ran = True
        turn.tool_turns += 1
        if step.client_calls:  # the client owes outputs for its calls before the model can go on
            await builder.complete(usage)
            return
        if turn.steering:
            await builder.incomplete("steered", usage)
            return
        await turn.progress.save(turn.checkpoint(builder.output))
    await builder.incomplete("max_messages", usage)


async def _model_turn(turn: Turn, request: ModelRequest, builder: ResponseBuilder) -> _Step:
    """Streams one model turn into ``builder``; hosted calls are collected, not streamed as functions."""
    calls: dict[int, dict[str, Any]] = {}
    hosted: dict[int, list[Any]] = {}
    native_calls: list[tuple[HostedTool, str, str]] = []
    finish = Finish("stop", Usage())
    async for event in turn.model.stream(request):
        if event.type == "text":
            await builder.text(event.text, event.logprobs)
        elif event.type == "refusal":
            await builder.refusal(event.text)
        elif event.type == "reasoning":
            await builder.reasoning(event.text)
        elif event.type == "reasoning_summary":
            await builder.reasoning_summary(event.text, event.index)
        elif event.type == "reasoning_start":
            await builder.reasoning_start(event.item_id)
        elif event.type == "reasoning_end":
            await builder.reasoning_end(event.encrypted_content)
        elif event.type == "tool_call_start":
            server_side = turn.toolbox.hosted(event.name) if event.namespace is None else None
            if server_side is not None:
                hosted[event.index] = [server_side, event.call_id, ""]
            else:
                # A chat model calls a namespace's functions by their flat names; the client gets the pair.
                name, namespace = turn.toolbox.call_name(event.name)
                await builder.function_call(event.call_id, name, event.namespace or namespace)
                calls[event.index] = builder.output[-1]
        elif event.type == "tool_call_delta":
            if event.index in hosted:
                hosted[event.index][2] += event.arguments
                continue
            call = calls.get(event.index)
            if call is not None and call is builder.output[-1] and call["status"] == "in_progress":
                await builder.arguments(event.arguments)
            elif call is not None:
                call["arguments"] += event.arguments  # interleaved (rare): the final response carries it
        elif event.type == "native_item":
            tool = turn.toolbox.native_call(event.item)
            if tool is not None:  # a hosted tool the upstream called in its own shape: run it here
                arguments = json.dumps(tool.native_arguments(event.item))
                native_calls.append((tool, event.item.get("call_id") or "", arguments))
            elif turn.upstream_search and event.item.get("type") == CALL_TYPE:  # the upstream searched itself
                await builder.close_open()
                await WebSearchTool.relay(event.item, builder)
            else:
                await builder.item(event.item)
        elif event.type == "annotations":  # the upstream's own (its web search's url_citations)
            await builder.cite(functools.partial(_placed, event.annotations, event.text))
        elif event.type == "finish":
            finish = event
    if not hosted and not native_calls and turn.sources:
        await builder.cite(turn.sources.citations)  # the answer: its [n] markers become url_citations
    await builder.close_open("incomplete" if finish.reason in ("length", "content_filter") else "completed")
    await _to_client_items(turn, builder, calls)
    ordered = [(entry[0], entry[1], entry[2]) for _, entry in sorted(hosted.items())]
    return _Step(finish, [*ordered, *native_calls], client_calls=bool(calls))


async def _to_client_items(turn: Turn, builder: ResponseBuilder, calls: dict[int, dict[str, Any]]) -> None:
    """Client-run hosted tools (local shell) take their own item shape instead of ``function_call``."""
    for call in calls.values():
        if call.get("namespace"):  # a namespace's function keeps the function_call shape
            continue
        item = turn.toolbox.client_item(call["call_id"], call["name"], call["arguments"])
        if item is not None:
            builder.output[builder.output.index(call)] = item


async def _run_hosted(turn: Turn, step: _Step, builder: ResponseBuilder) -> None:
    """Runs the turn's hosted calls that ``max_tool_calls`` allows; the rest are ignored, as on OpenAI."""
    run = _tool_run(turn, builder)  # the builder is the tools' event sink
    left = turn.hosted_left
    allowed = step.hosted if left is None else step.hosted[:left]
    turn.hosted_calls += len(allowed)
    calls: list[tuple[HostedTool, str, str, dict[str, Any] | str]] = []  # with its call item, or why refused
    for tool, call_id, arguments in allowed:
        try:
            parsed = json.loads(arguments or "{}")
            if not isinstance(parsed, dict):
                raise ToolArgumentsError("The arguments must be a JSON object.")
            calls.append((tool, call_id, arguments, await tool.call_item(call_id, parsed, run.workspace)))
        except (ValueError, ToolArgumentsError) as exc:
            calls.append((tool, call_id, arguments, str(exc)))
    held = [isinstance(call, dict) and tool.held(call) for tool, _id, _arguments, call in calls]
    step.client_calls = step.client_calls or any(held)  # the client's word first: the response ends with them
    items = [(tool, call) for (tool, _id, _arguments, call), hold in zip(calls, held, strict=True)
             if isinstance(call, dict) and not hold]
    # Saved before any call shows or runs: after a restart, these are the calls that may have run.
    turn.progress.enter("tools")
    await turn.progress.save(turn.checkpoint(builder.output, [call for _tool, call in items], step.client_calls))
    for tool, call_id, arguments, call in calls:
        if isinstance(call, str):
            await _refuse(turn, builder, tool, call_id, arguments, call)
        else:
            await tool.emit_call(call, run)
    outputs = await asyncio.gather(*(_tracked(turn.progress, tool, call, run) for tool, call in items))
    for (_tool, call), output in zip(items, outputs, strict=True):
        turn.context.extend(_call_items(call, output))
    for tool, call_id, arguments in step.hosted[len(allowed):]:
        await _ignore(turn, tool, call_id, arguments)


async def _tracked(progress: Progress, tool: HostedTool, call: dict[str, Any], run: ToolRun) -> dict[str, Any]:
    """Runs a hosted call, listed in ``progress`` while it runs (heartbeats show it, a stuck one is logged)."""
    key = call.get("call_id") or call["id"]
    progress.calls[key] = Call(key, tool.name)
    try:
        with telemetry.tool_call(tool.types[0], call) as traced:
            return traced.ended(await tool.run(call, run))
    finally:
        progress.calls.pop(key, None)


async def _list_mcp(turn: Turn, builder: ResponseBuilder) -> None:
    """Makes the MCP servers' tools known before the first model turn: listed once per chain (a new
    ``mcp_list_tools`` item joins the context), read back from the chain's listing after that."""
    servers = turn.toolbox.mcp_servers
    if not servers:
        return
    run = _tool_run(turn, builder)
    tool = McpTool()
    for config in servers:
        item = await tool.list_tools(config, turn.context, run)
        if item is not None:
            turn.context.append(item)
    turn.toolbox.index()
    turn.fitted = None  # fitted on create, before the servers' tools were known


async def _run_released(turn: Turn, builder: ResponseBuilder) -> None:
    """Performs the held calls the client's input released; each one's output takes the place of the
    client's answer in the context (a call has one output there)."""
    if not turn.released:
        return
    run = _tool_run(turn, builder)
    turn.fitted = None  # fitted to the context before the calls' own outputs replaced the client's answers
    for tool, call, answer in turn.released:
        output = await tool.resume(call, answer, run)
        turn.context[:] = [output if item is answer else item for item in turn.context]
        if not any(item is output for item in turn.context):
            turn.context.append(output)
    turn.tools_ran = True


async def _refuse(turn: Turn, builder: ResponseBuilder, tool: HostedTool, call_id: str, arguments: str,
                  message: str) -> None:
    """Arguments that do not fit the tool: its own call and a failed output (clients resolve calls by
    item type), which the model reads next turn as why, and can retry."""
    items = _call_items(*await tool.refused(call_id, arguments, message, _workspace(turn)))
    for item in items:
        await builder.item(item)
    turn.context.extend(items)


async def _ignore(turn: Turn, tool: HostedTool, call_id: str, arguments: str) -> None:
    """A hosted call past ``max_tool_calls``: not run and not in the response's output ("ignored", as
    OpenAI documents it), but the model reads that it was not run, and its later turns are offered no
    hosted tools, so it answers from what it has."""
    message = (f"Not run: this response reached its limit of {turn.params.max_tool_calls} tool calls "
               "(max_tool_calls). Answer with the results you have.")
    call, output = await tool.refused(call_id, arguments, message, _workspace(turn))
    turn.context.extend(_call_items(call, output))


def _placed(annotations: list[dict[str, Any]], theirs: str, text: str) -> list[dict[str, Any]]:
    """An upstream's annotations of its part ``theirs`` placed in Cove's part ``text``, which ends with
    it (Cove joins consecutive upstream messages into one); none when the two differ."""
    if not text.endswith(theirs):
        return []
    shift = len(text) - len(theirs)
    return [{**annotation, **{key: annotation[key] + shift for key in ("start_index", "end_index")
                              if isinstance(annotation.get(key), int)}} for annotation in annotations]


def _tool_run(turn: Turn, builder: ResponseBuilder) -> ToolRun:
    """What the response's hosted calls run with; the builder is their event sink."""
    sources = turn.sources if turn.sources is not None else Sources()
    return ToolRun(_workspace(turn), builder, screen=turn.toolbox.screen(), search=turn.search, sources=sources,
                   mcp=turn.mcp)


def _workspace(turn: Turn) -> Workspace:
    """The response's container, or none for hosted tools that need none (web search alone)."""
    return turn.workspace if turn.workspace is not None else NoContainer()


def _call_items(call: dict[str, Any], output: dict[str, Any]) -> list[dict[str, Any]]:
    """A hosted call and its output as context items: one item when the tool's call carries its output."""
    return [call] if output is call else [call, output]


def _add_usage(total: Usage, more: Usage) -> None:
    total.input_tokens += more.input_tokens
    total.output_tokens += more.output_tokens
    total.cached_tokens += more.cached_tokens
    total.reasoning_tokens += more.reasoning_tokens
