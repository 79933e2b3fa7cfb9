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
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from cove.config import Settings
from cove.egress.resolver import Resolver, host_addresses, parse_test_hosts
from cove.egress.tls import upstream_context
from cove.errors import InvalidRequest
from cove.service.audit import AuditLog
from cove.service.projects import ProjectPolicies
from cove.store.sealing import Sealer, is_sealed
from cove.tools.mcp import McpConfig
from cove.tools.mcp_client import Endpoint, McpFailure, McpSession, connect, url_parts


class McpServers:
    """The server-wide part: the rules, the resolver, the sealer, the audit trail."""

    def __init__(self, policies: ProjectPolicies, resolver: Resolver, sealer: Sealer, audit: AuditLog | None,
                 context: ssl.SSLContext | None = None) -> None:
        self.policies = policies
        self.resolver = resolver
        self.sealer = sealer
        self.audit = audit
        self.context = context

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
        self._sessions: dict[str, asyncio.Task[McpSession]] = {}

    async def session(self, config: McpConfig) -> McpSession:
        task = self._sessions.get(config.server_label)
        if task is None:
            task = self._sessions[config.server_label] = asyncio.create_task(self._connect(config))
        return await asyncio.shield(task)

    async def _connect(self, config: McpConfig) -> McpSession:
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
        return await connect(Endpoint(url, parts[0], parts[1], exactly, headers), self.servers.resolver,
                             self.servers.context)

    def _open(self, value: str) -> str:
        """A secret as the request gave it, or as its stored (sealed) copy holds it (a queued response)."""
        return self.servers.sealer.open(value, f"response:{self.response_id}") if is_sealed(value) else value

    def record(self, config: Any, tool: str, seconds: float, outcome: str) -> None:
        if self.servers.audit is None:
            return
        parts = url_parts(str(config.server_url))
        self.servers.audit.record(self.project, self.response_id, "mcp_call", {
            "server_label": config.server_label, "server": f"{parts[0]}:{parts[1]}" if parts else "",
            "tool": tool, "duration_ms": round(seconds * 1000, 3), "outcome": outcome}, response_id=self.response_id)

    async def aclose(self) -> None:
        for task in self._sessions.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                await task.result().close()
            else:
                task.cancel()
        self._sessions.clear()
