"""What each project may use, as the operator decides (``COVE_PROJECTS_FILE``, TOML)::

    [projects.analysts]                     # the project of a key in COVE_API_KEYS (key=project)
    tools = ["function", "code_interpreter"]  # tool types it may use; absent: every tool

Requests naming a tool their project may not use are refused with 400 naming the tool.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cove.errors import InvalidRequest


@dataclass(frozen=True)
class ProjectRules:
    tools: frozenset[str] | None = None
    """Tool types the project may use; None: all of them."""


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
            unknown = set(table) - {"tools"}
            if unknown:
                raise ValueError(f"{path}: project {project!r} has unknown settings {sorted(unknown)}")
            tools = table.get("tools")
            if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, str) for t in tools)):
                raise ValueError(f"{path}: projects.{project}.tools must be a list of tool types")
            rules[project] = ProjectRules(frozenset(tools) if tools is not None else None)
        return cls(rules)

    def check_tools(self, project: str, tools: list[dict[str, Any]]) -> None:
        allowed = self.rules.get(project, ProjectRules()).tools
        if allowed is None:
            return
        for index, tool in enumerate(tools):
            if tool.get("type") not in allowed:
                raise InvalidRequest(f"This project may not use the {tool.get('type')!r} tool.",
                                     param=f"tools[{index}].type", code="tool_not_allowed")
