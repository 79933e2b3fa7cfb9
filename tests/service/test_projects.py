"""The projects file: what each project may use, checked against the tool registry when it is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import InvalidRequest
from cove.service.projects import ProjectPolicies


def test_tool_types_are_checked_against_the_registry(tmp_path: Path) -> None:
    rules = tmp_path / "projects.toml"
    rules.write_text('[projects.analysts]\ntools = ["function", "shel"]\n')
    with pytest.raises(ValueError, match=r"unknown tool types \['shel'\]"):
        ProjectPolicies.load(rules)
    rules.write_text('[projects.analysts]\ntools = ["function", "code_interpreter"]\n')
    policies = ProjectPolicies.load(rules)
    policies.check_tools("analysts", [{"type": "code_interpreter"}])
    with pytest.raises(InvalidRequest) as info:
        policies.check_tools("analysts", [{"type": "function", "name": "f"}, {"type": "shell"}])
    assert (info.value.param, info.value.code) == ("tools[1].type", "tool_not_allowed")
    policies.check_tools("others", [{"type": "shell"}])  # no rules: every tool
