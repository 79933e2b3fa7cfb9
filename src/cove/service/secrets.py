"""Domain secrets at rest: sealed wherever the store keeps them, opened only for the egress proxy.

Two places hold values. A response's request keeps its tools' ``network_policy`` with each value
sealed (a queued background response needs them after a restart) and shows ``[redacted]``; the
container made from it opens them again. A container keeps its secrets, with their placeholders, as
one sealed list, opened each time its sandbox is started so the proxy can put them in.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from cove.egress.policy import DomainSecret, EgressPolicy, parse_network_policy
from cove.errors import InvalidRequest, SandboxError
from cove.store.models import ContainerRow
from cove.store.sealing import SEALED_PREFIX, Sealer, SealingError

REDACTED = "[redacted]"
"""What a stored response shows in place of a domain secret's value."""


def network_limits(policy: dict[str, Any] | None) -> EgressPolicy | None:
    """The container's egress policy from OpenAI's ``network_policy`` shape (None: no network)."""
    return parse_network_policy(policy or {"type": "disabled"})


class SecretKeeper:
    def __init__(self, key_file: Path) -> None:
        self.sealer = Sealer(key_file)

    def seal_tools(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Seal the secret values in ``tools`` in place (as the store keeps them); returns the tools as shown."""
        shown = []
        for tool in tools:
            key = "environment" if isinstance(tool.get("environment"), dict) else "container"
            environment = tool.get(key)
            if not isinstance(environment, dict) or not isinstance(environment.get("network_policy"), dict):
                shown.append(tool)
                continue
            kept_policy, shown_policy = self._seal_policy(environment["network_policy"])
            tool[key] = {**environment, "network_policy": kept_policy}
            shown.append({**tool, key: {**environment, "network_policy": shown_policy}})
        return shown

    def _seal_policy(self, policy: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        kept, shown = copy.deepcopy(policy), copy.deepcopy(policy)
        for kept_secret, shown_secret in zip(kept.get("domain_secrets") or [], shown.get("domain_secrets") or [],
                                             strict=True):
            kept_secret["value"] = self.sealer.seal(kept_secret["value"])
            shown_secret["value"] = REDACTED
        return kept, shown

    def open_policy(self, policy: dict[str, Any]) -> dict[str, Any]:
        """``policy`` with the values that ``seal_tools`` sealed opened again."""
        secrets = policy.get("domain_secrets")
        if not isinstance(secrets, list):
            return policy
        opened = []
        for index, secret in enumerate(secrets):
            value = secret.get("value") if isinstance(secret, dict) else None
            if isinstance(value, str) and value.startswith(SEALED_PREFIX):
                try:
                    secret = {**secret, "value": self.sealer.open(value)}
                except SealingError as exc:
                    raise InvalidRequest(str(exc), param=f"network_policy.domain_secrets[{index}].value") from exc
            opened.append(secret)
        return {**policy, "domain_secrets": opened}

    def seal_container(self, egress: EgressPolicy | None) -> str | None:
        """What a container row keeps of its secrets (values and placeholders), or None without any."""
        if egress is None or not egress.domain_secrets:
            return None
        return self.sealer.seal(json.dumps([
            {"domain": s.domain, "name": s.name, "value": s.value, "placeholder": s.placeholder}
            for s in egress.domain_secrets]))

    def container_egress(self, row: ContainerRow) -> EgressPolicy | None:
        """The container's policy as the proxy enforces it, its secrets opened."""
        egress = network_limits(row.network_policy)
        if egress is None or row.secrets is None:
            return egress
        try:
            opened = json.loads(self.sealer.open(row.secrets))
        except SealingError as exc:
            raise SandboxError(f"Container '{row.id}' has domain secrets this server cannot open: {exc} "
                               "(was COVE_SECRETS_KEY_FILE changed?).") from exc
        return EgressPolicy(egress.allowed_domains, tuple(DomainSecret(**item) for item in opened))
