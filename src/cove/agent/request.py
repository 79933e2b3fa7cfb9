"""``POST /v1/responses`` parameters, validated once (the response object they make: ``response_object.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import cached_property
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cove.errors import InvalidRequest
from cove.tools.toolbox import Toolbox

INLINE_BYTES = 64 * 1024
"""A request body up to this size is parsed, checked and fitted on the event loop: for it a hand-over
to a worker thread costs more than the work (and adds latency to every response). Larger ones go to
a thread, so that megabytes of input never hold up the loop that serves every tenant."""

T = TypeVar("T")


async def sized(inline: bool, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` on the event loop when ``inline`` (the input is small: within ``INLINE_BYTES``),
    else in a worker thread."""
    return work(*args) if inline else await asyncio.to_thread(work, *args)

INCLUDABLE = {
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url", "code_interpreter_call.outputs",
    "reasoning.encrypted_content", "message.output_text.logprobs",
}


class CreateParams(BaseModel):
    """Every field the SDK's ``ResponseCreateParams`` declares; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: str | list[Any] = Field(default_factory=list)
    instructions: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=1)
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    store: bool | None = True
    background: bool | None = False
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = "disabled"
    metadata: dict[str, str] | None = None
    client_metadata: dict[str, str] | None = None
    """Sent by clients built on OpenAI's API (Codex: its session and turn ids), beyond the SDK's typed
    params. A string map, as there; not echoed on the response, which has no such field."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    user: str | None = None
    safety_identifier: str | None = Field(default=None, max_length=128)
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    service_tier: str | None = None
    prompt: dict[str, Any] | None = None
    background_options: dict[str, Any] | None = None
    context_management: list[dict[str, Any]] | None = None
    access_programs: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None
    container_id: str | None = None
    """Cove extension (as in OpenAI's article): the container hosted tools run in."""

    @property
    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, dict):
            value = self.conversation.get("id")
            return str(value) if value else None
        return self.conversation

    def check(self) -> None:
        """Rules across fields, each failure naming its ``param``."""
        if self.previous_response_id and self.conversation is not None:
            raise InvalidRequest("previous_response_id cannot be used together with conversation.",
                                 param="previous_response_id", code="invalid_request")
        if self.background and self.store is False:
            raise InvalidRequest("Background responses must be stored: store cannot be false.",
                                 param="store")
        if self.prompt is not None:
            raise InvalidRequest("Prompt templates are not supported by this server.", param="prompt")
        check_include(self.include)
        check_metadata(self.metadata)
        check_context_management(self.context_management)
        self._check_tools()
        fmt = (self.text or {}).get("format")
        if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") not in
                                ("text", "json_object", "json_schema")):
            raise InvalidRequest("text.format.type must be text, json_object or json_schema.",
                                 param="text.format.type", code="invalid_value")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and not isinstance(fmt.get("schema"), dict):
            raise InvalidRequest("text.format.schema is required for json_schema.", param="text.format.schema")

    @cached_property
    def toolbox(self) -> Toolbox:
        """The request's tools, each parsed against its tool's schema (a 400 names the first bad one)."""
        return Toolbox(self.tools)

    def _check_tools(self) -> None:
        self.toolbox.check()
        choice = self.tool_choice
        if isinstance(choice, str) and choice not in ("none", "auto", "required"):
            raise InvalidRequest("tool_choice must be none, auto, required or a tool.", param="tool_choice",
                                 code="invalid_value")
        if choice == "required" and not self.tools:
            raise InvalidRequest("tool_choice 'required' needs at least one tool.", param="tool_choice")
        if (isinstance(choice, dict) and choice.get("type") == "function"
                and choice.get("name") not in self.toolbox.function_names):
            raise InvalidRequest(f"tool_choice names a function that is not in tools: {choice.get('name')!r}.",
                                 param="tool_choice", code="invalid_value")


def check_include(include: list[str] | None) -> list[str] | None:
    """``include`` on create or on a read, refused when it names something the SDK does not list."""
    for value in include or []:
        if value not in INCLUDABLE:
            raise InvalidRequest(f"Invalid value for 'include': {value!r} is not supported.",
                                 param="include", code="invalid_value")
    return include


def check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > 16:
        raise InvalidRequest("metadata may hold at most 16 pairs.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise InvalidRequest("metadata keys are at most 64 characters and values at most 512.",
                                 param="metadata")


def check_context_management(entries: list[dict[str, Any]] | None) -> None:
    """The SDK's ``ContextManagement`` entries: ``type`` is ``compaction`` (the only kind there is) and
    ``compact_threshold``, if given, a positive number of tokens."""
    for index, entry in enumerate(entries or []):
        where = f"context_management[{index}]"
        if entry.get("type") != "compaction":
            raise InvalidRequest(f"Invalid value for '{where}.type': only 'compaction' is supported.",
                                 param=f"{where}.type", code="invalid_value")
        threshold = entry.get("compact_threshold")
        if threshold is not None and (not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1):
            raise InvalidRequest(f"Invalid value for '{where}.compact_threshold': expected a positive integer.",
                                 param=f"{where}.compact_threshold", code="invalid_value")


COUNT_DEFAULT_MODEL = "default"
"""The name a count without ``model`` is resolved under: like any name without an alias, it goes to the
default upstream (or the embedded model), whose context window and tokenizer then apply."""


class CountParams(BaseModel):
    """``POST /v1/responses/input_tokens``: the fields the SDK's ``InputTokenCountParams`` declares that
    shape the prompt (``model`` optional, as there); unknown fields are refused. Counted as the
    create request with the same context would be, so the two never disagree."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1)
    input: str | list[Any] | None = None
    instructions: str | None = None
    conversation: str | dict[str, Any] | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    container_id: str | None = None
    """Cove extension, as on create: the container hosted tools would run in."""

    def as_create(self) -> CreateParams:
        given = self.model_dump(exclude_none=True)
        return CreateParams.model_validate({**given, "model": self.model or COUNT_DEFAULT_MODEL,
                                            "input": self.input or []})
