"""The Grafana dashboard in ``deploy/grafana/`` is valid JSON whose every query names metrics that
``/metrics`` exports (as the exposition text declares them), so a rename cannot leave a panel empty."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import cove.api.app  # noqa: F401 - everything that defines metrics, as the server has it
from cove.telemetry.metrics import exposition

DASHBOARD = Path(__file__).parent.parent.parent / "deploy" / "grafana" / "cove.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
PROMQL_WORDS = {"histogram_quantile", "sum", "max", "min", "avg", "by", "without", "rate", "irate", "increase",
                "le", "label_values", "instance"}


def exported() -> set[str]:
    """The series names ``/metrics`` serves, from its own text (each family's type gives its suffixes)."""
    text, _content_type = asyncio.run(exposition(""))
    names = set()
    for family in text_string_to_metric_families(text.decode()):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def queries(dashboard: dict[str, object]) -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard)
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers that are not functions, keywords, labels in
    ``by (...)`` or ``{...}``, or template variables."""
    bare = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    bare = re.sub(r"\b(by|without)\s*\([^)]*\)", "", bare)  # grouping labels
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # range selectors
    bare = re.sub(r'"[^"]*"', "", bare)  # strings (legends, matchers' values)
    words = set(re.findall(r"(?<![$\w])[a-zA-Z_:][\w:]*", bare))
    return {word for word in words if word not in PROMQL_WORDS}


def test_every_metric_a_panel_names_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"] and dashboard["uid"]
    named = {name for expr in queries(dashboard) for name in metric_names(expr)}
    assert {"cove_exec_seconds_bucket", "cove_responses_total", "cove_containers"} <= named  # the parse works
    assert named - exported() == set()


def test_the_check_would_catch_a_wrong_name() -> None:
    assert metric_names('sum by (status) (rate(cove_response_total{instance=~"$instance"}[$__rate_interval]))') == {
        "cove_response_total"}
    assert "cove_response_total" not in exported()
