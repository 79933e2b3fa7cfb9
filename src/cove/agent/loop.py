"""The agent loop: build the model request, stream the model's turn into the response.

Function tools run on the client: their calls end the response, and the client's
``function_call_output`` items continue the chain in the next response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cove.agent.builder import ResponseBuilder
from cove.agent.request import CreateParams
from cove.providers.base import ContextWindowExceeded, Finish, Model, ModelRequest, Usage

_OUTPUT_RESERVE = 1024
"""Tokens kept free for the answer when ``max_output_tokens`` is not given."""


@dataclass
class Turn:
    model: Model
    upstream_model: str
    params: CreateParams
    context: list[dict[str, Any]]
    """Every item the model sees, oldest first (history, then this response's input)."""


def model_request(turn: Turn) -> ModelRequest:
    params = turn.params
    fmt = (params.text or {}).get("format")
    return ModelRequest(
        model=turn.upstream_model, input=turn.context, instructions=params.instructions, tools=params.tools,
        tool_choice=params.tool_choice, parallel_tool_calls=params.parallel_tool_calls,
        max_output_tokens=params.max_output_tokens, temperature=params.temperature, top_p=params.top_p,
        text_format=fmt if isinstance(fmt, dict) else None, reasoning=params.reasoning,
        user=params.safety_identifier or params.user)


def fit_context(turn: Turn) -> ModelRequest:
    """The request, cut to the model's context window as ``truncation`` allows.

    ``auto`` drops the oldest items (whole user turns, so a tool result never loses its call);
    ``disabled`` refuses an input that does not fit.
    """
    request = model_request(turn)
    budget = turn.model.context_window - (turn.params.max_output_tokens or _OUTPUT_RESERVE)
    if turn.model.count_tokens(request) <= budget:
        return request
    if turn.params.truncation != "auto":
        raise ContextWindowExceeded(
            "The input exceeds the model's context window. Shorten it or use truncation: 'auto'.",
            param="input", code="context_length_exceeded")
    items = list(request.input)
    while len(items) > 1 and turn.model.count_tokens(request) > budget:
        # Drop up to the next user message, keeping function calls and their outputs together.
        cut = next((i for i in range(1, len(items)) if _is_user_message(items[i])), len(items) - 1)
        items = items[cut:]
        request.input = items
    if turn.model.count_tokens(request) > budget:
        raise ContextWindowExceeded("The newest input alone exceeds the model's context window.",
                                    param="input", code="context_length_exceeded")
    return request


def _is_user_message(item: dict[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") == "user"


async def run_turn(turn: Turn, request: ModelRequest, builder: ResponseBuilder) -> None:
    """Streams one model turn into ``builder`` and ends the response accordingly."""
    calls: dict[int, dict[str, Any]] = {}
    finish = Finish("stop", Usage())
    async for event in turn.model.stream(request):
        if event.type == "text":
            await builder.text(event.text)
        elif event.type == "reasoning":
            await builder.reasoning(event.text)
        elif event.type == "tool_call_start":
            await builder.function_call(event.call_id, event.name)
            calls[event.index] = builder.output[-1]
        elif event.type == "tool_call_delta":
            call = calls.get(event.index)
            if call is not None and call is builder.output[-1] and call["status"] == "in_progress":
                await builder.arguments(event.arguments)
            elif call is not None:
                call["arguments"] += event.arguments  # interleaved (rare): the final response carries it
        elif event.type == "native_item":
            await builder.item(event.item)
        elif event.type == "finish":
            finish = event
    if finish.reason == "length":
        await builder.incomplete("max_output_tokens", finish.usage)
    elif finish.reason == "content_filter":
        await builder.incomplete("content_filter", finish.usage)
    else:
        await builder.complete(finish.usage)
