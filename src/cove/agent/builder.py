"""Builds a response object and the stream events that describe each change to it.

The event grammar follows the ``openai`` SDK exactly: lifecycle events carry the whole response;
every output item is ``added`` once and ``done`` once, with its content parts and deltas between.
Hosted tools stream into it through ``cove.tools.events.EventSink``, which it implements.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from cove.ids import new_id
from cove.upstream.base import Usage

Emit = Callable[[dict[str, Any]], Awaitable[Any]]
RUNNING = frozenset({"in_progress", "searching", "interpreting"})
"""Statuses of an item not done yet (a message or call streaming, a search or code running)."""


def usage_object(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.input_tokens + usage.output_tokens}


class ResponseBuilder:
    def __init__(self, response: dict[str, Any], emit: Emit) -> None:
        self.response = response
        self.output: list[dict[str, Any]] = response["output"]
        self._emit = emit
        self._open: dict[str, Any] | None = None
        """The output item being streamed (message, reasoning or function call)."""

    async def emit(self, event: dict[str, Any]) -> None:
        await self._emit(event)

    def snapshot(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = _copy(self.response)
        return snapshot

    async def lifecycle(self, kind: str, status: str | None = None) -> None:
        if status is not None:
            self.response["status"] = status
        await self._emit({"type": f"response.{kind}", "response": self.snapshot()})

    # -- streamed items ----------------------------------------------------------------------------
    async def add_item(self, item: dict[str, Any]) -> int:
        self.output.append(item)
        index = len(self.output) - 1
        await self._emit({"type": "response.output_item.added", "output_index": index,
                          "item": _copy(item)})
        return index

    async def done_item(self, item: dict[str, Any]) -> None:
        await self._emit({"type": "response.output_item.done", "output_index": self.output.index(item),
                          "item": _copy(item)})

    def index_of(self, item: dict[str, Any]) -> int:
        return self.output.index(item)

    async def text(self, delta: str, logprobs: list[dict[str, Any]] | None = None) -> None:
        item, content_index, part = await self._message_part("output_text")
        part["text"] += delta
        part["logprobs"].extend(logprobs or [])
        await self._emit({"type": "response.output_text.delta", "item_id": item["id"],
                          "output_index": self.output.index(item), "content_index": content_index, "delta": delta,
                          "logprobs": list(logprobs or [])})

    async def refusal(self, delta: str) -> None:
        """A refusal is its own content part, with its own events, never output text (as on OpenAI)."""
        item, content_index, part = await self._message_part("refusal")
        part["refusal"] += delta
        await self._emit({"type": "response.refusal.delta", "item_id": item["id"],
                          "output_index": self.output.index(item), "content_index": content_index, "delta": delta})

    async def _message_part(self, kind: str) -> tuple[dict[str, Any], int, dict[str, Any]]:
        """The open message's last content part, of ``kind``: a new message or part when needed."""
        item = self._open
        if item is None or item["type"] != "message":
            await self.close_open()
            item = {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []}
            await self.add_item(item)
            self._open = item
        parts = item["content"]
        if not parts or parts[-1]["type"] != kind:
            if parts:
                await self._close_part(item, len(parts) - 1)
            part: dict[str, Any] = ({"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                                    if kind == "output_text" else {"type": "refusal", "refusal": ""})
            parts.append(part)
            await self._emit({"type": "response.content_part.added", "item_id": item["id"],
                              "output_index": self.output.index(item), "content_index": len(parts) - 1,
                              "part": _copy(part)})
        return item, len(parts) - 1, parts[-1]

    async def _close_part(self, item: dict[str, Any], content_index: int) -> None:
        part = item["content"][content_index]
        at = {"item_id": item["id"], "output_index": self.output.index(item), "content_index": content_index}
        if part["type"] == "refusal":
            await self._emit({"type": "response.refusal.done", **at, "refusal": part["refusal"]})
        else:
            await self._emit({"type": "response.output_text.done", **at, "text": part["text"],
                              "logprobs": list(part["logprobs"])})
        await self._emit({"type": "response.content_part.done", **at, "part": _copy(part)})

    async def reasoning_start(self, item_id: str | None = None) -> dict[str, Any]:
        """Opens a reasoning item (under the upstream's id when it gave one)."""
        await self.close_open()
        item = {"id": item_id or new_id("rs"), "type": "reasoning", "summary": [], "status": "in_progress"}
        await self.add_item(item)
        self._open = item
        return item

    async def _reasoning_item(self) -> dict[str, Any]:
        item = self._open
        if item is None or item["type"] != "reasoning":
            item = await self.reasoning_start()
        return item

    async def reasoning(self, delta: str) -> None:
        """Reasoning text (e.g. vLLM's ``reasoning_content``): the item's ``reasoning_text`` content."""
        item = await self._reasoning_item()
        content = item.setdefault("content", [])
        if not content:
            content.append({"type": "reasoning_text", "text": ""})
        content[0]["text"] += delta
        await self._emit({"type": "response.reasoning_text.delta", "item_id": item["id"],
                          "output_index": self.output.index(item), "content_index": 0, "delta": delta})

    async def reasoning_summary(self, delta: str, index: int) -> None:
        """Text of summary part ``index``; a new index closes the part before it and opens its own."""
        item = await self._reasoning_item()
        summary = item["summary"]
        output_index = self.output.index(item)
        while len(summary) <= index:
            if summary:
                await self._close_summary(item, len(summary) - 1)
            part = {"type": "summary_text", "text": ""}
            summary.append(part)
            await self._emit({"type": "response.reasoning_summary_part.added", "item_id": item["id"],
                              "output_index": output_index, "summary_index": len(summary) - 1, "part": dict(part)})
        summary[index]["text"] += delta
        await self._emit({"type": "response.reasoning_summary_text.delta", "item_id": item["id"],
                          "output_index": output_index, "summary_index": index, "delta": delta})

    async def _close_summary(self, item: dict[str, Any], index: int) -> None:
        part = item["summary"][index]
        at = {"item_id": item["id"], "output_index": self.output.index(item), "summary_index": index}
        await self._emit({"type": "response.reasoning_summary_text.done", **at, "text": part["text"]})
        await self._emit({"type": "response.reasoning_summary_part.done", **at, "part": dict(part)})

    async def reasoning_end(self, encrypted_content: str | None) -> None:
        """The upstream finished its reasoning item: it keeps the encrypted content, and closes."""
        item = await self._reasoning_item()
        if encrypted_content is not None:
            item["encrypted_content"] = encrypted_content
        await self.close_open()

    async def function_call(self, call_id: str, name: str, namespace: str | None = None) -> None:
        await self.close_open()
        item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress", "call_id": call_id,
                "name": name, **({"namespace": namespace} if namespace else {}), "arguments": ""}
        await self.add_item(item)
        self._open = item

    async def arguments(self, delta: str) -> None:
        item = self._open
        if item is None or item["type"] != "function_call":
            return
        item["arguments"] += delta
        await self._emit({"type": "response.function_call_arguments.delta", "item_id": item["id"],
                          "output_index": self.output.index(item), "delta": delta})

    async def close_open(self, status: str = "completed") -> None:
        """Finishes the item being streamed, emitting its closing events."""
        item, self._open = self._open, None
        if item is None:
            return
        index = self.output.index(item)
        item["status"] = status
        if item["type"] == "message" and item["content"]:
            await self._close_part(item, len(item["content"]) - 1)
        elif item["type"] == "reasoning":
            if item.get("content"):
                await self._emit({"type": "response.reasoning_text.done", "item_id": item["id"], "output_index": index,
                                  "content_index": 0, "text": item["content"][0]["text"]})
            if item["summary"]:
                await self._close_summary(item, len(item["summary"]) - 1)
        elif item["type"] == "function_call":
            await self._emit({"type": "response.function_call_arguments.done", "item_id": item["id"],
                              "output_index": index, "name": item["name"], "arguments": item["arguments"]})
        await self.done_item(item)

    async def close_all(self, status: str) -> None:
        """Finishes the open item and any other still running (a hosted call the response's end stopped),
        so that every item added is also done, with ``status``."""
        await self.close_open(status)
        for item in self.output:
            if item.get("status") in RUNNING:
                item["status"] = status
                await self.done_item(item)

    async def item(self, item: dict[str, Any]) -> None:
        """A complete item (native upstream items, tool outputs): added and done at once."""
        await self.close_open()
        item.setdefault("id", new_id("item"))
        await self.add_item(item)
        await self.done_item(item)

    async def cite(self, citations: Callable[[str], list[dict[str, Any]]]) -> None:
        """Annotates the text part being streamed (the answer) with ``citations(text)``: annotations
        that carry their own offsets into that text (``url_citation``), emitted before the part closes."""
        item = self._open
        if item is None or item["type"] != "message" or not item["content"]:
            return
        content_index = len(item["content"]) - 1
        part = item["content"][content_index]
        if part["type"] != "output_text":
            return
        index = self.output.index(item)
        for annotation in citations(part["text"]):
            part["annotations"].append(annotation)
            await self._emit({"type": "response.output_text.annotation.added", "item_id": item["id"],
                              "output_index": index, "content_index": content_index,
                              "annotation_index": len(part["annotations"]) - 1, "annotation": dict(annotation)})

    async def annotate(self, annotations: list[dict[str, Any]]) -> None:
        """Cites files in the last message of the answer (at its end)."""
        message = next((item for item in reversed(self.output) if item["type"] == "message"), None)
        texts = [i for i, part in enumerate(message["content"]) if part["type"] == "output_text"] if message else []
        if message is None or not texts:
            return
        part = message["content"][texts[-1]]
        index = self.output.index(message)
        for annotation in annotations:
            placed = {**annotation, "start_index": len(part["text"]), "end_index": len(part["text"])}
            part["annotations"].append(placed)
            await self._emit({"type": "response.output_text.annotation.added", "item_id": message["id"],
                              "output_index": index, "content_index": texts[-1],
                              "annotation_index": len(part["annotations"]) - 1, "annotation": placed})

    # -- endings -----------------------------------------------------------------------------------
    def _finish(self, status: str, usage: Usage | None) -> None:
        self.response["status"] = status
        self.response["completed_at"] = int(time.time()) if status == "completed" else None
        if usage is not None:
            self.response["usage"] = usage_object(usage)

    async def complete(self, usage: Usage) -> None:
        await self.close_open()
        self._finish("completed", usage)
        await self.lifecycle("completed")

    async def incomplete(self, reason: str, usage: Usage | None) -> None:
        await self.close_all("incomplete")
        self._finish("incomplete", usage)
        self.response["incomplete_details"] = {"reason": reason}
        await self.lifecycle("incomplete")

    async def fail(self, code: str, message: str) -> None:
        await self.close_all("incomplete")
        self._finish("failed", None)
        self.response["error"] = {"code": code, "message": message}
        await self.lifecycle("failed")

    async def cancel(self) -> None:
        await self.close_all("incomplete")
        self._finish("cancelled", None)


def _copy(value: Any) -> Any:
    """A copy of JSON data (dicts, lists, scalars), as ``copy.deepcopy`` makes it but several times
    faster: it needs no memo of shared objects and no dispatch by type. Every event carries copies of
    the response or its items, several per response, so this was a few percent of the server's CPU."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value
