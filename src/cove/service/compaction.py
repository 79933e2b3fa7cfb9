"""Compaction items in the service: their sealed summaries, and ``POST /v1/responses/compact``.

A compaction item's ``encrypted_content`` is the summary sealed with the server's key
(``store/sealing.py``: Fernet, AES-128-CBC with HMAC-SHA256) for ``compaction:<project>``. The client
can neither read it (as on OpenAI, it is opaque) nor forge one: a value it made up, changed, or lifted
from another project, or sealed under another key, is a 400 naming the item's ``encrypted_content``,
before anything runs. A project can reuse its own compaction items in any chain or conversation, and
with ``store: false``, since the item itself carries the summary.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from cove.agent.builder import usage_object
from cove.agent.compaction import CompactParams, compaction_item, kept_messages, summarize, take_trigger, window
from cove.agent.items import normalize_input
from cove.agent.loop import Turn
from cove.agent.request import CreateParams
from cove.errors import InvalidRequest
from cove.ids import new_id
from cove.service import history
from cove.store.db import Database
from cove.store.sealing import Sealer, SealingError
from cove.upstream.registry import ModelRegistry


class CompactionSeal:
    """Seals and opens one project's compaction summaries."""

    def __init__(self, sealer: Sealer, project: str) -> None:
        self._sealer = sealer
        self._purpose = f"compaction:{project}"

    def seal(self, summary: str) -> str:
        # Wrapped in an object of its own, so only a value sealed as a summary opens as one.
        return self._sealer.seal(json.dumps({"summary": summary}), self._purpose)

    def open(self, item: dict[str, Any], param: str) -> str:
        try:
            payload = json.loads(self._sealer.open(str(item.get("encrypted_content")), self._purpose))
        except (SealingError, ValueError):
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("summary"), str):
            raise InvalidRequest(f"Invalid value for '{param}': this compaction item was not made by this server "
                                 "for this project, or it was changed.", param=param,
                                 code="invalid_encrypted_content")
        return str(payload["summary"])

    async def window(self, earlier: list[dict[str, Any]], new_items: list[dict[str, Any]], history_param: str
                     ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The model's context (``agent.compaction.window``) of ``earlier`` items (a chain or conversation,
        named ``history_param`` in errors) and this request's ``new_items``. Every compaction item of the
        input must open, even one a later one supersedes; opening is in a worker thread, since a hostile
        ``encrypted_content`` may be megabytes to authenticate."""
        if not any(item.get("type") == "compaction" for items in (earlier, new_items) for item in items):
            return [*earlier, *new_items], None
        return await asyncio.to_thread(self._window, earlier, new_items, history_param)

    def _window(self, earlier: list[dict[str, Any]], new_items: list[dict[str, Any]], history_param: str
                ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        opened = {id(item): self.open(item, f"input[{index}].encrypted_content")
                  for index, item in enumerate(new_items) if item.get("type") == "compaction"}
        return window([*earlier, *new_items], lambda item: opened.get(id(item)) or self.open(item, history_param))


async def compact(db: Database, models: ModelRegistry, sealer: Sealer, project: str,
                  params: CompactParams) -> dict[str, Any]:
    """The compacted window of ``previous_response_id``'s chain and ``input``: its user messages, then one
    compaction item whose summary the same model wrote. Nothing is stored; the client sends the output
    as the next input."""
    new_items = await asyncio.to_thread(normalize_input, params.input if params.input is not None else [])
    new_items = take_trigger(new_items)  # compacting is what it asks for anyway
    async with db.begin() as session:
        new_items = await history.resolve_references(session, project, new_items)
        earlier = (await history.chain_items(session, project, params.previous_response_id)
                   if params.previous_response_id else [])
    if not earlier and not new_items:
        raise InvalidRequest("Nothing to compact: give input or previous_response_id.", param="input",
                             code="missing_required_parameter")
    seal = CompactionSeal(sealer, project)
    context, summary = await seal.window(earlier, new_items, "previous_response_id")
    model, upstream_model = await models.resolve(params.model)
    turn = Turn(model, upstream_model, CreateParams(model=params.model, instructions=params.instructions), context)
    text, usage = await summarize(turn)
    return {"id": new_id("resp"), "object": "response.compaction", "created_at": int(time.time()),
            "output": [*kept_messages(context, summary), compaction_item(seal.seal(text))],
            "usage": usage_object(usage)}
