"""Streams of events as OpenAI sends them (server-sent events): each event goes out as
``event: <its type>`` and ``data: <its JSON>``, and the stream ends with ``data: [DONE]``.

A response's events are numbered where they are made (``agent/events.py``); ``numbered`` numbers
the events of streams that are not, such as an exec's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse

LONG_TEXT = 4096
"""Strings from this length on are worth ``json_escaped``'s fast path."""
_ESCAPES = ((b"\\", b"\\\\"), (b'"', b'\\"'), (b"\n", b"\\n"), (b"\r", b"\\r"), (b"\t", b"\\t"))
_MAX_PASSES, _SAMPLE, _SPARSE = 3, 4096, 16
"""``json_escaped`` leaves to json text that needs more kinds of escape, or more than one escape in
``_SPARSE`` bytes: there the passes of ``bytes.replace`` cost as much as json's escaper."""
_OTHER_ESCAPED = tuple(bytes([c]) for c in (*range(0x20), 0x7F) if c not in b"\n\r\t")
"""What else ``json.dumps`` escapes in ASCII text (as ``\\u00XX``, or ``\\b``, ``\\f``): rare in output."""


def encode(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def json_escaped(text: str) -> bytes | None:
    """What ``json.dumps(text)`` puts between its quotes, the same bytes, where that is quick to make;
    else None (then json's own way is as fast).

    json's escaper looks at one character at a time: about 1.3 ms per MB here, the largest cost of
    streaming a command's output. Long ASCII text is checked with ``in`` on bytes, at memchr speed,
    and escaped with one ``bytes.replace`` per kind of escape it needs, each at memchr speed plus a
    few ns per replacement: 0.3 ms per MB for text with nothing to escape, 0.5 for log lines.
    Short text, non-ASCII text, rare control characters, and text dense with escapes (judged on its
    first ``_SAMPLE`` bytes) are left to json.
    """
    if len(text) < LONG_TEXT or not text.isascii():
        return None
    data = text.encode("ascii")
    passes = [(char, escaped) for char, escaped in _ESCAPES if char in data]
    sample = data[:_SAMPLE]
    if (len(passes) > _MAX_PASSES or sum(sample.count(char) for char, _ in passes) * _SPARSE > len(sample)
            or any(char in data for char in _OTHER_ESCAPED)):
        return None
    for char, escaped in passes:  # backslashes first, so the ones added later stay single
        data = data.replace(char, escaped)
    return data


async def numbered(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Numbers every event: sets ``sequence_number`` to 0, 1, 2 ... (overwriting any it carries)."""
    sequence = 0
    async for event in events:
        event["sequence_number"] = sequence
        sequence += 1
        yield event


def stream(events: AsyncIterator[dict[str, Any]],
           encoder: Callable[[dict[str, Any]], bytes] = encode) -> StreamingResponse:
    """The events as a streaming response; ``encoder`` may be one that knows where a stream's long
    texts are (it must give ``encode``'s bytes)."""
    async def body() -> AsyncIterator[bytes]:
        async for event in events:
            yield encoder(event)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
