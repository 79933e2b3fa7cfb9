"""Going on with a background response after a server restart, from its last checkpoint.

The response's stored stream events give back its output as far as it got (``replay``); its last
checkpoint (``Turn.checkpoint``) gives the counters, the usage and what its finished turns added to
the model's context. ``resume`` puts those back into a fresh turn and settles what the restart cut off:

- An item still streaming (a message or reasoning of a model turn that did not finish) is closed
  ``incomplete`` and kept in the output; the model turn runs again.
- A hosted call that had started is not run again: it may have done part or all of its work (a
  command that appended to a file, installed a package, sent a request), and running it twice could
  do that twice. A call that finished keeps its output; one that did not gets, as its output, the
  tool's own failed output (``HostedTool.refused``) saying the server restarted while it ran and that
  it may or may not have completed, so the model checks the state before it tries again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from cove.agent.builder import ResponseBuilder
from cove.agent.loop import Turn
from cove.tools.base import HostedTool
from cove.tools.workspace import NoContainer, Workspace
from cove.upstream.base import Usage

RESTARTED = ("The server restarted while this call ran, so it may or may not have completed (in part or in "
             "whole). Check the current state before running it again.")


def replay(events: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], set[int]]:
    """The output a response's stored stream events describe, and the indices of items added but not
    done (cut off). Text streamed into a message that never finished is kept in it."""
    output: list[dict[str, Any]] = []
    cut: set[int] = set()
    for event in events:
        kind, index = event["type"], event.get("output_index")
        if kind in ("response.output_item.added", "response.output_item.done") and isinstance(index, int):
            item = event["item"]
            if index < len(output):
                output[index] = item
            else:
                output.append(item)
            (cut.add if kind.endswith("added") else cut.discard)(index)
        elif kind == "response.content_part.added" and index in cut:
            output[index].setdefault("content", []).append(event["part"])
        elif kind == "response.output_text.delta" and index in cut:
            parts = output[index].get("content") or []
            if event["content_index"] < len(parts):
                parts[event["content_index"]]["text"] += event["delta"]
    return output, cut


async def resume(turn: Turn, builder: ResponseBuilder, cut: set[int]) -> bool:
    """Puts ``turn`` where its checkpoint (``turn.progress.checkpoint``) left it, with ``builder`` holding
    the replayed output; emits what closes the items in ``cut``. Returns whether the response is done
    (its last turn called client tools, so it ends once its hosted calls have their outputs)."""
    checkpoint = turn.progress.checkpoint or {}
    turn.released = []  # acknowledged held calls ran before the first model turn: never twice
    turn.progress.calls.clear()  # those the restart cut off run no more
    turn.progress.turns = checkpoint.get("turns", 0)
    if checkpoint:
        by_id = {item.get("id"): item for item in builder.output}
        if not checkpoint["base"]:  # compaction had replaced the history and input
            turn.context.clear()
            turn.context_base = None
        for entry in checkpoint["context"]:
            item = by_id.get(entry) if isinstance(entry, str) else entry
            if item is not None:
                turn.context.append(item)
        turn.tool_turns, turn.hosted_calls = checkpoint["tool_turns"], checkpoint["hosted_calls"]
        turn.usage = Usage(**checkpoint["usage"])
        turn.output_used = turn.usage.output_tokens
        turn.tools_ran = turn.tool_turns > 0
    pending = checkpoint.get("pending") or []
    workspace = turn.workspace if turn.workspace is not None else NoContainer()
    for call in pending:
        tool = turn.toolbox.for_item(call)
        if tool is not None:
            turn.context.extend(await _settle(tool, call, builder, cut, workspace))
    for index in sorted(cut):  # the rest of what was cut off, closed as it was
        item = builder.output[index]
        item["status"] = "incomplete"
        await builder.done_item(item)
    if pending:
        turn.tools_ran = True
        turn.tool_turns += 1
    return bool(pending) and bool(checkpoint.get("client_calls"))


async def _settle(tool: HostedTool, call: dict[str, Any], builder: ResponseBuilder, cut: set[int],
                  workspace: Workspace) -> list[dict[str, Any]]:
    """A call that had started: its items as the output now has them, finished if the restart cut them
    off (``RESTARTED``); returns them for the model's context."""
    output = builder.output
    at = _index(output, lambda item: item.get("id") == call["id"])
    arguments = json.dumps(tool.function_arguments(call))
    if tool.output_type == tool.call_type:  # one item holds the call and its output
        if at is not None and at not in cut:
            return [output[at]]
        failed, _ = await tool.refused(call.get("call_id") or "", arguments, RESTARTED, workspace)
        failed["id"] = call["id"]
        return [await _put(builder, at, failed, cut)]
    answer = _index(output, lambda item: item.get("type") == tool.output_type
                    and item.get("call_id") == call.get("call_id"))
    if at is None:  # cut off before it was shown
        call["status"] = "completed"
        await builder.item(call)
    elif at in cut:
        output[at]["status"] = "completed"
        cut.discard(at)
        await builder.done_item(output[at])
    shown = output[at] if at is not None else call
    if answer is not None and answer not in cut:
        return [shown, output[answer]]
    _, failed = await tool.refused(call.get("call_id") or "", arguments, RESTARTED, workspace)
    if answer is not None:
        failed["id"] = output[answer]["id"]
    return [shown, await _put(builder, answer, failed, cut)]


async def _put(builder: ResponseBuilder, index: int | None, item: dict[str, Any], cut: set[int]) -> dict[str, Any]:
    """``item`` in the output at ``index`` (replacing what was cut off there, and done), or added at the end."""
    if index is None:
        await builder.item(item)
    else:
        builder.output[index] = item
        cut.discard(index)
        await builder.done_item(item)
    return item


def _index(items: list[dict[str, Any]], match: Callable[[dict[str, Any]], bool]) -> int | None:
    return next((index for index, item in enumerate(items) if match(item)), None)
