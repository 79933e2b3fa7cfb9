"""Where a project's MCP tools may connect, with what secrets, and the record of every call.

The operator decides where: a project's ``mcp_servers`` patterns in the projects file (URL prefixes, or
``*`` for any https URL of a public host; by default ``*``). A request naming a server outside them is a
400 before anything runs. At connection time the name is resolved and checked as the egress proxy checks
a container's destination (``tools/mcp_client.py``): only a URL under a prefix the operator wrote may
resolve to a private address.

``authorization`` and ``headers`` are secrets: sealed in the stored request for the response
(``SecretKeeper.seal_tools``), shown as ``[redacted]``, opened here only to connect, and never written
to a log or the audit trail. Each call is audited (server, tool, duration, outcome) in the trail kept
under the response's id (``cove audit RESPONSE_ID``).

Connections are kept open between responses (``IDLE_SECONDS``) and shared by the responses of one
project that name the same URL with the same secrets (a hash of them is part of the key, so another
project, or other credentials, never use them): a chain's later turns pay no handshake, and the SDK's
own listing (which it makes once per connection to validate results) is not repeated. A connection
whose transport failed is dropped, so the next call opens a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
import ssl
import time
from dataclasses import dataclass
from typing import Any

from cove.config import Settings
from cove.egress.resolver import Resolver, host_addresses, parse_test_hosts
from cove.egress.tls import upstream_context
from cove.errors import InvalidRequest
from cove.service.audit import AuditLog
from cove.service.projects import ProjectPolicies
from cove.store.sealing import Sealer, is_sealed
from cove.tools.mcp import McpConfig
from cove.tools.mcp_client import Endpoint, McpFailure, McpSession, connect, connect_stdio, url_parts
from cove.tools.workspace import Workspace

IDLE_SECONDS = 300.0
"""How long an unused connection stays open for the next response."""


@dataclass
class _Pooled:
    opening: asyncio.Task[McpSession]
    used_at: float


class McpServers:
    """The server-wide part: the rules, the resolver, the sealer, the audit trail, the open connections."""

    def __init__(self, policies: ProjectPolicies, resolver: Resolver, sealer: Sealer, audit: AuditLog | None,
                 context: ssl.SSLContext | None = None) -> None:
        self.policies = policies
        self.resolver = resolver
        self.sealer = sealer
        self.audit = audit
        self.context = context
        self._pool: dict[str, _Pooled] = {}

    async def session(self, project: str, endpoint: Endpoint) -> McpSession:
        """An open connection for ``project`` to ``endpoint`` (with its secrets), shared or opened now."""
        await self._close_idle()
        key = hashlib.sha256(json.dumps([project, endpoint.url, endpoint.named_exactly, sorted(
            endpoint.headers.items())]).encode()).hexdigest()
        pooled = self._pool.get(key)
        if pooled is None or (pooled.opening.done() and (pooled.opening.cancelled() or pooled.opening.exception()
                                                         or pooled.opening.result().broken)):
            pooled = self._pool[key] = _Pooled(asyncio.create_task(connect(endpoint, self.resolver, self.context)),
                                               time.monotonic())
        pooled.used_at = time.monotonic()
        try:
            return await asyncio.shield(pooled.opening)
        except McpFailure:
            if self._pool.get(key) is pooled:
                del self._pool[key]  # the next response tries again
            raise

    async def _close_idle(self) -> None:
        now = time.monotonic()
        for key, pooled in list(self._pool.items()):
            if now - pooled.used_at > IDLE_SECONDS and pooled.opening.done():
                del self._pool[key]
                await _close(pooled)

    async def aclose(self) -> None:
        pooled, self._pool = list(self._pool.values()), {}
        for entry in pooled:
            await _close(entry)

    @classmethod
    def from_settings(cls, policies: ProjectPolicies, sealer: Sealer, audit: AuditLog | None,
                      settings: Settings) -> McpServers:
        resolver = Resolver(hosts=parse_test_hosts(settings.egress_test_hosts), forbidden=host_addresses())
        extra_ca = str(settings.egress_ca_file) if settings.egress_ca_file else None
        return cls(policies, resolver, sealer, audit, upstream_context(extra_ca))

    def check(self, project: str, tools: list[dict[str, Any]]) -> None:
        """Every ``mcp`` tool's ``server_url`` within the project's ``mcp_servers`` (else a 400 naming it)."""
        for index, tool in enumerate(tools):
            if isinstance(tool, dict) and tool.get("type") == "mcp" and isinstance(tool.get("server_url"), str):
                self.named_exactly(project, tool["server_url"], f"tools[{index}].server_url")

    def named_exactly(self, project: str, url: str, param: str) -> bool:
        """Whether ``url`` is under a prefix the operator wrote (True) or allowed by ``*`` (False)."""
        patterns = self.policies.of(project).mcp_servers
        if any(pattern != "*" and url.startswith(pattern) for pattern in patterns):
            return True
        if "*" in patterns and url.startswith("https://"):
            return False
        allowed = ", ".join("any https URL of a public host" if p == "*" else p for p in patterns) or "none"
        raise InvalidRequest(f"This project may not connect to that MCP server; its MCP servers may only be at: "
                             f"{allowed}.", param=param, code="url_not_allowed")

    def for_response(self, project: str, response_id: str) -> ResponseMcp:
        return ResponseMcp(self, project, response_id)


class ResponseMcp:
    """One response's connections (one per server, opened on first use, closed when it ends)."""

    def __init__(self, servers: McpServers, project: str, response_id: str) -> None:
        self.servers = servers
        self.project = project
        self.response_id = response_id
        self._stdio: dict[str, asyncio.Task[McpSession]] = {}

    async def session(self, config: McpConfig, workspace: Workspace) -> McpSession:
        if config.command is not None:  # in the response's container, for this response alone
            task = self._stdio.get(config.server_label)
            if task is None or (task.done() and not task.cancelled() and task.exception() is None
                                and task.result().broken):
                task = self._stdio[config.server_label] = asyncio.create_task(connect_stdio(workspace,
                                                                                            config.command))
            return await asyncio.shield(task)
        url = config.server_url or ""
        parts = url_parts(url)
        if parts is None:
            raise McpFailure({}, "the server_url is not an http(s) URL")
        try:
            exactly = self.servers.named_exactly(self.project, url, "server_url")
        except InvalidRequest as exc:  # the operator narrowed mcp_servers since the request was made
            raise McpFailure({"type": "http_error", "code": 403, "message": exc.message}, exc.message) from None
        headers = {name: self._open(value) for name, value in (config.headers or {}).items()}
        if config.authorization:
            headers["Authorization"] = f"Bearer {self._open(config.authorization)}"
        return await self.servers.session(self.project, Endpoint(url, parts[0], parts[1], exactly, headers))

    def _open(self, value: str) -> str:
        """A secret as the request gave it, or as its stored (sealed) copy holds it (a queued response)."""
        return self.servers.sealer.open(value, f"response:{self.response_id}") if is_sealed(value) else value

    def record(self, config: Any, tool: str, seconds: float, outcome: str) -> None:
        if self.servers.audit is None:
            return
        parts = url_parts(str(config.server_url))
        server = f"{parts[0]}:{parts[1]}" if parts else f"stdio: {shlex.join(config.command or [])}"[:200]
        self.servers.audit.record(self.project, self.response_id, "mcp_call", {
            "server_label": config.server_label, "server": server,
            "tool": tool, "duration_ms": round(seconds * 1000, 3), "outcome": outcome}, response_id=self.response_id)


    async def aclose(self) -> None:
        """Ends the response's servers in its container (connections to URLs stay pooled)."""
        tasks, self._stdio = list(self._stdio.values()), {}
        for task in tasks:
            await _close(_Pooled(task, 0.0))


async def _close(pooled: _Pooled) -> None:
    if not pooled.opening.done():
        pooled.opening.cancel()
    elif not pooled.opening.cancelled() and pooled.opening.exception() is None:
        await pooled.opening.result().close()
