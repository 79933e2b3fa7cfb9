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
"""Strings from this length on are worth ``json_string``'s fast path."""
_ESCAPES = ((b"\\", b"\\\\"), (b'"', b'\\"'), (b"\n", b"\\n"), (b"\r", b"\\r"), (b"\t", b"\\t"))
_OTHER_ESCAPED = tuple(bytes([c]) for c in (*range(0x20), 0x7F) if c not in b"\n\r\t")
"""What else ``json.dumps`` escapes in ASCII text (as ``\\u00XX``, or ``\\b``, ``\\f``): rare in output."""


def encode(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def json_string(text: str) -> bytes:
    """``json.dumps(text).encode()``, the same bytes, at memory speed for long ASCII text.

    json's escaper looks at one character at a time: about 1 ms per MB here, the largest cost of
    streaming a command's output. Escaping with ``bytes.replace`` and checking with ``in`` on bytes
    runs at memchr speed, 5-10x faster. Short text, non-ASCII text and text with control characters
    other than newlines and tabs take json's own way.
    """
    if len(text) < LONG_TEXT or not text.isascii():
        return json.dumps(text).encode()
    data = text.encode("ascii")
    if any(char in data for char in _OTHER_ESCAPED):
        return json.dumps(text).encode()
    for char, escaped in _ESCAPES:  # backslashes first, so the ones added later stay single
        data = data.replace(char, escaped)
    return b"".join((b'"', data, b'"'))


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
