"""A fleet node's egress decisions, kept until an API replica collects them for the audit trail.

The node's proxy decides in the host's process, but the audit trail is written by the API replicas:
each replica's fleet check takes what the host kept (``SandboxHost.take_egress``), and the host hands
each decision out once, so whichever replica takes it records it exactly once. Between two collections
the host keeps at most ``EGRESS_KEPT``; past that the project holding the most loses its oldest, so a
container that floods its proxy with refused requests costs its own project's records, not another's.
What was dropped is counted, logged on the node and passed on with the next batch (the replica logs it).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from cove.egress.proxy import Decision

log = logging.getLogger(__name__)

EGRESS_KEPT = 10_000
"""Decisions a host keeps between two collections (a replica's check, every ``COVE_FLEET_CHECK_SECONDS``)."""


@dataclass(frozen=True)
class EgressBatch:
    """What a host kept since the last collection: decisions with their containers' projects, oldest
    first, and how many it had to drop."""

    decisions: list[tuple[Decision, str]]
    dropped: int


class EgressBuffer:
    """The host's decisions by project, at most ``limit`` in all (the module says what goes past it)."""

    def __init__(self, limit: int = EGRESS_KEPT) -> None:
        self.limit = limit
        self._kept: dict[str, deque[Decision]] = {}
        """By project."""
        self._count = 0
        self._dropped = 0

    def add(self, decision: Decision, project: str) -> None:
        if self._count >= self.limit:
            largest = max(self._kept, key=lambda name: len(self._kept[name]))
            self._kept[largest].popleft()
            self._count -= 1
            if not self._dropped:
                log.warning("egress decisions dropped: %d wait for collection (project %r loses its oldest)",
                            self.limit, largest)
            self._dropped += 1
        self._kept.setdefault(project, deque()).append(decision)
        self._count += 1

    def take(self) -> EgressBatch:
        """Everything kept, once: the buffer starts over empty."""
        decisions = sorted(((decision, project) for project, kept in self._kept.items() for decision in kept),
                           key=lambda item: item[0].time)
        batch = EgressBatch(decisions, self._dropped)
        if self._dropped:
            log.warning("%d egress decisions were dropped since the last collection", self._dropped)
        self._kept, self._count, self._dropped = {}, 0, 0
        return batch
