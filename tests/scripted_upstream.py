"""A scripted OpenAI-compatible model upstream on 127.0.0.1, for tests that need a real HTTP model.

It serves ``POST /v1/chat/completions``, ``POST /v1/responses`` (both streaming and not) and
``GET /v1/models`` from uvicorn in a background thread. A test queues the next turns::

    upstream.script([Reply(text="hello"),
                     Reply(tool_calls=[ToolCall("get_weather", '{"city":"Paris"}')]),
                     lambda body: Reply(text="done") if has_tool_message(body) else Reply(text="?")])

Each request takes the next turn from one shared queue; with the queue empty it answers
``"echo: <last user text>"`` so an unscripted call never hangs. Every request body is kept in
``upstream.requests`` (and with path and headers in ``upstream.received``).

Quirks of real servers can be switched on: ``api_key`` (401 without it), ``reject_params`` (a 400
naming the field, e.g. ``stream_options``), ``reject_stream_with_tools``; per reply: errors with
headers (``retry-after-ms`` makes SDK retries quick), delays, failures mid-stream, truncated
streams, missing usage or call ids. ``abandoned`` counts streams the client hung up on; ``reset()``
returns to a fresh state (for a session-wide server).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.polling import eventually

DEFAULT_PREFIX = "echo: "


@dataclass
class ToolCall:
    name: str
    arguments: str = "{}"
    id: str | None = None
    """The call id; ``call_<n>`` when omitted (or none at all with ``Reply(omit_call_ids=True)``)."""


@dataclass
class Reply:
    """One scripted model turn."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"
    """The chat delta field carrying reasoning: llama.cpp says ``reasoning_content``, vLLM and Ollama ``reasoning``."""
    refusal: str = ""
    """The model declines: ``delta.refusal`` in chat, a ``refusal`` part with its events in responses."""
    summary: list[str] = field(default_factory=list)
    """Reasoning summary parts (``/v1/responses`` only), streamed with ``reasoning_summary_*`` events."""
    encrypted_content: str | None = None
    """The reasoning item's ``encrypted_content`` (``/v1/responses``), sent only when the request's
    ``include`` asks for ``reasoning.encrypted_content``, as OpenAI does."""
    logprobs: bool = False
    """Give each text piece a log probability when the request asks (chat ``logprobs``, responses
    ``include``); the token is the piece itself."""
    native_items: list[dict[str, Any]] = field(default_factory=list)
    """Finished output items sent as-is by ``/v1/responses`` (e.g. a ``shell_call``), after the text
    (before it with ``native_first``, as OpenAI's own web search comes before its answer)."""
    native_first: bool = False
    annotations: list[dict[str, Any]] = field(default_factory=list)
    """The text part's annotations (``/v1/responses``), e.g. ``url_citation``s of the upstream's own search."""
    finish_reason: str | None = None
    """Default ``tool_calls`` when there are tool calls, else ``stop``. ``length`` makes
    ``/v1/responses`` answer ``incomplete`` (max_output_tokens)."""
    usage: dict[str, int] | None = None
    """``input_tokens``, ``output_tokens``, ``cached_tokens``, ``reasoning_tokens``; default: a count."""
    omit_usage: bool = False
    """Never send usage, as some upstreams don't."""
    error: tuple[int, str] | None = None
    """Answer with this HTTP status and message instead of a completion."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers, e.g. ``{"retry-after-ms": "10"}`` to make SDK retries quick."""
    stream_error: str | None = None
    """Fail mid-stream with this message (after the text) instead of finishing."""
    truncate: bool = False
    """Drop the stream after the text, with no finish and no ``[DONE]``."""
    omit_call_ids: bool = False
    calls_at_index_zero: bool = False
    """Stream every tool call at index 0 (told apart by id only), as some upstreams do."""
    delay: float = 0.0
    """Seconds before the answer starts."""
    chunk_delay: float = 0.0
    """Seconds between streamed chunks."""
    chunk_chars: int = 4
    """Characters per text delta and per tool-argument delta."""
    junk_chunks: list[Any] = field(default_factory=list)
    """Chat stream chunks sent as they are before the answer (malformed ones, as a broken upstream sends)."""


Turn = Reply | Callable[[dict[str, Any]], Reply]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedUpstream:
    """The server. ``api_key`` (if set) is required as a bearer token; ``reject_params`` names
    request fields answered with a 400 the way strict upstreams do (``stream_options``, ``max_tokens``)."""

    def __init__(self, *, api_key: str | None = None, models: Iterable[str] = ("scripted-model",)) -> None:
        self.api_key = self._api_key = api_key
        self.models = list(models)
        self.context_windows: dict[str, int] = {}
        """``max_model_len`` in ``/v1/models``, as vLLM says it; models not named here say 8192."""
        self.reject_params: set[str] = set()
        self.reject_stream_with_tools = False
        self.requests: list[dict[str, Any]] = []
        self.abandoned = 0
        """Streams the client hung up on before their end."""
        self.received: list[Received] = []
        self._turns: collections.deque[Turn] = collections.deque()
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"]),
                                Route("/v1/responses", self._responses, methods=["POST"]),
                                Route("/v1/models", self._models, methods=["GET"])])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", http="h11",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> ScriptedUpstream:
        self._thread.start()
        def started() -> bool:
            if not self._thread.is_alive():
                raise RuntimeError("the scripted upstream's server thread ended")
            return bool(self._server.started)

        eventually(started, timeout=10, what="the scripted upstream to start")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def reset(self) -> None:
        """Forgets the script, the recorded requests and any quirks, as a fresh server would."""
        with self._lock:
            self._turns.clear()
        self.requests.clear()
        self.received.clear()
        self.abandoned = 0
        self.reject_params.clear()
        self.reject_stream_with_tools = False
        self.api_key = self._api_key

    def script(self, turns: Iterable[Turn]) -> None:
        """Queues turns, answered in order by the next requests to either endpoint."""
        with self._lock:
            self._turns.extend(turns)

    @property
    def pending(self) -> int:
        """Scripted turns not yet used."""
        return len(self._turns)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            turn = self._turns.popleft() if self._turns else None
        if turn is None:
            return Reply(text=DEFAULT_PREFIX + last_user_text(body))
        return turn if isinstance(turn, Reply) else turn(body)

    async def _receive(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        body: dict[str, Any] = await request.json() if request.method == "POST" else {}
        self.received.append(Received(request.method, request.url.path, dict(request.headers), body))
        if request.method == "POST":
            self.requests.append(body)
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return body, _error(401, "Incorrect API key provided.", "invalid_api_key")
        rejected = sorted(self.reject_params & body.keys())
        if rejected:
            return body, _error(400, f"Unrecognized request argument supplied: {rejected[0]}", param=rejected[0])
        if self.reject_stream_with_tools and body.get("stream") and body.get("tools"):
            return body, _error(400, "Cannot use tools with stream")
        return body, None

    async def _models(self, request: Request) -> Response:
        _, refused = await self._receive(request)
        return refused or JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 1700000000, "owned_by": "scripted",
             "max_model_len": self.context_windows.get(name, 8192)} for name in self.models]})

    async def _chat(self, request: Request) -> Response:
        return await self._answer(request, chat_completion, chat_chunks)

    async def _responses(self, request: Request) -> Response:
        return await self._answer(request, response_object, response_events)

    async def _answer(self, request: Request, whole: Whole, chunks: Chunks) -> Response:
        body, refused = await self._receive(request)
        if refused is not None:
            return refused
        reply = self._next_reply(body)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.error is not None:
            return _error(*reply.error, headers=reply.headers)
        if not body.get("stream"):
            return JSONResponse(whole(reply, body), headers=reply.headers)

        async def sse() -> AsyncIterator[bytes]:
            finished = False
            try:
                for event in chunks(reply, body):
                    if event is None:  # Reply(truncate=True): the connection just ends
                        break
                    name = event.get("type") if "/responses" in request.url.path else None
                    yield (f"event: {name}\n" if name else "").encode() + f"data: {json.dumps(event)}\n\n".encode()
                    if reply.chunk_delay:
                        await asyncio.sleep(reply.chunk_delay)
                else:
                    if "/chat/" in request.url.path:
                        yield b"data: [DONE]\n\n"
                finished = True
            finally:
                if not finished:
                    self.abandoned += 1

        return StreamingResponse(sse(), media_type="text/event-stream", headers=reply.headers)


def _error(status: int, message: str, code: str | None = None, *, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    kinds = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}
    kind = kinds.get(status, "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


# ---- rendering: a Reply as the wire shapes of both APIs -----------------------------------------

Whole = Callable[[Reply, dict[str, Any]], dict[str, Any]]
Chunks = Callable[[Reply, dict[str, Any]], Iterator[dict[str, Any] | None]]
_ids = itertools.count(1)


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), max(size, 1))]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def last_user_text(body: dict[str, Any]) -> str:
    """The newest user message's text, in a chat or a responses request."""
    items = body.get("messages") or body.get("input") or []
    if isinstance(items, str):
        return items
    users = [item for item in items if isinstance(item, dict) and item.get("role") == "user"]
    return _text_of(users[-1].get("content")) if users else ""


def _finish_reason(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _call_ids(reply: Reply) -> list[str | None]:
    return [None if reply.omit_call_ids else call.id or f"call_{next(_ids)}" for call in reply.tool_calls]


def _tokens(reply: Reply, body: dict[str, Any]) -> dict[str, int]:
    if reply.usage is not None:
        return {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "reasoning_tokens": 0, **reply.usage}
    produced = reply.text + (reply.reasoning or "") + "".join(call.arguments for call in reply.tool_calls)
    prompt = json.dumps(body.get("messages") or body.get("input") or "")
    return {"input_tokens": len(prompt) // 4 + 1, "output_tokens": len(produced) // 4 + 1,
            "cached_tokens": 0, "reasoning_tokens": len(reply.reasoning or "") // 4}


def _chat_usage(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    t = _tokens(reply, body)
    return {"prompt_tokens": t["input_tokens"], "completion_tokens": t["output_tokens"],
            "total_tokens": t["input_tokens"] + t["output_tokens"],
            "prompt_tokens_details": {"cached_tokens": t["cached_tokens"]},
            "completion_tokens_details": {"reasoning_tokens": t["reasoning_tokens"]}}


def _responses_usage(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    t = _tokens(reply, body)
    return {"input_tokens": t["input_tokens"], "input_tokens_details": {"cached_tokens": t["cached_tokens"]},
            "output_tokens": t["output_tokens"], "output_tokens_details": {"reasoning_tokens": t["reasoning_tokens"]},
            "total_tokens": t["input_tokens"] + t["output_tokens"]}


def chat_completion(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": reply.refusal or None}
    if reply.reasoning:
        message[reply.reasoning_field] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [{"id": call_id, "type": "function",
                                  "function": {"name": call.name, "arguments": call.arguments}}
                                 for call, call_id in zip(reply.tool_calls, _call_ids(reply), strict=True)]
    result = {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": int(time.time()),
              "model": body.get("model", ""), "choices": [{"index": 0, "message": message,
                                                           "logprobs": _chat_logprobs(reply, body, reply.text),
                                                           "finish_reason": _finish_reason(reply)}]}
    if not reply.omit_usage:
        result["usage"] = _chat_usage(reply, body)
    return result


def chat_chunks(reply: Reply, body: dict[str, Any]) -> Iterator[dict[str, Any] | None]:
    """Chunks as OpenAI streams them: role first, then deltas, a finish chunk, and a usage chunk."""
    envelope = {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model", "")}

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {**envelope, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    yield from reply.junk_chunks
    for piece in _pieces(reply.reasoning or "", reply.chunk_chars):
        yield chunk({reply.reasoning_field: piece})
    for piece in _pieces(reply.text, reply.chunk_chars):
        yield chunk({"content": piece}, logprobs=_chat_logprobs(reply, body, piece))
    for piece in _pieces(reply.refusal, reply.chunk_chars):
        yield chunk({"refusal": piece})
    if reply.stream_error is not None:
        yield {"error": {"message": reply.stream_error, "type": "server_error", "param": None, "code": None}}
        return
    if reply.truncate:
        yield None
        return
    for position, (call, call_id) in enumerate(zip(reply.tool_calls, _call_ids(reply), strict=True)):
        index = 0 if reply.calls_at_index_zero else position
        head: dict[str, Any] = {"index": index, "type": "function", "function": {"name": call.name, "arguments": ""}}
        if call_id is not None:
            head["id"] = call_id
        yield chunk({"tool_calls": [head]})
        for piece in _pieces(call.arguments, reply.chunk_chars):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, _finish_reason(reply))
    if (body.get("stream_options") or {}).get("include_usage") and not reply.omit_usage:
        yield {**envelope, "choices": [], "usage": _chat_usage(reply, body)}


def _token_logprobs(reply: Reply, text: str) -> list[dict[str, Any]]:
    return [{"token": piece, "logprob": -0.25, "bytes": list(piece.encode()), "top_logprobs": []}
            for piece in _pieces(text, reply.chunk_chars) if piece]


def _chat_logprobs(reply: Reply, body: dict[str, Any], text: str) -> dict[str, Any] | None:
    return {"content": _token_logprobs(reply, text)} if reply.logprobs and body.get("logprobs") and text else None


def _wants(body: dict[str, Any], include: str) -> bool:
    return include in (body.get("include") or [])


def _output_items(reply: Reply, body: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if reply.reasoning or reply.summary or reply.encrypted_content:
        reasoning: dict[str, Any] = {"type": "reasoning", "id": f"rs_{next(_ids)}",
                                     "summary": [{"type": "summary_text", "text": text} for text in reply.summary]}
        if reply.reasoning:
            reasoning["content"] = [{"type": "reasoning_text", "text": reply.reasoning}]
        if reply.encrypted_content and _wants(body, "reasoning.encrypted_content"):
            reasoning["encrypted_content"] = reply.encrypted_content
        items.append(reasoning)
    if reply.text or reply.refusal:
        logprobs = _token_logprobs(reply, reply.text) if reply.logprobs and _wants(
            body, "message.output_text.logprobs") else []
        content = [{"type": "output_text", "text": reply.text, "annotations": list(reply.annotations),
                    "logprobs": logprobs}] if reply.text else []
        if reply.refusal:
            content.append({"type": "refusal", "refusal": reply.refusal})
        items.append({"type": "message", "id": f"msg_{next(_ids)}", "role": "assistant", "status": "completed",
                      "content": content})
    for call, call_id in zip(reply.tool_calls, _call_ids(reply), strict=True):
        items.append({"type": "function_call", "id": f"fc_{next(_ids)}", "call_id": call_id or f"call_{next(_ids)}",
                      "name": call.name, "arguments": call.arguments, "status": "completed"})
    native = [dict(item) for item in reply.native_items]
    return native + items if reply.native_first else items + native


def response_object(reply: Reply, body: dict[str, Any], output: list[dict[str, Any]] | None = None,
                    status: str | None = None, response_id: str | None = None) -> dict[str, Any]:
    length = _finish_reason(reply) == "length"
    return {"id": response_id or f"resp_{next(_ids)}", "object": "response", "created_at": int(time.time()),
            "status": status or ("incomplete" if length else "completed"), "model": body.get("model", ""),
            "output": _output_items(reply, body) if output is None else output, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if length and status is None else None,
            "instructions": body.get("instructions"), "tools": body.get("tools", []),
            "tool_choice": body.get("tool_choice", "auto"), "parallel_tool_calls": True,
            "usage": None if reply.omit_usage or status else _responses_usage(reply, body)}


def _message_events(reply: Reply, item: dict[str, Any], at: dict[str, Any],
                    seq: Iterator[int]) -> Iterator[dict[str, Any]]:
    """A message's part events; returns whether the stream is cut after its text (a failure)."""
    for content_index, done in enumerate(item["content"]):
        part = {"item_id": item["id"], "content_index": content_index}
        refusal = done["type"] == "refusal"
        empty = ({"type": "refusal", "refusal": ""} if refusal
                 else {"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        yield {**at, **part, "type": "response.content_part.added", "sequence_number": next(seq), "part": empty}
        text = done["refusal"] if refusal else done["text"]
        for number, piece in enumerate(_pieces(text, reply.chunk_chars)):
            if refusal:
                yield {**at, **part, "type": "response.refusal.delta", "delta": piece, "sequence_number": next(seq)}
            else:
                # OpenAI's deltas carry no ``bytes`` (the SDK's delta type has none); the done part does.
                yield {**at, **part, "type": "response.output_text.delta", "delta": piece, "sequence_number": next(seq),
                       "logprobs": [{k: v for k, v in entry.items() if k != "bytes"}
                                    for entry in done["logprobs"][number:number + 1]]}
        if reply.stream_error is not None or reply.truncate:
            return True
        if refusal:
            yield {**at, **part, "type": "response.refusal.done", "refusal": text, "sequence_number": next(seq)}
        else:
            yield {**at, **part, "type": "response.output_text.done", "text": text, "logprobs": done["logprobs"],
                   "sequence_number": next(seq)}
        yield {**at, **part, "type": "response.content_part.done", "part": done, "sequence_number": next(seq)}
    return False


def response_events(reply: Reply, body: dict[str, Any]) -> Iterator[dict[str, Any] | None]:
    """Events as the Responses API streams them, item by item, with text and arguments in pieces."""
    seq = itertools.count()
    response_id = f"resp_{next(_ids)}"
    start = response_object(reply, body, output=[], status="in_progress", response_id=response_id)
    yield {"type": "response.created", "sequence_number": next(seq), "response": start}
    yield {"type": "response.in_progress", "sequence_number": next(seq), "response": start}
    items = _output_items(reply, body)
    for index, item in enumerate(items):
        at = {"output_index": index, "sequence_number": 0}
        kind = item["type"]
        added = {**item, "status": "in_progress"}
        if kind == "message":
            added["content"] = []
        elif kind == "function_call":
            added["arguments"] = ""
        elif kind == "reasoning":
            added.update(content=[], summary=[])
        yield {**at, "type": "response.output_item.added", "item": added, "sequence_number": next(seq)}
        if kind == "message":
            cut = yield from _message_events(reply, item, at, seq)
            if cut:
                break
        elif kind == "reasoning":
            for piece in _pieces(reply.reasoning or "", reply.chunk_chars):
                yield {**at, "item_id": item["id"], "content_index": 0, "type": "response.reasoning_text.delta",
                       "delta": piece, "sequence_number": next(seq)}
            for summary_index, part in enumerate(item["summary"]):
                where = {**at, "item_id": item["id"], "summary_index": summary_index}
                yield {**where, "type": "response.reasoning_summary_part.added", "sequence_number": next(seq),
                       "part": {"type": "summary_text", "text": ""}}
                for piece in _pieces(part["text"], reply.chunk_chars):
                    yield {**where, "type": "response.reasoning_summary_text.delta", "delta": piece,
                           "sequence_number": next(seq)}
                yield {**where, "type": "response.reasoning_summary_text.done", "text": part["text"],
                       "sequence_number": next(seq)}
                yield {**where, "type": "response.reasoning_summary_part.done", "part": part,
                       "sequence_number": next(seq)}
        elif kind == "function_call":
            for piece in _pieces(item["arguments"], reply.chunk_chars):
                yield {**at, "item_id": item["id"], "type": "response.function_call_arguments.delta",
                       "delta": piece, "sequence_number": next(seq)}
            yield {**at, "item_id": item["id"], "type": "response.function_call_arguments.done",
                   "arguments": item["arguments"], "name": item["name"], "sequence_number": next(seq)}
        yield {**at, "type": "response.output_item.done", "item": item, "sequence_number": next(seq)}
    if reply.truncate:
        yield None
        return
    if reply.stream_error is not None:
        failed = response_object(reply, body, output=items, status="failed", response_id=response_id)
        failed["error"] = {"code": "server_error", "message": reply.stream_error}
        yield {"type": "response.failed", "sequence_number": next(seq), "response": failed}
        return
    final = response_object(reply, body, output=items, response_id=response_id)
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield {"type": kind, "sequence_number": next(seq), "response": final}
