"""What Cove adds per hosted MCP call beyond the MCP server's own time, and the listing kept across turns.

An MCP server (the ``mcp`` SDK's ``MCPServer``, Streamable HTTP) runs in a subprocess on 127.0.0.1 and
times each request itself, from its arrival to the last byte of its answer. The real agent loop runs in
this process with the real MCP client and Cove's per-response connection (``service/mcp.py``), driven by
an in-process model that answers instantly with one ``bench__echo`` call per turn, then text.

Per call: Cove's time (from the ``mcp_call``'s start to its output, as audited) minus the server's time
for that ``tools/call`` request. Also printed: the loop's time per MCP turn beyond those calls, and how
many ``tools/list`` requests a chain of responses made (one: later responses reuse the listing).
Target: p50 <= 3 ms added per call.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from percentiles import p50_p95
from rich.console import Console

from cove.agent.request import CreateParams
from cove.egress.resolver import Resolver
from cove.service.mcp import McpServers, ResponseMcp
from cove.service.projects import ProjectPolicies, ProjectRules, Quotas
from cove.store.sealing import Sealer
from cove.testing.agent import run_turns
from cove.upstream.base import Finish, Model, ModelEvent, ModelRequest, TextDelta, ToolCallDelta, ToolCallStart, Usage

TURNS = 20
RESPONSES = 12
CHAIN = 5
TARGET_MS = 3.0
HOST = "bench-mcp.test"
console = Console()

SERVER = r'''
import json, sys, time
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

mcp = MCPServer("bench")

@mcp.tool(description="Echoes its text.")
def echo(text: str) -> str:
    return text

inner = mcp.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
timings = []

async def app(scope, receive, send):
    if scope["type"] != "http" or scope["path"] != "/mcp":
        if scope["type"] == "http" and scope["path"] == "/stats":
            body = json.dumps(timings).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await inner(scope, receive, send)
        return
    start = time.perf_counter()
    method = []

    async def recv():
        message = await receive()
        if message.get("type") == "http.request" and message.get("body"):
            try:
                method.append(json.loads(message["body"]).get("method"))
            except ValueError:
                pass
        return message

    async def snd(message):
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            timings.append([method[0] if method else None, (time.perf_counter() - start) * 1000])

    await inner(scope, recv, snd)

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''


class EchoModel(Model):
    """Calls ``bench__echo`` until it has done so ``TURNS`` times, then answers."""

    context_window = 1_000_000

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        last_user = max(i for i, item in enumerate(request.input) if item.get("role") == "user")
        done = sum(1 for item in request.input[last_user:] if item.get("type") == "function_call")
        if done < TURNS:
            yield ToolCallStart(0, f"call_{done}", "bench__echo")
            yield ToolCallDelta(0, json.dumps({"text": f"hello {done}"}))
            yield Finish("tool_calls", Usage(1, 1))
        else:
            yield TextDelta("done")
            yield Finish("stop", Usage(1, 1))


class Timed(ResponseMcp):
    """The response's connections, keeping each call's audited duration."""

    def __init__(self, servers: McpServers) -> None:
        super().__init__(servers, "bench", "resp_bench")
        self.calls_ms: list[float] = []

    def record(self, config: Any, tool: str, seconds: float, outcome: str) -> None:
        assert outcome == "completed", outcome
        self.calls_ms.append(seconds * 1000)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main() -> int:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    url = f"http://{HOST}:{port}/mcp"
    try:
        _wait_for(f"http://127.0.0.1:{port}/stats")
        key = Path(tempfile.mkdtemp(prefix="cove-bench-mcp-")) / "secrets.key"
        rules = ProjectRules(Quotas(**dict.fromkeys(Quotas.__dataclass_fields__, 0)),
                             mcp_servers=(f"http://{HOST}:{port}/",))
        servers = McpServers(ProjectPolicies(rules), Resolver(hosts={HOST: "127.0.0.1"}), Sealer(key), None)
        tools = [{"type": "mcp", "server_label": "bench", "server_url": url, "require_approval": "never"}]
        added: list[float] = []
        loop_per_turn: list[float] = []
        for index in range(RESPONSES + 2):
            before = len(_stats(port))
            access = Timed(servers)
            start = time.perf_counter()
            response, _events = await run_turns(EchoModel(), CreateParams(model="echo", input="go", tools=tools),
                                                max_turns=TURNS + 1, mcp=access)
            wall = (time.perf_counter() - start) * 1000
            assert response["status"] == "completed", response
            server_calls = [ms for method, ms in _stats(port)[before:] if method == "tools/call"]
            assert len(server_calls) == len(access.calls_ms) == TURNS, (len(server_calls), len(access.calls_ms))
            if index >= 2:  # warm-up
                added.extend(cove - own for cove, own in zip(access.calls_ms, server_calls, strict=True))
                loop_per_turn.append((wall - sum(access.calls_ms)) / TURNS)
        listings_before = sum(1 for method, _ms in _stats(port) if method == "tools/list")
        history: list[dict[str, Any]] = []
        chain_ms = []
        for _ in range(CHAIN):
            access = Timed(servers)
            start = time.perf_counter()
            response, _events = await run_turns(EchoModel(), CreateParams(model="echo", input="again", tools=tools),
                                                history=history, max_turns=TURNS + 1, mcp=access)
            chain_ms.append((time.perf_counter() - start) * 1000)
            history = [*history, {"type": "message", "role": "user", "content": "again"}, *response["output"]]
        listings = sum(1 for method, _ms in _stats(port) if method == "tools/list") - listings_before
        await servers.aclose()
    finally:
        server.terminate()
        server.wait(timeout=10)
    p50, p95 = p50_p95(added)
    loop50, _ = p50_p95(loop_per_turn)
    verdict = "[green]PASS[/]" if p50 <= TARGET_MS else "[red]MISS[/]"
    console.print(f"Cove's time per MCP call beyond the server's own ({RESPONSES} responses x {TURNS} calls): "
                  f"p50 {p50:.2f} ms, p95 {p95:.2f} ms; target p50 <= {TARGET_MS:g} ms {verdict}")
    console.print(f"the agent loop's time per MCP turn beyond its call (model instant): p50 {loop50:.2f} ms")
    verdict = "[green]PASS[/]" if listings == 1 else "[red]MISS[/]"
    console.print(f"tools/list requests for a chain of {CHAIN} responses: {listings} (target 1) {verdict}; "
                  f"each response's wall time: {', '.join(f'{ms:.0f}' for ms in chain_ms)} ms")
    return 0


def _stats(port: int) -> list[tuple[str | None, float]]:
    return [(method, ms) for method, ms in httpx.get(f"http://127.0.0.1:{port}/stats", timeout=10).json()]


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # polling the server's start


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(asyncio.run(main()))
