"""JSON posts to a plain-HTTP model upstream over pooled HTTP/1.1 connections, parsed by ``h11``.

Why not the ``openai`` SDK: against a fast local upstream (vLLM, llama.cpp, Ollama on the same host
or network), the SDK's request building, its httpx/httpcore/anyio stack and its stream decoding
were more than half of the server's CPU per response; this client does the same exchange in about
a fifth of the CPU (``bench/README.md``). It is used where that cost matters and nothing else is
needed: ``http://`` upstreams without credentials or a query in the URL and without a proxy in the
environment (``usable``). Everything else (TLS, proxies, the Responses upstream) keeps the SDK.

What it keeps of the SDK: its retry policy (``should_retry``, ``retry_delay``), timeouts (connect
10 s, each read ``timeout``), and the shape of its errors (``StatusError`` carries what
``openai.APIStatusError`` does, and ``upstream/client.py: upstream_errors`` maps both the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import urllib.request
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import h11

from cove import __version__

MAX_IDLE = 100
"""Idle keep-alive connections kept per upstream (the SDK's own default)."""
MAX_RETRY_AFTER = 60.0
"""A ``retry-after`` longer than this is not waited for (the SDK's limit)."""
_READ_SIZE = 65536


class StatusError(Exception):
    """The upstream answered 4xx or 5xx: as ``openai.APIStatusError`` describes it, so that both map alike.
    ``body`` is the answer's ``error`` object (or the whole JSON, or its text); ``message`` is the SDK's
    ``Error code: 400 - <the error's message>``."""

    def __init__(self, status_code: int, text: str) -> None:
        self.status_code = status_code
        message = f"Error code: {status_code}"
        body: Any = text
        with contextlib.suppress(ValueError):
            data = json.loads(text)
            body = data.get("error", data) if isinstance(data, dict) else data
            said = body.get("message") if isinstance(body, dict) else None
            if isinstance(said, str) and said:
                message += f" - {said}"
        self.body = body
        self.message = message
        code = body.get("code") if isinstance(body, dict) else None
        self.code = None if code is None else str(code)
        super().__init__(message)


class Unreachable(Exception):
    """No answer: the connection failed, broke or timed out (after the retries). The cause is chained."""


class StreamFailed(Exception):
    """An ``error`` object inside the event stream (the SDK's ``APIError``)."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def usable(url: str) -> bool:
    """Whether ``url`` is an upstream this client serves as the SDK would: plain HTTP, no user or password
    (httpx would send them as basic auth), no query, and no proxy the environment sets for its host."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or "@" in parts.netloc or parts.query or parts.fragment:
        return False
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get("http") or proxies.get("all")):
        return True
    return bool(urllib.request.proxy_bypass(parts.hostname))


def should_retry(status: int, headers: dict[str, str]) -> bool:
    """The SDK's rule: what the upstream says (``x-should-retry``), else 408, 409, 429 and 5xx; never
    when it asks for a wait longer than ``MAX_RETRY_AFTER``."""
    after = _retry_after(headers)
    if after is not None and math.isfinite(after) and after > MAX_RETRY_AFTER:
        return False
    said = headers.get("x-should-retry")
    if said in ("true", "false"):
        return said == "true"
    return status in (408, 409, 429) or status >= 500


def retry_delay(retries_taken: int, headers: dict[str, str] | None) -> float:
    """The SDK's backoff: the upstream's ``retry-after(-ms)`` up to a minute, else 0.5 s doubling per
    retry up to 8 s, less up to a quarter of jitter."""
    after = _retry_after(headers or {})
    if after is not None and math.isfinite(after) and 0 < after <= MAX_RETRY_AFTER:
        return after
    return min(0.5 * 2.0 ** min(retries_taken, 1000), 8.0) * (1 - 0.25 * random.random())  # noqa: S311 - jitter


def _retry_after(headers: dict[str, str]) -> float | None:
    for name, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(name)
        if value is not None:
            with contextlib.suppress(ValueError):
                return float(value) / divisor
    return None


class _Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.http = h11.Connection(h11.CLIENT)
        self.reused = False

    async def send(self, request: h11.Request, body: bytes) -> None:
        self.writer.write(b"".join(self.http.send(event) or b""
                                   for event in (request, h11.Data(data=body), h11.EndOfMessage())))
        async with asyncio.timeout(self.timeout):
            await self.writer.drain()  # a body of megabytes may not fit the socket's buffer

    async def next_event(self) -> Any:
        while True:
            event = self.http.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(self.timeout):
                data = await self.reader.read(_READ_SIZE)
            self.http.receive_data(data)  # b"" is the end of the connection: h11 says whether that was fine

    async def body(self) -> bytes:
        """The rest of the answer's body, whole."""
        parts = []
        while not isinstance(event := await self.next_event(), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                parts.append(event.data)
        return b"".join(parts)

    @property
    def reusable(self) -> bool:
        return self.http.our_state is h11.DONE and self.http.their_state is h11.DONE

    def close(self) -> None:
        self.writer.close()


class JsonPoster:
    """POSTs JSON to one upstream and reads its answer as JSON, or as a stream of JSON events."""

    def __init__(self, base_url: str, api_key: str | None, *, max_retries: int, timeout: float,
                 connect_timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "", parts.port or 80
        self.path = parts.path.rstrip("/")
        self.headers = [("Host", parts.netloc), ("User-Agent", f"cove/{__version__}"),
                        ("Accept", "application/json"), ("Content-Type", "application/json"),
                        ("Authorization", f"Bearer {api_key or 'none'}")]
        self.max_retries = max_retries
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._idle: list[_Connection] = []

    async def post(self, path: str, params: dict[str, Any]) -> Any:
        """The answer's JSON, or for ``params["stream"]`` an async generator of its events' JSON
        (close it to hang up early). Raises ``StatusError``, ``Unreachable``; a stream also
        ``StreamFailed`` and ``json.JSONDecodeError``."""
        body = json.dumps(params).encode()
        request = h11.Request(method="POST", target=self.path + path,
                              headers=[*self.headers, ("Content-Length", str(len(body)))])
        for retries_taken in range(self.max_retries + 1):
            left = self.max_retries - retries_taken
            try:
                connection, answer = await self._exchange(request, body)
            except Unreachable:
                if not left:
                    raise
                await asyncio.sleep(retry_delay(retries_taken, None))
                continue
            if answer.status_code >= 400:
                text = await self._read_and_release(connection)
                headers = {name.decode().lower(): value.decode("latin-1") for name, value in answer.headers}
                if left and should_retry(answer.status_code, headers):
                    await asyncio.sleep(retry_delay(retries_taken, headers))
                    continue
                raise StatusError(answer.status_code, text.decode(errors="replace").strip())
            if params.get("stream"):
                return self._events(connection)
            return json.loads(await self._read_and_release(connection))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _exchange(self, request: h11.Request, body: bytes) -> tuple[_Connection, h11.Response]:
        """Sends the request and reads the answer's head. A kept-alive connection the upstream closed
        meanwhile is replaced at once (it never saw the request), not counted as a retry."""
        while True:
            connection = await self._connect()
            try:
                await connection.send(request, body)
                while not isinstance(event := await connection.next_event(), h11.Response):
                    pass  # 1xx informational answers
                return connection, event
            except (OSError, TimeoutError, h11.ProtocolError) as exc:
                connection.close()
                if connection.reused and not isinstance(exc, TimeoutError):
                    continue
                raise Unreachable(str(exc) or type(exc).__name__) from exc
            except BaseException:  # cancelled mid-exchange: the connection is in no state to reuse
                connection.close()
                raise

    async def _connect(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.reader.at_eof() and not connection.writer.is_closing():
                connection.reused = True
                return connection
            connection.close()
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port, limit=_READ_SIZE)
        except (OSError, TimeoutError) as exc:
            raise Unreachable(str(exc) or "the connection timed out") from exc
        return _Connection(reader, writer, self.timeout)

    async def _read_and_release(self, connection: _Connection) -> bytes:
        try:
            data = await connection.body()
        except (OSError, TimeoutError, h11.ProtocolError) as exc:
            connection.close()
            raise Unreachable(str(exc) or type(exc).__name__) from exc
        except BaseException:
            connection.close()
            raise
        self._release(connection)
        return data

    def _release(self, connection: _Connection) -> None:
        if connection.reusable and len(self._idle) < MAX_IDLE:
            connection.http.start_next_cycle()
            self._idle.append(connection)
        else:
            connection.close()

    async def _events(self, connection: _Connection) -> AsyncIterator[Any]:
        """Server-sent events' data as JSON until ``[DONE]`` or the end of the body; the connection goes
        back to the pool only when the body was read to its end."""
        finished = False
        try:
            decoder = _SseData()
            done = False
            while not isinstance(event := await connection.next_event(), h11.EndOfMessage):
                if not isinstance(event, h11.Data) or done:
                    continue
                for data in decoder.feed(event.data):
                    if data.startswith("[DONE]"):
                        done = True
                        break
                    parsed = json.loads(data)
                    if isinstance(parsed, dict) and parsed.get("error"):
                        error = parsed["error"]
                        message = error.get("message") if isinstance(error, dict) else None
                        raise StreamFailed(message if isinstance(message, str) and message
                                           else "An error occurred during streaming")
                    yield parsed
            finished = True
        except (OSError, TimeoutError, h11.ProtocolError) as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from exc
        finally:
            if finished:
                self._release(connection)
            else:  # abandoned or broken: hang up, so the upstream stops generating
                connection.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()


class _SseData:
    """The ``data`` of each server-sent event, from the body's bytes as they come (the SSE line rules:
    ``\\n``, ``\\r\\n`` or ``\\r`` end a line, a blank line ends an event, data lines join with ``\\n``)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        lines = self._buffer.splitlines(keepends=True)
        # An unfinished last line waits for more; so does a last "\r", whose "\n" may be in the next chunk.
        self._buffer = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        events = []
        for raw in lines:
            line = raw.rstrip(b"\r\n").decode()
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)
        return events
