"""Cove's side of a connection to a remote MCP server, through the ``mcp`` SDK's client.

The server's URL is a tenant's, so it is hostile to the network Cove sits in: its name is resolved once
and every address checked as the egress proxy checks a container's (``cove.egress.outbound``), and the
HTTP client connects to the checked address only (``_Pinned``), with the name as ``Host`` and TLS server
name. The SDK follows redirects only within the endpoint's origin, and ``_Pinned`` refuses any request to
another host, so no redirect leads elsewhere.

Streamable HTTP is tried first; where it fails (an older server speaking the SSE transport answers a POST
to its SSE endpoint with 405), SSE is tried, and if both fail the Streamable HTTP failure is reported.

Each connection runs in a task of its own, which enters and leaves the SDK client's context (its anyio
task group must be left by the task that entered it), while calls come from the response's tool tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
import httpx2
import mcp_types
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from cove.egress.outbound import checked_addresses
from cove.egress.resolver import Refused, Resolver
from cove.sandbox.base import Channel
from cove.tools.workspace import Workspace

CONNECT_TIMEOUT = 10.0
"""Seconds a connection (resolution, TCP, TLS, the MCP handshake) may take."""
CALL_TIMEOUT = 300.0
"""Seconds one tool call may take."""


class McpFailure(Exception):
    """A listing or a call that failed; ``error`` is the ``mcp_call`` item's ``error`` object (the SDK's
    ``McpToolCallError``: an HTTP error, a protocol error, or the tool's own failure)."""

    def __init__(self, error: dict[str, Any], message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


def http_error(code: int, message: str) -> McpFailure:
    return McpFailure({"type": "http_error", "code": code, "message": message}, message)


def protocol_error(code: int, message: str) -> McpFailure:
    return McpFailure({"type": "mcp_protocol_error", "code": code, "message": message}, message)


@dataclass(frozen=True)
class Endpoint:
    """Where a server is, as the service allowed it (``service/mcp.py``)."""

    url: str
    host: str
    port: int
    named_exactly: bool
    """Under a pattern the operator wrote: its name may resolve to a private address."""
    headers: dict[str, str]
    """``headers`` and ``authorization`` (as a bearer token), opened: secrets, never logged."""


class McpAccess(Protocol):
    """What MCP calls run with, per response: the service checks where a server may be and opens its
    sealed secrets, connects once per server and response, and audits every call."""

    async def session(self, config: Any, workspace: Workspace) -> McpSession:
        """The response's connection to the server an ``mcp`` tool entry names (opened on first use; a
        ``command`` runs in ``workspace``, the response's container)."""

    def record(self, config: Any, tool: str, seconds: float, outcome: str) -> None:
        """Audits one call: server, tool, duration, outcome (never arguments, headers or output)."""


class _Pinned(httpx2.AsyncBaseTransport):
    """Sends every request for ``host`` to ``address`` (checked), with ``host`` as the TLS server name; a
    request for any other host is refused."""

    def __init__(self, host: str, address: str, context: ssl.SSLContext | None) -> None:
        self.host = host
        self.address = address
        self.inner = httpx2.AsyncHTTPTransport(verify=context or True, trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.host != self.host:
            raise httpx2.ConnectError(f"refused: {request.url.host} is not the MCP server's host")
        request.url = request.url.copy_with(host=self.address)
        request.extensions = {**request.extensions, "sni_hostname": self.host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class McpSession:
    """One open connection; ``close`` ends it. Safe to use from several tasks at once."""

    def __init__(self, client: Client, done: asyncio.Event, task: asyncio.Task[None]) -> None:
        self.client = client
        self._done = done
        self._task = task

    @property
    def broken(self) -> bool:
        """Whether the connection ended (its transport failed, or it was closed): not to be used again."""
        return self._task.done() or self._done.is_set()

    async def list_tools(self) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        try:
            for _page in range(100):
                result = await self.client.list_tools(cursor=cursor)
                tools.extend(tool.model_dump(by_alias=True, exclude_none=True, mode="json")
                             for tool in result.tools)
                cursor = result.next_cursor
                if not cursor:
                    break
        except MCPError as exc:
            raise protocol_error(exc.code, exc.message) from None
        return tools

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        """The tool's output as text; raises ``McpFailure`` when the tool or the server failed."""
        try:
            result = await self.client.call_tool(name, arguments, read_timeout_seconds=CALL_TIMEOUT)
        except MCPError as exc:
            raise protocol_error(exc.code, exc.message) from None
        except (httpx2.HTTPError, OSError, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            self._done.set()  # the transport is gone: the next call opens another connection
            raise http_error(502, f"the MCP server failed ({type(exc).__name__})") from None
        content = [part.model_dump(by_alias=True, exclude_none=True, mode="json") for part in result.content]
        text = "\n".join(part.get("text", "") if part.get("type") == "text" else f"[{part.get('type')} content]"
                         for part in content)
        if result.is_error:
            raise McpFailure({"type": "mcp_tool_execution_error", "content": content}, text or "the tool failed")
        return text

    async def close(self) -> None:
        self._done.set()
        with contextlib.suppress(Exception):
            await self._task


async def connect(endpoint: Endpoint, resolver: Resolver, context: ssl.SSLContext | None = None) -> McpSession:
    """Opens a connection: Streamable HTTP, else SSE; raises ``McpFailure`` saying why none opened."""
    try:
        addresses = await checked_addresses(resolver, endpoint.host, endpoint.port,
                                            named_exactly=endpoint.named_exactly)
    except Refused as exc:
        raise http_error(exc.status, f"{endpoint.host} was refused: {exc.reason}") from None
    failure = http_error(502, f"could not connect to {endpoint.host}")
    for address in addresses:
        try:
            return await _open(functools.partial(_streamable, endpoint, address, context))
        except McpFailure as exc:
            failure = exc
        try:  # an older server, speaking SSE
            return await _open(functools.partial(_sse, endpoint, address, context))
        except McpFailure:
            pass  # the Streamable HTTP failure says more
    raise failure


@contextlib.asynccontextmanager
async def _streamable(endpoint: Endpoint, address: str, context: ssl.SSLContext | None) -> AsyncIterator[Any]:
    client = _http_client(endpoint, address, context)
    async with client, streamable_http_client(endpoint.url, http_client=client) as streams:
        yield streams


@contextlib.asynccontextmanager
async def _sse(endpoint: Endpoint, address: str, context: ssl.SSLContext | None) -> AsyncIterator[Any]:
    def factory(headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None,
                auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
        return _http_client(endpoint, address, context)

    async with sse_client(endpoint.url, headers=endpoint.headers, timeout=CONNECT_TIMEOUT,
                          sse_read_timeout=CALL_TIMEOUT, httpx_client_factory=factory) as streams:
        yield streams


async def connect_stdio(workspace: Workspace, argv: list[str]) -> McpSession:
    """Starts ``argv`` in the container and speaks MCP over its stdin and stdout (JSON-RPC, one message a
    line); the program ends when the session closes."""
    return await _open(functools.partial(_stdio, workspace, argv))


MAX_LINE = 16 << 20
"""Bytes one message from a server in a container may take (it is hostile: its memory is not Cove's)."""


@contextlib.asynccontextmanager
async def _stdio(workspace: Workspace, argv: list[str]) -> AsyncIterator[Any]:
    async with workspace.channel(argv) as channel:
        read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
        async with anyio.create_task_group() as group:
            group.start_soon(_read_lines, channel, read_writer)
            group.start_soon(_write_lines, channel, write_reader)
            try:
                yield read_stream, write_stream
            finally:
                group.cancel_scope.cancel()


async def _read_lines(channel: Channel, sink: anyio.abc.ObjectSendStream[SessionMessage | Exception]) -> None:
    buffer = b""
    async with sink:
        while chunk := await channel.read():
            *lines, buffer = (buffer + chunk).split(b"\n")
            if len(buffer) > MAX_LINE:
                await sink.send(ValueError("the MCP server sent a message larger than 16 MiB"))
                return
            for line in lines:
                if line.strip():
                    try:
                        message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                    except ValueError as exc:
                        await sink.send(exc)
                        continue
                    await sink.send(SessionMessage(message))


async def _write_lines(channel: Channel, source: anyio.abc.ObjectReceiveStream[SessionMessage]) -> None:
    async with source:
        async for message in source:
            await channel.write(message.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n")


def _http_client(endpoint: Endpoint, address: str, context: ssl.SSLContext | None) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=_Pinned(endpoint.host, address, context), headers=endpoint.headers,
                              timeout=httpx2.Timeout(CONNECT_TIMEOUT, read=CALL_TIMEOUT), trust_env=False)


async def _open(transport: Callable[[], Any]) -> McpSession:
    """Runs the SDK client in a task of its own until ``close``; returns once it is connected."""
    ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def hold() -> None:
        try:
            async with Client(transport(), read_timeout_seconds=CALL_TIMEOUT, cache=None) as client:
                ready.set_result(client)
                await done.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(_failure(exc))

    task = asyncio.create_task(hold())
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            client = await ready
    except TimeoutError:
        done.set()
        task.cancel()
        raise http_error(504, "the MCP server did not answer in time") from None
    except BaseException:
        task.cancel()
        raise
    return McpSession(client, done, task)


def _failure(exc: BaseException) -> McpFailure:
    """What went wrong connecting, as the client may read it (an exception group's first cause)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, McpFailure):
        return exc
    if isinstance(exc, httpx2.HTTPStatusError):
        return http_error(exc.response.status_code, f"the MCP server answered HTTP {exc.response.status_code}")
    if isinstance(exc, MCPError):
        return protocol_error(exc.code, exc.message)
    return http_error(502, f"could not connect to the MCP server ({type(exc).__name__}: {exc})"[:500])


def url_parts(url: str) -> tuple[str, int] | None:
    """The host and port of an http(s) URL without credentials, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    return parts.hostname, port
