"""The response object, typed: every field the ``openai`` SDK's ``Response`` declares (a test keeps the
two in step), with OpenAI's values for what a request leaves out; ``store``, ``presence_penalty`` and
``frequency_penalty``, which OpenAI sends (and the Open Responses schema requires) though the SDK does
not declare them; and Cove's ``container_id``.

Times are integer Unix seconds and sampling fields carry the value in effect, never null, as OpenAI
sends them: clients that read ``temperature`` or ``created_at`` need no null or float case.

It is built here once, when a response is created; from then on the response builder changes its
JSON form as the response runs, and that form is what is streamed, stored and returned.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel

from cove.agent.request import CreateParams

Status = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Status = "in_progress"
    background: bool
    completed_at: int | None = None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    instructions: str | None
    metadata: dict[str, str]
    model: str
    output: list[dict[str, Any]]
    parallel_tool_calls: bool
    temperature: float
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    """As the request gave them (domain secrets shown as ``[redacted]``)."""
    top_p: float
    max_output_tokens: int | None
    max_tool_calls: int | None
    previous_response_id: str | None
    conversation: dict[str, str] | None
    reasoning: dict[str, Any]
    text: dict[str, Any]
    truncation: Literal["auto", "disabled"]
    usage: dict[str, Any] | None = None
    user: str | None
    safety_identifier: str | None
    prompt_cache_key: str | None
    prompt_cache_retention: str | None
    prompt_cache_options: dict[str, Any] | None
    service_tier: str
    store: bool
    top_logprobs: int
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    prompt: dict[str, Any] | None = None
    access_programs: dict[str, Any] | None
    image: dict[str, Any] | None
    moderation: dict[str, Any] | None
    input_transformations: list[dict[str, Any]] | None = None
    prompt_cache_diagnostics: dict[str, Any] | None = None
    tool_usage: dict[str, Any] | None = None
    container_id: str | None
    """Cove extension: the container the response's hosted tools run in."""


def new_response(response_id: str, params: CreateParams) -> dict[str, Any]:
    """The response object at creation, as the JSON the builder goes on changing."""
    return ResponseObject(
        id=response_id, created_at=int(time.time()), background=bool(params.background),
        instructions=params.instructions, metadata=params.metadata or {}, model=params.model, output=[],
        parallel_tool_calls=params.parallel_tool_calls is not False,
        temperature=1.0 if params.temperature is None else params.temperature,
        tool_choice=params.tool_choice or "auto", tools=echo_tools(params.tools),
        top_p=1.0 if params.top_p is None else params.top_p,
        max_output_tokens=params.max_output_tokens, max_tool_calls=params.max_tool_calls,
        previous_response_id=params.previous_response_id,
        conversation={"id": params.conversation_id} if params.conversation_id else None,
        reasoning={"effort": None, "summary": None, **(params.reasoning or {})},
        text=params.text or {"format": {"type": "text"}}, truncation=params.truncation or "disabled",
        user=params.user, safety_identifier=params.safety_identifier, prompt_cache_key=params.prompt_cache_key,
        prompt_cache_retention=params.prompt_cache_retention, prompt_cache_options=params.prompt_cache_options,
        service_tier=params.service_tier or "default", store=params.store is not False,
        top_logprobs=params.top_logprobs or 0, access_programs=params.access_programs, image=params.image,
        moderation=params.moderation, container_id=params.container_id,
    ).model_dump()


def echo_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools as OpenAI echoes them: whole, with what the request left out filled in. A function tool
    carries ``description`` and ``parameters`` (null when not given) and ``strict``, whose default in
    the Responses API is true (the Open Responses schema requires all four). Other tools are echoed as
    given."""
    return [{"description": None, "parameters": None, **tool, "strict": True if tool.get("strict") is None
             else tool["strict"]} if tool.get("type") == "function" else tool for tool in tools]
