"""Reads a server's ``/metrics`` as the Prometheus parser does."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of ``url``'s ``/metrics``, by name and labels."""
    answer = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    answer.raise_for_status()
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the server has none yet (a counter not yet incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
