"""Domain secrets (and MCP servers' headers) at rest: sealed wherever the store keeps them, opened only for
the egress proxy (or an MCP connection, ``service/mcp.py``).

Two places hold values. A response's request keeps every ``network_policy`` in its tools with each
value sealed for that response (a queued background response needs them after a restart) and shows
``[redacted]``; the container made from it opens them again. A container keeps its secrets, with
their placeholders, as one list sealed for that container, opened each time its sandbox is started
so the proxy can put them in.

Sealed values are the server's alone: one a client sends (say, lifted from a copy of the database)
is refused, so the server's key never opens anything on a client's behalf.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from cove.egress.policy import DomainSecret, EgressPolicy, parse_network_policy
from cove.errors import InvalidRequest, SandboxError
from cove.store.models import ContainerRow
from cove.store.sealing import Sealer, SealingError, is_sealed

REDACTED = "[redacted]"
"""What a stored response shows in place of a domain secret's value."""


def network_limits(policy: dict[str, Any] | None) -> EgressPolicy | None:
    """The container's egress policy from OpenAI's ``network_policy`` shape (None: no network)."""
    return parse_network_policy(policy or {"type": "disabled"})


def refuse_sealed(data: Any, param: str) -> None:
    """Refuses a request that carries a sealed value anywhere in ``data`` (400 naming where)."""
    if is_sealed(data):
        raise InvalidRequest("Sealed values are the server's own and are not accepted: give the secret's value.",
                             param=param, code="invalid_value")
    if isinstance(data, dict):
        for key, value in data.items():
            refuse_sealed(value, f"{param}.{key}")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            refuse_sealed(value, f"{param}[{index}]")


def _response_purpose(response_id: str) -> str:
    return f"response:{response_id}"


class SecretKeeper:
    def __init__(self, key_file: Path) -> None:
        self.sealer = Sealer(key_file)

    def seal_tools(self, tools: list[dict[str, Any]], response_id: str) -> list[dict[str, Any]]:
        """Seals, for ``response_id``, the secret values of every ``network_policy`` anywhere in ``tools``,
        in place (as the store keeps them); returns the tools as shown, values redacted."""
        shown = []
        for index, tool in enumerate(tools):
            kept, shown_tool = self._walk(tool, _response_purpose(response_id))
            if isinstance(kept, dict) and kept.get("type") == "mcp":
                self._seal_mcp(kept, shown_tool, _response_purpose(response_id))
            tools[index] = kept
            shown.append(shown_tool)
        return shown

    def _seal_mcp(self, kept: dict[str, Any], shown: dict[str, Any], purpose: str) -> None:
        """An ``mcp`` tool's ``authorization`` and ``headers`` values: sealed where kept, redacted where shown
        (the header names stay: they say what was sent, not with what)."""
        if isinstance(kept.get("authorization"), str):
            kept["authorization"] = self.sealer.seal(kept["authorization"], purpose)
            shown["authorization"] = REDACTED
        headers = kept.get("headers")
        if isinstance(headers, dict):
            kept["headers"] = {name: self.sealer.seal(value, purpose) if isinstance(value, str) else value
                               for name, value in headers.items()}
            shown["headers"] = dict.fromkeys(headers, REDACTED)

    def _walk(self, node: Any, purpose: str) -> tuple[Any, Any]:
        """(kept, shown) copies of ``node`` with each network policy's secrets sealed / redacted."""
        if isinstance(node, list):
            pairs = [self._walk(item, purpose) for item in node]
            return [kept for kept, _ in pairs], [shown for _, shown in pairs]
        if not isinstance(node, dict):
            return node, node
        kept, shown = {}, {}
        for key, value in node.items():
            if key == "network_policy" and isinstance(value, dict):
                kept[key], shown[key] = self._seal_policy(value, purpose)
            else:
                kept[key], shown[key] = self._walk(value, purpose)
        return kept, shown

    def _seal_policy(self, policy: dict[str, Any], purpose: str) -> tuple[dict[str, Any], dict[str, Any]]:
        kept, shown = copy.deepcopy(policy), copy.deepcopy(policy)
        secrets = kept.get("domain_secrets")
        if not isinstance(secrets, list):
            return kept, shown
        for kept_secret, shown_secret in zip(secrets, shown["domain_secrets"], strict=True):
            if isinstance(kept_secret, dict) and isinstance(kept_secret.get("value"), str):
                kept_secret["value"] = self.sealer.seal(kept_secret["value"], purpose)
                shown_secret["value"] = REDACTED
        return kept, shown

    def open_policy(self, policy: dict[str, Any], response_id: str) -> dict[str, Any]:
        """``policy`` with the values ``seal_tools`` sealed for ``response_id`` opened again."""
        secrets = policy.get("domain_secrets")
        if not isinstance(secrets, list):
            return policy
        opened = []
        for index, secret in enumerate(secrets):
            value = secret.get("value") if isinstance(secret, dict) else None
            if is_sealed(value):
                assert isinstance(value, str)
                try:
                    secret = {**secret, "value": self.sealer.open(value, _response_purpose(response_id))}
                except SealingError as exc:
                    raise SandboxError(f"A domain secret of response '{response_id}' cannot be opened: {exc} "
                                       f"(network_policy.domain_secrets[{index}]; was COVE_SECRETS_KEY_FILE "
                                       "changed?).") from exc
            opened.append(secret)
        return {**policy, "domain_secrets": opened}

    def seal_container(self, egress: EgressPolicy | None, container_id: str) -> str | None:
        """What a container row keeps of its secrets (values and placeholders), or None without any."""
        if egress is None or not egress.domain_secrets:
            return None
        return self.sealer.seal(json.dumps([
            {"domain": s.domain, "name": s.name, "value": s.value, "placeholder": s.placeholder}
            for s in egress.domain_secrets]), f"container:{container_id}")

    def container_egress(self, row: ContainerRow) -> EgressPolicy | None:
        """The container's policy as the proxy enforces it, its secrets opened."""
        egress = network_limits(row.network_policy)
        if egress is None or row.secrets is None:
            return egress
        try:
            opened = json.loads(self.sealer.open(row.secrets, f"container:{row.id}"))
        except SealingError as exc:
            raise SandboxError(f"Container '{row.id}' has domain secrets this server cannot open: {exc} "
                               "(was COVE_SECRETS_KEY_FILE changed?).") from exc
        return EgressPolicy(egress.allowed_domains, tuple(DomainSecret(**item) for item in opened))
