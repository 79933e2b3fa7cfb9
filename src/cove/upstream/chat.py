"""Any OpenAI-compatible Chat Completions upstream (vLLM, Ollama, llama.cpp, OpenAI, OpenRouter ...).

Responses items become chat messages on the way out; streamed chunks become model events on the way
back. Compatibility quirks are handled by retrying once with a changed request when the upstream
names what it refuses (``stream_options``, ``max_tokens``, streaming with tools), not by guessing
from the upstream's name.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, Literal

import openai

from cove.errors import InvalidRequest, UpstreamError
from cove.upstream.base import (
    LOGPROBS,
    Finish,
    Model,
    ModelEvent,
    ModelRequest,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from cove.upstream.client import ClientModel, upstream_errors, upstream_message
from cove.upstream.http import StatusError

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                                    "function_call": "tool_calls", "content_filter": "content_filter"}
_TEXT_PARTS = {"input_text", "output_text", "text"}


class ChatCompletionsModel(ClientModel):
    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        turn = _Turn(self, request)
        with upstream_errors(self.where):
            answer = await self._open(to_chat_params(request))
            if not isinstance(answer, AsyncGenerator):
                for event in turn.whole(answer):
                    yield event
            else:
                async with contextlib.aclosing(answer):  # a consumer that stops early hangs up on the upstream
                    async for chunk in answer:
                        for event in turn.feed(chunk):
                            yield event
        if turn.reason is None:
            raise UpstreamError(f"{self.where} ended the answer before it finished")
        yield turn.finish()

    def check_input(self, items: list[dict[str, Any]], where: str) -> None:
        check_items(items, where)

    async def _open(self, params: dict[str, Any]) -> Any:
        """Starts the request; a 400 naming something this upstream refuses is retried without it."""
        tried: set[str] = set()
        while True:
            try:
                return await self.post("/chat/completions", params)
            except (openai.APIStatusError, StatusError) as exc:
                fix = _compat_fix(params, exc) if exc.status_code == 400 else None
                if fix is None or fix[0] in tried:
                    raise
                tried.add(fix[0])
                params = fix[1]


_OPTIONAL = ("stream_options", "prompt_cache_key")
"""Fields an upstream may not know, sent again without them when its 400 names them."""


def _compat_fix(params: dict[str, Any], exc: openai.APIStatusError | StatusError) -> tuple[str, dict[str, Any]] | None:
    message = upstream_message(exc)
    for optional in _OPTIONAL:
        if optional in params and optional in message:
            return optional, {k: v for k, v in params.items() if k != optional}
    if "max_tokens" in params and "max_completion_tokens" in message:
        # OpenAI's reasoning models refuse max_tokens and name its replacement.
        changed = {k: v for k, v in params.items() if k != "max_tokens"}
        return "max_tokens", {**changed, "max_completion_tokens": params["max_tokens"]}
    if params.get("stream") and params.get("tools") and re.search(r"\bstream", message, re.IGNORECASE):
        # Older llama.cpp: "Cannot use tools with stream"; the whole answer is replayed as events.
        return "stream", {k: v for k, v in params.items() if k not in ("stream", "stream_options")}
    return None


class _Turn:
    """One turn's stream: which tool calls started, the finish reason, the usage (or its estimate)."""

    def __init__(self, model: Model, request: ModelRequest) -> None:
        self.model = model
        self.request = request
        self.by_index: dict[int | None, str] = {}  # the upstream's tool call index -> call id
        self.position: dict[str, int] = {}  # call id -> ToolCallStart.index
        self.reason: str | None = None
        self.usage: Usage | None = None
        self.produced = 0  # characters, for estimating usage

    def feed(self, chunk: Any) -> Iterator[ModelEvent]:
        chunk = _object(chunk)
        if chunk.get("usage"):
            self.usage = _usage(_object(chunk["usage"]))
        for choice in _objects(chunk.get("choices")):
            if choice.get("index") in (0, None):
                delta = _object(choice.get("delta"))
                yield from self._delta(delta, _objects(delta.get("tool_calls")), _logprobs(choice))
                self.reason = _text(choice.get("finish_reason")) or self.reason

    def whole(self, completion: Any) -> Iterator[ModelEvent]:
        completion = _object(completion)
        if completion.get("usage"):
            self.usage = _usage(_object(completion["usage"]))
        for choice in _objects(completion.get("choices"))[:1]:
            message = _object(choice.get("message"))
            calls = [{**call, "index": i} for i, call in enumerate(_objects(message.get("tool_calls")))]
            yield from self._delta(message, calls, _logprobs(choice))
            self.reason = _text(choice.get("finish_reason")) or "stop"

    def _delta(self, delta: dict[str, Any], tool_calls: list[dict[str, Any]],
               logprobs: list[dict[str, Any]] | None = None) -> Iterator[ModelEvent]:
        # llama.cpp and DeepSeek say reasoning_content; vLLM, Ollama and OpenRouter say reasoning.
        reasoning = _text(delta.get("reasoning_content")) or _text(delta.get("reasoning"))
        if reasoning:
            self.produced += len(reasoning)
            yield ReasoningDelta(reasoning)
        content = _text(delta.get("content"))
        if content:
            self.produced += len(content)
            yield TextDelta(content, logprobs)
        refusal = _text(delta.get("refusal"))
        if refusal:
            self.produced += len(refusal)
            yield RefusalDelta(refusal)
        for call in tool_calls:
            yield from self._tool_call(call)

    def _tool_call(self, call: dict[str, Any]) -> Iterator[ModelEvent]:
        function, index, call_id = _object(call.get("function")), call.get("index"), _text(call.get("id"))
        index = index if isinstance(index, int) else None
        current = self.by_index.get(index)
        # New when the index is unseen, or a known index comes with another id (some upstreams put
        # every call at index 0).
        if current is None or (call_id and call_id != current):
            current = call_id or f"call_{secrets.token_hex(12)}"
            self.by_index[index] = current
            self.position[current] = len(self.position)
            yield ToolCallStart(self.position[current], current, _text(function.get("name")))
        arguments = _text(function.get("arguments"))
        if arguments:
            self.produced += len(arguments)
            yield ToolCallDelta(self.position[current], arguments)

    def finish(self) -> Finish:
        reason = _FINISH.get(self.reason or "stop", "stop")
        if self.position and reason == "stop":
            reason = "tool_calls"  # some upstreams say "stop" after tool calls
        usage = self.usage or Usage(input_tokens=self.model.count_tokens(self.request),
                                    output_tokens=self.produced // 3 + 1 if self.produced else 0)
        return Finish(reason, usage)


def _object(value: Any) -> dict[str, Any]:
    """A JSON object of the upstream's answer, or an empty one where it sent something else: chunks are
    read as plain JSON (building the SDK's models for each was a tenth of the server's CPU per response
    against a fast upstream), so their shape is checked here, field by field, instead."""
    return value if isinstance(value, dict) else {}


def _objects(value: Any) -> list[dict[str, Any]]:
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _logprobs(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Chat logprobs of the content's tokens, in the Responses shape (the same fields)."""
    content = _objects(_object(choice.get("logprobs")).get("content"))
    if not content:
        return None
    return [{"token": _text(entry.get("token")), "logprob": entry.get("logprob"), "bytes": entry.get("bytes") or [],
             "top_logprobs": [{"token": _text(top.get("token")), "logprob": top.get("logprob"),
                               "bytes": top.get("bytes") or []} for top in _objects(entry.get("top_logprobs"))]}
            for entry in content]


def _usage(raw: dict[str, Any]) -> Usage:
    prompt, completion = _object(raw.get("prompt_tokens_details")), _object(raw.get("completion_tokens_details"))
    return Usage(input_tokens=_count(raw.get("prompt_tokens")), output_tokens=_count(raw.get("completion_tokens")),
                 cached_tokens=_count(prompt.get("cached_tokens")),
                 reasoning_tokens=_count(completion.get("reasoning_tokens")))


# ---- Responses request -> Chat Completions request ----------------------------------------------

def to_chat_params(request: ModelRequest) -> dict[str, Any]:
    """The chat request body. ``max_output_tokens`` goes out as ``max_tokens``, the one name every
    OpenAI-compatible server accepts; OpenAI's reasoning models refuse it and get a retry with
    ``max_completion_tokens`` instead (see ``_compat_fix``)."""
    params: dict[str, Any] = {"model": request.model, "messages": to_messages(request), "stream": True,
                              "stream_options": {"include_usage": True}}
    tools, choice = _tools(request.tools, request.tool_choice)
    if tools:  # upstreams refuse tool_choice and parallel_tool_calls without tools
        params.update({"tools": tools, "tool_choice": choice, "parallel_tool_calls": request.parallel_tool_calls})
    params.update(max_tokens=request.max_output_tokens, temperature=request.temperature, top_p=request.top_p,
                  user=request.user, response_format=_response_format(request.text_format),
                  reasoning_effort=(request.reasoning or {}).get("effort"), prompt_cache_key=request.prompt_cache_key)
    if LOGPROBS in request.include:  # asked of the upstream only when the client asked to see them
        params.update(logprobs=True, top_logprobs=request.top_logprobs)
    return {key: value for key, value in params.items() if value is not None}


def _tools(tools: list[dict[str, Any]], choice: str | dict[str, Any] | None) -> tuple[list[dict[str, Any]], Any]:
    result: list[dict[str, Any]] = []
    for tool in tools:
        if tool.get("type") != "function":
            raise InvalidRequest(f"Tool type {tool.get('type')!r} is not supported by this model's upstream.",
                                 param="tools")
        function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
        result.append({"type": "function", "function": function})
    if choice is None or isinstance(choice, str):
        return result, choice
    if choice.get("type") == "function":
        return result, {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("type") == "allowed_tools":  # few upstreams know it: narrow the tools instead
        allowed = {tool.get("name") for tool in choice.get("tools", [])}
        return [tool for tool in result if tool["function"].get("name") in allowed], choice.get("mode", "auto")
    raise InvalidRequest(f"tool_choice {choice.get('type')!r} is not supported by this model's upstream.",
                         param="tool_choice")


def _response_format(text_format: dict[str, Any] | None) -> dict[str, Any] | None:
    kind = (text_format or {}).get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and text_format is not None:
        schema = {key: text_format[key] for key in ("name", "description", "schema", "strict") if key in text_format}
        return {"type": "json_schema", "json_schema": schema}
    return None


def to_messages(request: ModelRequest) -> list[dict[str, Any]]:
    """Chat messages. Assistant text and function calls in a row become one assistant message with
    ``tool_calls``, since chat requires the tool results right after the message that called them."""
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    for position, item in enumerate(request.input):
        _add_item(messages, item, f"input[{position}]")
    return _one_system_message(messages)


def _one_system_message(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The instructions and the system or developer messages that open the input, as one system message:
    clients such as Codex open with several, and many chat templates take a single system message, first."""
    opening = 0
    while (opening < len(messages) and messages[opening]["role"] == "system"
           and isinstance(messages[opening]["content"], str)):
        opening += 1
    if opening < 2:
        return messages
    merged = "\n\n".join(message["content"] for message in messages[:opening])
    return [{"role": "system", "content": merged}, *messages[opening:]]


def check_items(items: list[dict[str, Any]], where: str) -> None:
    """Refuses what ``to_messages`` has no mapping for, naming ``where`` (the request's own input item)."""
    for item in items:
        _add_item([], item, where)


def _add_item(messages: list[dict[str, Any]], item: dict[str, Any], where: str) -> None:
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise InvalidRequest(f"{where}: unknown role {role!r}.", param=f"{where}.role")
        content = _content(item.get("content"), role, where)
        if role == "assistant":
            last = _assistant(messages)
            last["content"] = content if last["content"] is None else f"{last['content']}\n{content}"
        else:  # "developer" is newer than most servers' chat templates; system means the same
            messages.append({"role": "system" if role == "developer" else role, "content": content})
    elif kind == "function_call":
        if not item.get("call_id") or not item.get("name"):
            raise InvalidRequest(f"{where}: a function_call needs call_id and name.", param="input")
        call = {"id": item["call_id"], "type": "function",
                "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"}}
        _assistant(messages).setdefault("tool_calls", []).append(call)
    elif kind == "function_call_output":
        if not item.get("call_id"):
            raise InvalidRequest(f"{where}: a function_call_output needs call_id.", param="input")
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _flatten(item.get("output"))})
    elif kind != "reasoning":  # reasoning is the upstream's own; chat servers take none back
        raise InvalidRequest(f"Invalid value for '{where}.type': items of type {kind!r} cannot be sent to this "
                             "model's upstream (a Chat Completions server).", param=f"{where}.type",
                             code="invalid_value")


def _assistant(messages: list[dict[str, Any]]) -> dict[str, Any]:
    if not messages or messages[-1]["role"] != "assistant":
        messages.append({"role": "assistant", "content": None})
    return messages[-1]


def _content(content: Any, role: str, where: str) -> Any:
    """A string where the parts are all text (what every server accepts), else chat content parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}: content must be a string or a list of parts.", param="input")
    parts = [_part(part, where) for part in content]
    if all(part["type"] == "text" for part in parts):
        return "\n".join(part["text"] for part in parts)
    if role != "user":
        raise InvalidRequest(f"{where}: only user messages can carry images or files.", param="input")
    return parts


def _part(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in _TEXT_PARTS:
        return {"type": "text", "text": part.get("text", "")}
    if kind == "refusal":
        return {"type": "text", "text": part.get("refusal", "")}
    if kind == "input_image" and part.get("image_url"):
        image = {"url": part["image_url"], **({"detail": part["detail"]} if part.get("detail") else {})}
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and part.get("file_data"):
        return {"type": "file", "file": {key: part[key] for key in ("file_data", "filename") if key in part}}
    raise InvalidRequest(f"{where}: content part {kind!r} cannot be sent to this model's upstream"
                         " (images need image_url, files need file_data).", param="input")


def _flatten(output: Any) -> str:
    """Tool results are text in chat: text parts are joined, other parts leave a marker."""
    if isinstance(output, str):
        return output
    texts = []
    for part in output or []:
        kind = part.get("type") if isinstance(part, dict) else None
        texts.append(part.get("text", "") if kind in _TEXT_PARTS else f"[{kind or 'unknown'} omitted]")
    return "\n".join(texts)
