"""Cove's own HTTP/1.1 client for plain-HTTP upstreams (``upstream/http.py``): what the scripted
upstream cannot show (it keeps connections alive as asked and frames events one way)."""

from __future__ import annotations

import asyncio
import json

import pytest

from cove.upstream.chat import ChatCompletionsModel
from cove.upstream.http import JsonPoster, _SseData, usable


async def _closing_server(answer: bytes) -> tuple[asyncio.Server, list[int]]:
    """Answers one request per connection with ``answer`` (kept alive as far as HTTP/1.1 says), then
    closes the connection, as a server does when its keep-alive timeout passes."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(answer), answer))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, connections


def test_a_kept_alive_connection_the_upstream_closed_is_replaced_without_a_retry() -> None:
    async def main() -> list[int]:
        server, connections = await _closing_server(b'{"ok": true}')
        port = server.sockets[0].getsockname()[1]
        poster = JsonPoster(f"http://127.0.0.1:{port}/v1", None, max_retries=0, timeout=5)
        try:
            for _ in range(3):
                assert await poster.post("/chat/completions", {"model": "m"}) == {"ok": True}
                await asyncio.sleep(0.05)  # the server's close reaches the idle connection
            return connections
        finally:
            await poster.aclose()
            server.close()
            await server.wait_closed()

    assert len(asyncio.run(main())) == 3


@pytest.mark.parametrize(("url", "fast"), [
    ("http://127.0.0.1:8000/v1", True),
    ("http://localhost:11434/v1/", True),
    ("https://api.openai.com/v1", False),  # TLS: the SDK's client
    ("http://user:secret@127.0.0.1:8000/v1", False),  # httpx sends these as basic auth
    ("http://127.0.0.1:8000/v1?api-version=1", False),
])
def test_which_upstreams_it_serves(url: str, fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert usable(url) is fast
    assert ChatCompletionsModel(url).poster is not None if fast else ChatCompletionsModel(url).poster is None


def test_a_proxy_in_the_environment_leaves_it_to_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "all_proxy", "no_proxy", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    assert not usable("http://10.0.0.5:8000/v1")
    monkeypatch.setenv("NO_PROXY", "10.0.0.5")
    assert usable("http://10.0.0.5:8000/v1")


def test_events_split_anywhere_read_the_same() -> None:
    """An upstream's bytes may be cut anywhere, a CRLF included; data lines of one event join with a newline."""
    stream = (b'data: {"a": 1}\r\n\r\n: a comment\r\nevent: x\r\ndata: {"b":\r\ndata: 2}\r\n\r\n'
              b"data: [DONE]\n\n")
    whole = _SseData().feed(stream)
    assert [json.loads(data) for data in whole[:2]] == [{"a": 1}, {"b": 2}] and whole[2] == "[DONE]"
    for cut in range(1, len(stream)):
        decoder = _SseData()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == whole
    decoder = _SseData()
    assert [data for byte in range(len(stream)) for data in decoder.feed(stream[byte:byte + 1])] == whole
