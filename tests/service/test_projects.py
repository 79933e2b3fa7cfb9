"""The projects file: what each project may use and its quotas, checked when it is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.config import Settings
from cove.errors import InvalidRequest, NotFound, PermissionDenied
from cove.service.projects import ProjectPolicies, Quotas

SETTINGS = Settings(max_containers=1000, background_workers=8, disk_limit="10g")


def _load(tmp_path: Path, text: str) -> ProjectPolicies:
    rules = tmp_path / "projects.toml"
    rules.write_text(text)
    return ProjectPolicies.load(rules, SETTINGS)


def test_tool_types_are_checked_against_the_registry(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown tool types \['shel'\]"):
        _load(tmp_path, '[projects.analysts]\ntools = ["function", "shel"]\n')
    policies = _load(tmp_path, '[projects.analysts]\ntools = ["function", "code_interpreter"]\n')
    policies.check_tools("analysts", [{"type": "code_interpreter"}])
    with pytest.raises(InvalidRequest) as info:
        policies.check_tools("analysts", [{"type": "function", "name": "f"}, {"type": "shell"}])
    assert (info.value.param, info.value.code) == ("tools[1].type", "tool_not_allowed")
    policies.check_tools("others", [{"type": "shell"}])  # no rules: every tool


def test_built_in_quotas_keep_one_project_from_taking_the_server() -> None:
    quotas = ProjectPolicies.load(None, SETTINGS).quotas("anyone")
    assert quotas == Quotas(running_containers=250, memory=1000 << 30, disk=2500 << 30, background_queued=1000,
                            background_running=4, audit_rows=10_000, file_bytes=100 << 30)
    tiny = ProjectPolicies.load(None, Settings(max_containers=1, background_workers=1)).quotas("anyone")
    assert (tiny.running_containers, tiny.background_running) == (1, 1)


def test_defaults_then_project_tables_override_key_by_key(tmp_path: Path) -> None:
    policies = _load(tmp_path, '[defaults]\nrunning_containers = 5\nmemory = "8g"\ntools = ["function"]\n'
                               '[projects.big]\nrunning_containers = 50\ntools = ["shell"]\n')
    big, other = policies.quotas("big"), policies.quotas("other")
    assert (big.running_containers, big.memory) == (50, 8 << 30)
    assert (other.running_containers, other.memory, other.audit_rows) == (5, 8 << 30, 10_000)
    policies.check_tools("big", [{"type": "shell"}])
    with pytest.raises(InvalidRequest):
        policies.check_tools("other", [{"type": "shell"}])


@pytest.mark.parametrize("text, message", [
    ("[defaults]\nrunning_containerz = 1\n", r"defaults has unknown settings \['running_containerz'\]"),
    ("[projects.p]\nmemory = \"lots\"\n", "projects.p.memory: Not a size"),
    ("[projects.p]\naudit_rows = -1\n", "projects.p.audit_rows must be a whole number of at least 0"),
    ("[projects.p]\nbackground_running = 0\n", "at least 1"),
    ("[projects.p]\ncontainers = \"no\"\n", "projects.p.containers must be true or false"),
    ("[private_images]\nml = \"analysts\"\n", "private_images.ml must be a list of strings"),
    ("[quotas]\nx = 1\n", r"unknown tables \['quotas'\]"),
    ("[projects.p]\nweb_search = \"google\"\n", "projects.p.web_search: Web search engine 'google' is not one"),
    ("[projects.p]\nweb_search = 1\n", "projects.p.web_search must be a string"),
])
def test_mistakes_stop_the_server(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _load(tmp_path, text)


def test_a_project_may_have_its_own_web_search_engine(tmp_path: Path) -> None:
    policies = _load(tmp_path, '[defaults]\nweb_search = "searxng:https://search.example.org"\n'
                               '[projects.offline]\nweb_search = "index:handbook"\n')
    assert policies.of("offline").web_search == "index:handbook"  # the index need not exist yet
    assert policies.of("other").web_search == "searxng:https://search.example.org"
    assert ProjectPolicies.load(None, SETTINGS).of("anyone").web_search is None


def test_containers_follow_the_tools_unless_set(tmp_path: Path) -> None:
    policies = _load(tmp_path, '[projects.fn]\ntools = ["function"]\n[projects.ci]\ntools = ["code_interpreter"]\n'
                               '[projects.fn_boxes]\ntools = ["function"]\ncontainers = true\n'
                               '[projects.none]\ncontainers = false\n')
    for allowed in ("ci", "fn_boxes", "unlisted"):
        policies.check_containers(allowed)
    for refused in ("fn", "none"):
        with pytest.raises(PermissionDenied) as info:
            policies.check_containers(refused)
        assert (info.value.status_code, info.value.code) == (403, "permission_denied")


def test_private_images_look_like_missing_ones(tmp_path: Path) -> None:
    policies = _load(tmp_path, '[projects.narrow]\nimages = ["default", "py-*"]\n'
                               '[private_images]\nml = ["analysts"]\n')
    policies.check_image("analysts", "ml")
    policies.check_image("narrow", "py-3.12")
    for project, image in (("others", "ml"), ("narrow", "ml"), ("narrow", "node")):
        with pytest.raises(NotFound) as info:
            policies.check_image(project, image)
        assert info.value.to_dict() == {"error": {"message": f"No image named {image!r}", "type":
                                                  "invalid_request_error", "param": "image", "code": "image_not_found"}}
