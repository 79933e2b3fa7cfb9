"""An OpenAI-compatible Chat Completions server that answers at once, so a benchmark measures the
server in front of it, not a model. Run as ``python instant_upstream.py PORT``; it serves
``POST /v1/chat/completions`` (plain and ``stream: true``) and ``GET /v1/models`` on 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ANSWER = "Hello from the instant upstream."
USAGE = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}


def _chunks(model: str) -> Iterator[str]:
    base = {"id": "chatcmpl-instant", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    for word in ANSWER.split(" "):
        delta = {"index": 0, "delta": {"role": "assistant", "content": word + " "}, "finish_reason": None}
        yield f"data: {json.dumps({**base, 'choices': [delta]})}\n\n"
    yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
    yield f"data: {json.dumps({**base, 'choices': [], 'usage': USAGE})}\n\n"
    yield "data: [DONE]\n\n"


async def chat(request: Request) -> Response:
    body = await request.json()
    model = str(body.get("model", "instant"))
    if body.get("stream"):
        return StreamingResponse(_chunks(model), media_type="text/event-stream")
    return JSONResponse({
        "id": "chatcmpl-instant", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
        "usage": USAGE})


async def models(_request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [
        {"id": "instant", "object": "model", "created": 0, "owned_by": "bench", "max_model_len": 131072}]})


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                        Route("/v1/models", models, methods=["GET"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
