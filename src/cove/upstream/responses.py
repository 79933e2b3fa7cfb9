"""Upstreams that speak the Responses API themselves (OpenAI, and servers that copy it).

Items pass through nearly unchanged; the stream's events are folded into model events. Output items
the loop has no event for (``shell_call``, ``apply_patch_call``, ``web_search_call`` ...) arrive
whole as ``NativeItem`` once the upstream has finished them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from cove.errors import UpstreamError
from cove.upstream.base import (
    ENCRYPTED_REASONING,
    LOGPROBS,
    Finish,
    ModelEvent,
    ModelRequest,
    NativeItem,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    ReasoningSummaryDelta,
    RefusalDelta,
    TextAnnotations,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from cove.upstream.chat import FinishReason
from cove.upstream.client import ClientModel, upstream_errors

_FOLDED_ITEMS = {"message", "function_call", "reasoning"}  # these arrive as deltas instead
_UPSTREAM_INCLUDES = (ENCRYPTED_REASONING, LOGPROBS)
"""The ``include`` values a Responses upstream produces itself: the client's are passed on."""


class ResponsesApiModel(ClientModel):
    native_tools = True
    reads_files = True

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        fold = _Fold(self.where)
        with upstream_errors(self.where):
            events = await self.client.responses.create(stream=True, **to_responses_params(request))
            async with events:  # a consumer that stops early closes the upstream's stream too
                async for event in events:
                    for model_event in fold.on(event):
                        yield model_event
        if fold.response is None:
            raise UpstreamError(f"{self.where} ended the answer before it finished")
        yield self._finish(fold.response, request, bool(fold.calls))

    def _finish(self, response: Any, request: ModelRequest, called: bool) -> Finish:
        reason: FinishReason = "tool_calls" if called else "stop"
        if response.status == "incomplete":
            why = response.incomplete_details.reason if response.incomplete_details else None
            reason = "content_filter" if why == "content_filter" else "length"
        usage = response.usage
        if usage is None:
            return Finish(reason, Usage(input_tokens=self.count_tokens(request)))
        cached = getattr(usage.input_tokens_details, "cached_tokens", None) or 0
        reasoning = getattr(usage.output_tokens_details, "reasoning_tokens", None) or 0
        return Finish(reason, Usage(usage.input_tokens or 0, usage.output_tokens or 0, cached, reasoning))


class _Fold:
    """Folds one stream's events into model events, numbering function calls as they start."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.calls: dict[int, tuple[int, str]] = {}  # output_index -> (ToolCallStart.index, arguments so far)
        self.response: Any = None  # the final response, once completed or incomplete

    def on(self, event: Any) -> Iterator[ModelEvent]:
        kind = event.type
        if kind == "response.output_text.delta":
            logprobs = [_logprob(entry.to_dict()) for entry in getattr(event, "logprobs", None) or []]
            yield TextDelta(event.delta, logprobs or None)
        elif kind == "response.refusal.delta":
            yield RefusalDelta(event.delta)
        elif kind == "response.reasoning_text.delta":
            yield ReasoningDelta(event.delta)
        elif kind == "response.reasoning_summary_text.delta":
            yield ReasoningSummaryDelta(event.delta, event.summary_index)
        elif kind == "response.output_item.added" and event.item.type == "reasoning":
            yield ReasoningStart(event.item.id)
        elif kind == "response.output_item.added" and event.item.type == "function_call":
            self.calls[event.output_index] = (len(self.calls), "")
            yield ToolCallStart(len(self.calls) - 1, event.item.call_id, event.item.name,
                                getattr(event.item, "namespace", None))
        elif kind == "response.function_call_arguments.delta" and event.output_index in self.calls:
            index, so_far = self.calls[event.output_index]
            self.calls[event.output_index] = (index, so_far + event.delta)
            yield ToolCallDelta(index, event.delta)
        elif kind == "response.output_item.done":
            yield from self._done(event.output_index, event.item)
        elif kind in ("response.completed", "response.incomplete"):
            self.response = event.response
        elif kind == "response.failed":
            error = event.response.error
            raise UpstreamError(f"{self.where} failed: {error.message if error else 'no reason given'}")
        elif kind == "error":
            raise UpstreamError(f"{self.where} failed: {event.message}")

    def _done(self, output_index: int, item: Any) -> Iterator[ModelEvent]:
        if item.type == "function_call" and output_index in self.calls:
            index, so_far = self.calls[output_index]
            if not so_far and item.arguments:  # an upstream that streams no argument deltas
                yield ToolCallDelta(index, item.arguments)
        elif item.type == "reasoning":
            yield ReasoningEnd(getattr(item, "encrypted_content", None))
        elif item.type == "message":
            for part in item.content:
                if part.type == "output_text" and part.annotations:
                    yield TextAnnotations([annotation.to_dict() for annotation in part.annotations], part.text)
        elif item.type not in _FOLDED_ITEMS:
            yield NativeItem(item.to_dict())


def _logprob(entry: dict[str, Any]) -> dict[str, Any]:
    """A delta's log probability as an ``output_text`` part carries it: deltas may leave out ``bytes``
    (the SDK's delta type has none), which the part requires."""
    tops = [{"bytes": list(str(top.get("token", "")).encode()), **top} for top in entry.get("top_logprobs") or []]
    return {"bytes": list(str(entry.get("token", "")).encode()), **entry, "top_logprobs": tops}


def to_responses_params(request: ModelRequest) -> dict[str, Any]:
    """The request body, with ``store=False``: Cove keeps the history and sends it whole each turn."""
    params: dict[str, Any] = {"model": request.model, "input": [_clean(item) for item in request.input
                                                                 if _sendable(item)], "store": False}
    if request.tools:
        params.update(tools=request.tools, tool_choice=request.tool_choice,
                      parallel_tool_calls=request.parallel_tool_calls)
    params.update(instructions=request.instructions, max_output_tokens=request.max_output_tokens,
                  temperature=request.temperature, top_p=request.top_p, reasoning=request.reasoning,
                  user=request.user, text={"format": request.text_format} if request.text_format else None,
                  prompt_cache_key=request.prompt_cache_key,
                  include=[value for value in _UPSTREAM_INCLUDES if value in request.include] or None,
                  top_logprobs=request.top_logprobs)
    return {key: value for key, value in params.items() if value is not None}


def _sendable(item: dict[str, Any]) -> bool:
    # With store=False an upstream can only use a reasoning item it can decrypt; others it would
    # look up by id and fail.
    return item.get("type") != "reasoning" or bool(item.get("encrypted_content"))


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    """Drops what the upstream never issued: Cove's item ids and output statuses. Encrypted reasoning
    keeps its id, which the upstream gave it and requires."""
    keep_id = item.get("type") == "reasoning"
    return {key: value for key, value in item.items() if key != "status" and (key != "id" or keep_id)}
