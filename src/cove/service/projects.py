"""What each project may use, as the operator decides (``COVE_PROJECTS_FILE``, TOML)::

    [projects.analysts]                     # the project of a key in COVE_API_KEYS (key=project)
    tools = ["function", "code_interpreter"]  # tool types it may use; absent: every tool
    allowed_domains = ["*.internal.example"]  # the most a network_policy may allow; absent: no limit
    domain_secrets = false                  # may its policies carry domain secrets; absent: yes

Requests naming a tool, or allowing a domain, beyond their project's rules are refused with 400
naming the tool or the domain.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cove.egress.policy import EgressPolicy
from cove.errors import InvalidRequest
from cove.tools.registry import TOOLS


@dataclass(frozen=True)
class ProjectRules:
    tools: frozenset[str] | None = None
    """Tool types the project may use; None: all of them."""
    allowed_domains: EgressPolicy | None = None
    """The ceiling of what a network policy may allow (as a policy, for its matching); None: none set."""
    domain_secrets: bool = True
    """Whether its policies may carry domain secrets (and so have their HTTPS to those domains intercepted)."""


class ProjectPolicies:
    def __init__(self, rules: dict[str, ProjectRules] | None = None) -> None:
        self.rules = rules or {}

    @classmethod
    def load(cls, path: Path | None) -> ProjectPolicies:
        if path is None:
            return cls()
        with path.open("rb") as handle:
            document = tomllib.load(handle)
        rules = {}
        for project, table in (document.get("projects") or {}).items():
            unknown = set(table) - {"tools", "allowed_domains", "domain_secrets"}
            if unknown:
                raise ValueError(f"{path}: project {project!r} has unknown settings {sorted(unknown)}")
            tools = table.get("tools")
            if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, str) for t in tools)):
                raise ValueError(f"{path}: projects.{project}.tools must be a list of tool types")
            unknown_tools = sorted(set(tools or ()) - TOOLS.types)
            if unknown_tools:
                raise ValueError(f"{path}: projects.{project}.tools names unknown tool types {unknown_tools} "
                                 f"(known: {', '.join(sorted(TOOLS.types))})")
            ceiling = table.get("allowed_domains")
            secrets = table.get("domain_secrets", True)
            if not isinstance(secrets, bool):
                raise ValueError(f"{path}: projects.{project}.domain_secrets must be true or false")
            rules[project] = ProjectRules(frozenset(tools) if tools is not None else None,
                                          EgressPolicy(tuple(ceiling)) if ceiling is not None else None, secrets)
        return cls(rules)

    def check_tools(self, project: str, tools: list[dict[str, Any]]) -> None:
        allowed = self.rules.get(project, ProjectRules()).tools
        if allowed is None:
            return
        for index, tool in enumerate(tools):
            if tool.get("type") not in allowed:
                raise InvalidRequest(f"This project may not use the {tool.get('type')!r} tool.",
                                     param=f"tools[{index}].type", code="tool_not_allowed")

    def check_network(self, project: str, policy: EgressPolicy | None, param: str) -> None:
        """Every domain a policy allows must be within the project's ceiling; secrets only if allowed."""
        rules = self.rules.get(project, ProjectRules())
        if policy is not None and policy.domain_secrets and not rules.domain_secrets:
            raise InvalidRequest("This project may not use domain secrets.", param=f"{param}.domain_secrets",
                                 code="domain_secrets_not_allowed")
        ceiling = rules.allowed_domains
        if policy is None or ceiling is None:
            return
        for index, domain in enumerate(policy.allowed_domains):
            if not _within(ceiling, domain):
                raise InvalidRequest(f"This project may not allow {domain!r}: the operator allows at most "
                                     f"{', '.join(ceiling.allowed_domains)}.",
                                     param=f"{param}.allowed_domains[{index}]", code="domain_not_allowed")


def _within(ceiling: EgressPolicy, domain: str) -> bool:
    """A name is within the ceiling if the ceiling allows it; a wildcard, if a ceiling wildcard covers it."""
    if not domain.startswith("*."):
        return ceiling.allows(domain)
    inner = domain[2:]
    return any(entry.startswith("*.") and (inner == entry[2:] or inner.endswith("." + entry[2:]))
               for entry in ceiling.allowed_domains)
