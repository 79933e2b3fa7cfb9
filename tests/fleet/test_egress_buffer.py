"""A fleet host's egress decisions between two collections: each handed out once, bounded, and a
project that floods its proxy loses its own records, not another project's."""

from __future__ import annotations

import logging

import pytest

from cove.egress.proxy import Decision
from cove.sandbox.fleet.egress import EgressBuffer


def _decision(n: int, client: str = "cntr_a") -> Decision:
    return Decision(float(n), client, "GET", f"host-{n}.test", 80, n % 2 == 0, "allowed")


def test_each_decision_is_handed_out_once_oldest_first() -> None:
    buffer = EgressBuffer(limit=10)
    buffer.add(_decision(2, "cntr_b"), "beta")
    buffer.add(_decision(1), "alpha")
    batch = buffer.take()
    assert [(decision.time, project) for decision, project in batch.decisions] == [(1.0, "alpha"), (2.0, "beta")]
    assert batch.dropped == 0
    assert buffer.take().decisions == []


def test_past_the_limit_the_largest_project_loses_its_oldest(caplog: pytest.LogCaptureFixture) -> None:
    buffer = EgressBuffer(limit=10)
    buffer.add(_decision(0, "cntr_b"), "quiet")
    with caplog.at_level(logging.WARNING, "cove.sandbox.fleet.egress"):
        for n in range(1, 101):
            buffer.add(_decision(n), "flood")
        buffer.add(_decision(101, "cntr_b"), "quiet")
        batch = buffer.take()
    kept = [(decision.time, project) for decision, project in batch.decisions]
    assert [time for time, project in kept if project == "quiet"] == [0.0, 101.0]
    assert [time for time, project in kept if project == "flood"] == [float(n) for n in range(93, 101)]
    assert batch.dropped == 92
    assert [record.message for record in caplog.records] == [
        "egress decisions dropped: 10 wait for collection (project 'flood' loses its oldest)",
        "92 egress decisions were dropped since the last collection"]
    assert buffer.take().dropped == 0
