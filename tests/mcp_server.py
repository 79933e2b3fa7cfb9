"""A real MCP server for the tests, on 127.0.0.1: the ``mcp`` SDK's ``MCPServer`` (FastMCP in mcp 1) over
Streamable HTTP at ``/mcp`` and over SSE at ``/sse``, with a quick tool, a slow one and a failing one.

It records every request's headers, so a test can see what Cove sent (an ``Authorization`` header)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from tests.polling import eventually

MCP_HOST = "mcp.test"
"""The name tests give the server (``COVE_EGRESS_TEST_HOSTS`` maps it to 127.0.0.1)."""


def _tools() -> MCPServer:
    server = MCPServer("cove-test")

    @server.tool(description="Adds two integers.")
    def add(a: int, b: int) -> str:
        started = time.perf_counter()
        result = a + b
        return f"{result} (server time {(time.perf_counter() - started) * 1000:.4f} ms)"

    @server.tool(description="Waits, then says how long.")
    async def slow(seconds: float = 0.5) -> str:
        await asyncio.sleep(seconds)  # the scenario: a tool that takes its time
        return f"slept {seconds}"

    @server.tool(description="Always fails.")
    def broken() -> str:
        raise RuntimeError("the tool broke on purpose")

    return server


class McpTestServer:
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.tool_calls = 0
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        mcp = _tools()
        http_app = mcp.streamable_http_app(transport_security=security, stateless_http=False)
        sse_app = mcp.sse_app(transport_security=security)
        routes = [Mount("/legacy", app=sse_app)]  # an older server's SSE transport: /legacy/sse

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with http_app.router.lifespan_context(http_app):
                yield

        inner = Starlette(routes=routes, lifespan=lifespan)
        recorder = self

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                recorder.headers.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
                if scope["path"].startswith("/mcp"):
                    await http_app(scope, receive, send)
                    return
            await inner(scope, receive, send)

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="none", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def url(self, path: str = "/mcp") -> str:
        return f"http://{MCP_HOST}:{self.port}{path}"

    def start(self) -> McpTestServer:
        self._thread.start()
        eventually(lambda: self._server.started, timeout=10, what="the MCP test server to start")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def saw(self, text: str) -> bool:
        return any(text in value for headers in self.headers for value in headers.values())


def tool_names(listing: Any) -> list[str]:
    return sorted(tool.name for tool in listing.tools)
