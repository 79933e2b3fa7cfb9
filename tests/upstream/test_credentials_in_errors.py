"""Upstream errors reach clients (a failed response says why), so they never show the credentials
an upstream URL may hold: its user and password, or a key in its query."""

from __future__ import annotations

import asyncio
import socket

import pytest

from cove.errors import UpstreamError
from cove.upstream.base import ModelRequest
from cove.upstream.chat import ChatCompletionsModel
from tests.scripted_upstream import Reply, ScriptedUpstream
from tests.upstream.conftest import events_of

ASK = ModelRequest(model="qwen", input=[{"role": "user", "content": "hi"}])


def _failure(model: ChatCompletionsModel) -> str:
    async def ask() -> None:
        try:
            await events_of(model, ASK)
        finally:
            await model.aclose()
    with pytest.raises(UpstreamError) as caught:
        asyncio.run(ask())
    return caught.value.message


def test_an_unreachable_upstream_is_named_without_credentials() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: refused
        port = sock.getsockname()[1]
        message = _failure(ChatCompletionsModel(f"http://cove-user:hunter2@127.0.0.1:{port}/v1?api-key=qs-secret",
                                                max_retries=0))
    assert message.startswith(f"The model upstream at http://127.0.0.1:{port}/v1 could not be reached"), message
    for secret in ("hunter2", "cove-user", "qs-secret"):
        assert secret not in message


def test_an_upstreams_own_words_lose_the_credentials_they_quote(upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(error=(400, "Bad request for https://svc:hunter2@models.example/v1/chat (check it)"))])
    url = upstream.url.replace("http://", "http://cove-user:pw-in-url@")
    message = _failure(ChatCompletionsModel(url, max_retries=0))
    assert "answered 400: Bad request for https://models.example/v1/chat (check it)" in message, message
    for secret in ("hunter2", "svc:", "pw-in-url", "cove-user"):
        assert secret not in message
