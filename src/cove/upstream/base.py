"""The model protocol: what the agent loop asks of any upstream, and the events it gets back.

The loop speaks Responses API items (input) and receives a small stream of model events
(output). Each provider translates: Chat Completions upstreams (``chat.py``), Responses API
upstreams (``responses.py``) and the embedded offline model (``local.py``).
"""

from __future__ import annotations

import abc
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

ENCRYPTED_REASONING = "reasoning.encrypted_content"
LOGPROBS = "message.output_text.logprobs"
"""The ``include`` values an upstream produces itself (the others are Cove's to honour)."""


@dataclass
class ModelRequest:
    model: str
    """The upstream's own model name (aliases already resolved)."""
    input: list[dict[str, Any]]
    """Responses API input items in order: messages (roles system/developer/user/assistant),
    ``function_call``, ``function_call_output``, ``reasoning`` ... as plain dicts."""
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    """Responses API tool definitions; the loop has already turned hosted tools into functions
    for upstreams that cannot run them natively."""
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    text_format: dict[str, Any] | None = None
    """Responses ``text.format``: ``{"type": "text"}``, ``json_object`` or ``json_schema``."""
    reasoning: dict[str, Any] | None = None
    user: str | None = None
    prompt_cache_key: str | None = None
    """The client's key for the upstream's prompt cache (OpenAI's, vLLM's ...), passed on as given."""
    include: list[str] = field(default_factory=list)
    """The client's ``include`` values; an upstream asks for those it can produce (encrypted reasoning,
    logprobs)."""
    top_logprobs: int | None = None


@dataclass
class PromptCount:
    """A prompt's size in tokens, split as truncation needs it: what stays (instructions, tools, the
    template's framing) and each input item, so dropping items is a subtraction, not a recount."""

    fixed: int
    items: list[int]
    """One count per ``ModelRequest.input`` item, in order."""

    @property
    def total(self) -> int:
        return self.fixed + sum(self.items)


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass
class TextDelta:
    text: str
    logprobs: list[dict[str, Any]] | None = None
    """The tokens' log probabilities (``{token, logprob, bytes, top_logprobs}``), when asked and given."""
    type: Literal["text"] = "text"


@dataclass
class RefusalDelta:
    """The model declines: its explanation, shown as a ``refusal`` part rather than as output text."""

    text: str
    type: Literal["refusal"] = "refusal"


@dataclass
class ReasoningDelta:
    text: str
    type: Literal["reasoning"] = "reasoning"


@dataclass
class ReasoningSummaryDelta:
    """Text of the reasoning summary's part ``index`` (a Responses upstream's summary parts)."""

    text: str
    index: int
    type: Literal["reasoning_summary"] = "reasoning_summary"


@dataclass
class ReasoningStart:
    """The upstream began a reasoning item with its own id (which its encrypted content is bound to)."""

    item_id: str
    type: Literal["reasoning_start"] = "reasoning_start"


@dataclass
class ReasoningEnd:
    """The upstream finished its reasoning item, with the encrypted content when asked for."""

    encrypted_content: str | None
    type: Literal["reasoning_end"] = "reasoning_end"


@dataclass
class ToolCallStart:
    """A function call begins. ``index`` orders calls within one model turn."""

    index: int
    call_id: str
    name: str
    namespace: str | None = None
    """The namespace tool the function belongs to, where a Responses upstream says so."""
    type: Literal["tool_call_start"] = "tool_call_start"


@dataclass
class ToolCallDelta:
    index: int
    arguments: str
    type: Literal["tool_call_delta"] = "tool_call_delta"


@dataclass
class NativeItem:
    """A complete output item a Responses upstream produced natively (e.g. a ``shell_call``)."""

    item: dict[str, Any]
    type: Literal["native_item"] = "native_item"


@dataclass
class TextAnnotations:
    """Annotations a Responses upstream put on an output text part (its own web search's
    ``url_citation``): their offsets index ``text``, the part's whole text."""

    annotations: list[dict[str, Any]]
    text: str
    type: Literal["annotations"] = "annotations"


@dataclass
class Finish:
    reason: Literal["stop", "length", "tool_calls", "content_filter"]
    usage: Usage
    type: Literal["finish"] = "finish"


ModelEvent = (TextDelta | RefusalDelta | ReasoningDelta | ReasoningSummaryDelta | ReasoningStart | ReasoningEnd
              | ToolCallStart | ToolCallDelta | NativeItem | TextAnnotations | Finish)


class Model(abc.ABC):
    """One upstream model."""

    context_window: int = 8192
    native_tools: bool = False
    """Whether the upstream takes hosted tools natively (in their client-side form) and answers with
    their own call items; otherwise the loop offers them as functions."""
    reads_files: bool = False
    """Whether the upstream reads ``input_file`` parts itself (``file_data``, ``file_url``); otherwise
    the service hands it their text (``service/file_inputs.py``)."""
    max_tool_turns: int | None = None
    """Rounds of hosted tool calls one response may give this model before its next turn may call no
    tool and must answer (None: only ``COVE_MAX_TURNS`` bounds them). Set for small models, whose
    calls repeat without end."""

    @abc.abstractmethod
    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Runs one model turn, yielding events as they arrive; the last one is ``Finish``."""

    def check_input(self, items: list[dict[str, Any]], where: str) -> None:  # noqa: B027 - most take all
        """Refuses, as ``InvalidRequest`` naming ``where`` (``input[3]``) and the field, one of the request's
        own input items (as the model reads it: ``items``) that this upstream has no mapping for, so the
        client gets a 400 before anything runs rather than a failed response."""

    def count_items(self, request: ModelRequest) -> PromptCount:
        """The prompt's size in tokens, per input item (for truncation).

        This default is an estimate, a token per three characters of JSON (rounded up per item, so
        it errs towards cutting): exact tokenizers of hosted models are not at hand.
        """
        fixed = _tokens(len(request.instructions or "") + len(json.dumps(request.tools)))
        return PromptCount(fixed, [_item_tokens(item) for item in request.input])

    def count_tokens(self, request: ModelRequest) -> int:
        """The prompt's size in tokens (for ``input_tokens`` and usage an upstream does not report)."""
        return self.count_items(request).total

    async def aclose(self) -> None:  # noqa: B027 - most models hold nothing to release
        """Releases connections or loaded weights."""


def _tokens(chars: int) -> int:
    return -(-chars // 3)


IMAGE_TOKENS = 1500
"""What an inline image counts as: vision models charge by its tiles (OpenAI's high detail stays under
this), not by the length of its base64, which would refuse an ordinary photo as a context overflow."""
FILE_DATA_CHARS_PER_TOKEN = 16
"""Inline file data (a PDF a Responses upstream reads itself) counts a token per 16 base64 characters:
the upstream's extraction is unknown here, and base64 at 3 characters a token would overstate it."""


def _item_tokens(item: dict[str, Any]) -> int:
    screenshot = item.get("output") if item.get("type") == "computer_call_output" else None
    if isinstance(screenshot, dict) and str(screenshot.get("image_url") or "").startswith("data:"):
        rest = {**item, "output": {**screenshot, "image_url": ""}}  # a screenshot is an image, not its base64
        return _tokens(len(json.dumps(rest)) + 2) + IMAGE_TOKENS
    content = item.get("content")
    if not isinstance(content, list) or not any(_inline_media(part) for part in content):
        return _tokens(len(json.dumps(item)) + 2)
    media = [part for part in content if _inline_media(part)]
    rest = {**item, "content": [part for part in content if not _inline_media(part)]}
    return _tokens(len(json.dumps(rest)) + 2) + sum(
        IMAGE_TOKENS if part["type"] == "input_image" else len(part["file_data"]) // FILE_DATA_CHARS_PER_TOKEN
        for part in media)


def _inline_media(part: Any) -> bool:
    if not isinstance(part, dict):
        return False
    if part.get("type") == "input_image":
        return str(part.get("image_url") or "").startswith("data:")
    return part.get("type") == "input_file" and isinstance(part.get("file_data"), str)
