"""Compaction: a long context replaced by the user's own messages and a summary the same model wrote.

OpenAI's shape is kept: a compacted window is every user message of it, verbatim, followed by one
``compaction`` item that stands for everything else (assistant messages, tool calls and their
outputs, reasoning, earlier compactions). It is made two ways: on request (``POST
/v1/responses/compact``, ``service/compaction.py``) and during a run when ``context_management``
asks for it and the prompt nears the threshold, or when the input ends with a ``compaction_trigger``
(``Compactor.before_turn``, called by the loop before a model turn).

A compaction item's ``encrypted_content`` is opaque to the client, as on OpenAI: the service seals the
summary for the project (``service/compaction.py``). When a compaction item comes back (as input, or
in a chain or conversation) the latest one rules: what came before it, save user messages, is what it
replaced and is left out, and the model sees its summary as a user message in its place. That message
is the model's view only; stored items and listed input keep the compaction item as given.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cove.agent.builder import ResponseBuilder
from cove.agent.loop import Turn, fit_context, model_request
from cove.agent.request import CreateParams
from cove.errors import InvalidRequest, UpstreamError
from cove.ids import new_id
from cove.tools.toolbox import Toolbox
from cove.upstream.base import Usage

SUMMARY_PROMPT = (
    "Compact the conversation so far. Another model will continue it from your summary without seeing the "
    "conversation itself; the user's messages are kept verbatim, so do not repeat them. Write down everything "
    "needed to go on: the user's goals and constraints, what was decided, what was done and what it found "
    "(tool calls and results that still matter: file names, commands, values, errors), and what remains to do. "
    "Answer with the summary only.")
"""The request that makes a summary: the last user message of the summarising model turn."""

SUMMARY_HEADER = ("The conversation so far was compacted into this summary (the items it replaces are not shown); "
                  "continue from it.\n\n")
"""How the model sees a compaction item: this, then the summary, as a user message. It says to go on, since
after a compaction during a run it is the last message the model reads before its turn."""

SUMMARY_TOKENS = 4096
"""At most this many tokens (and a quarter of the window) for a summary: it has to leave room to go on."""

NEAR_WINDOW = 0.9
"""Without ``compact_threshold``, a run compacts once the prompt takes this share of the room the window
leaves for it (the window less the room kept for the answer)."""


class CompactParams(BaseModel):
    """``POST /v1/responses/compact``: every field the SDK's ``ResponseCompactParams`` declares; unknown
    fields are refused. Only those that shape the context are used; the prompt cache and service tier
    fields are accepted and have no effect here."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: str | list[Any] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None
    image: dict[str, Any] | None = None


def is_user_message(item: dict[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") == "user"


def summary_message(item_id: str, summary: str) -> dict[str, Any]:
    """What the model sees of a compaction item (never stored: the model's view only)."""
    return {"id": item_id, "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": SUMMARY_HEADER + summary}]}


def window(items: list[dict[str, Any]], open_summary: Callable[[dict[str, Any]], str]
           ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The context the model sees: with a compaction item among ``items``, the user messages before the
    latest one, its summary (``open_summary`` unseals it), then everything after it. Also returns that
    summary message (None without compaction), which a later compaction replaces rather than keeps."""
    last = next((index for index in range(len(items) - 1, -1, -1) if items[index].get("type") == "compaction"),
                None)
    if last is None:
        return items, None
    summary = summary_message(items[last].get("id") or new_id("cmp"), open_summary(items[last]))
    return [*(item for item in items[:last] if is_user_message(item)), summary, *items[last + 1:]], summary


def take_trigger(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` without a ``compaction_trigger``, which must be the last: a signal (compact now, as the Codex
    CLI's remote compaction sends it), not content to store, echo or show the model."""
    for index, item in enumerate(items):
        if item.get("type") == "compaction_trigger":
            if index != len(items) - 1:
                raise InvalidRequest("The 'compaction_trigger' item must be the final input item.",
                                     param=f"input[{index}]", code="invalid_value")
            return items[:-1]
    return items


def triggered(raw_input: str | list[Any]) -> bool:
    """Whether the request's input (as sent, so a queued response still knows) ends with a trigger."""
    return isinstance(raw_input, list) and bool(raw_input) and isinstance(raw_input[-1], dict) and (
        raw_input[-1].get("type") == "compaction_trigger")


def compaction_item(encrypted_content: str) -> dict[str, Any]:
    return {"id": new_id("cmp"), "type": "compaction", "encrypted_content": encrypted_content}


def kept_messages(context: list[dict[str, Any]], summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The user messages a compaction keeps, as the output items ``responses.compact`` returns."""
    return [{"id": item.get("id") or new_id("msg"), "type": "message", "role": "user", "status": "completed",
             "content": item["content"]} for item in context if is_user_message(item) and item is not summary]


async def summarize(turn: Turn) -> tuple[str, Usage]:
    """The model's summary of ``turn.context``: one model turn without tools, with ``SUMMARY_PROMPT`` last.

    The context is cut to fit as ``truncation: "auto"`` would (oldest user turns first), since
    compacting is what a context near its limit needs: the summary covers what still fits."""
    room = min(SUMMARY_TOKENS, turn.model.context_window // 4)
    left = turn.output_left
    params = turn.params.model_copy(update={
        "truncation": "auto", "tools": [], "tool_choice": None, "text": None,
        "max_output_tokens": room if left is None else max(1, min(room, left))})
    prompt = {"id": new_id("msg"), "type": "message", "role": "user",
              "content": [{"type": "input_text", "text": SUMMARY_PROMPT}]}
    summarizing = dataclasses.replace(turn, params=params, context=[*turn.context, prompt], toolbox=Toolbox([]),
                                      output_used=0)
    request = await fit_context(summarizing)
    text: list[str] = []
    usage = Usage()
    async for event in turn.model.stream(request):
        if event.type == "text":
            text.append(event.text)
        elif event.type == "finish":
            usage = event.usage
    summary = "".join(text).strip()
    if not summary:
        raise UpstreamError("The model gave no summary when asked to compact the context.")
    return summary, usage


@dataclasses.dataclass
class Compactor:
    """A run's ``context_management`` compaction: before each model turn, compacts when the prompt is near
    ``compact_threshold`` (or the window), emitting the ``compaction`` item into the response's output."""

    seal: Callable[[str], str]
    """Makes a summary the item's ``encrypted_content`` (the service seals it for the project)."""
    threshold: int | None = None
    """``compact_threshold`` (tokens) as the request gave it; None: near the window."""
    summary: dict[str, Any] | None = None
    """The context's summary message, once there is one: a later compaction replaces it."""
    ends_response: bool = False
    """A ``compaction_trigger`` asked for this compaction alone: it is made before the first model turn,
    whatever the threshold, and the response completes with it."""

    @classmethod
    def of(cls, params: CreateParams, seal: Callable[[str], str], summary: dict[str, Any] | None
           ) -> Compactor | None:
        """The run's compactor, or None when neither ``context_management`` nor a trigger asks for one."""
        entry = next((e for e in params.context_management or [] if e.get("type") == "compaction"), None)
        trigger = triggered(params.input)
        if entry is None and not trigger:
            return None
        return cls(seal, (entry or {}).get("compact_threshold"), summary, trigger)

    async def before_turn(self, turn: Turn, builder: ResponseBuilder) -> Usage:
        """Compacts ``turn.context`` in place if it is due; returns the tokens compaction spent."""
        if not await asyncio.to_thread(self._due, turn):
            return Usage()
        item = compaction_item("")
        index = await builder.add_item(item)
        await builder.emit({"type": "response.compaction.compacting", "item_id": item["id"], "output_index": index})
        try:
            summary, usage = await summarize(turn)
        except BaseException:  # the response fails or is cancelled: no item without its summary is kept
            builder.output.remove(item)
            raise
        item["encrypted_content"] = self.seal(summary)
        kept = [entry for entry in turn.context if is_user_message(entry) and entry is not self.summary]
        self.summary = summary_message(item["id"], summary)
        turn.context[:] = [*kept, self.summary]
        turn.context_base = None  # a checkpoint now holds the whole context
        await builder.done_item(item)
        return usage

    def _due(self, turn: Turn) -> bool:
        """Whether the prompt has reached the threshold and holds something compaction would replace
        (a context of user messages and one summary only gets no shorter by compacting again)."""
        if self.ends_response:
            return True
        if all(is_user_message(item) for item in turn.context):
            return False
        room = turn.input_budget
        trigger = int(room * NEAR_WINDOW) if self.threshold is None else min(self.threshold, room)
        return turn.model.count_items(model_request(turn)).total >= trigger
