"""Streams of events as OpenAI sends them (server-sent events): each event goes out as
``event: <its type>`` and ``data: <its JSON>``, and the stream ends with ``data: [DONE]``.

A response's events are numbered where they are made (``agent/events.py``); ``numbered`` numbers
the events of streams that are not, such as an exec's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse


def encode(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


async def numbered(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Numbers every event: sets ``sequence_number`` to 0, 1, 2 ... (overwriting any it carries)."""
    sequence = 0
    async for event in events:
        event["sequence_number"] = sequence
        sequence += 1
        yield event


def stream(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        async for event in events:
            yield encode(event)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
