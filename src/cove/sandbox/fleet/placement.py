"""Where containers go: the protocol the service layer implements over the database, and the choice.

The sandbox layer may not open the store, yet placement must be one transaction across API replicas
(two replicas placing at once must not both take a node's last slot). So the fleet engine hands the
nodes' reports to a ``Placement`` the service layer builds, which locks the nodes' rows, counts what is
already placed there, lets ``choose`` pick, and records the assignment before it commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class NodeReport:
    """What a node's ``SandboxHost`` says about itself: its size, what runs there, the images it has."""

    node: str
    incarnation: str
    """New each time the host starts: containers placed under another incarnation are gone."""
    memory: int
    """Bytes containers may be given in all (their memory limits add up to at most this)."""
    cpus: float
    slots: int
    """Containers the node runs at most."""
    images: frozenset[str] = frozenset()
    """Images whose layers the node has on disk: a create there starts without a pull."""


@dataclass(frozen=True)
class Need:
    """One container's share of a node."""

    memory: int
    cpus: float
    image: str


@dataclass(frozen=True)
class Usage:
    """What the containers placed on a node take of it now."""

    memory: int = 0
    cpus: float = 0.0
    containers: int = 0


@dataclass(frozen=True)
class Assignment:
    node: str
    incarnation: str
    state: Literal["placed", "lost"] = "placed"


@dataclass(frozen=True)
class KeptSnapshot:
    """Where a snapshot's files are: on the node that took it (a node's disk is its own)."""

    node: str
    lost: bool = False
    """Its node stopped answering: the files are gone with it."""


def choose(need: Need, candidates: Sequence[tuple[NodeReport, Usage]]) -> NodeReport | None:
    """The node for ``need`` among those with a free slot and the memory (None: none has): nodes that
    have the image first (a pull costs seconds, a busier node milliseconds), then the one with the most
    memory left, then the most CPU left, then the most free slots. Memory is a reservation (a container's
    limit is its share, as on one machine); CPU is a limit, not a reservation, so it is overcommitted and
    only ranks the nodes."""
    fitting = [(report, used) for report, used in candidates
               if used.containers < report.slots and used.memory + need.memory <= report.memory]
    if not fitting:
        return None
    best = max(fitting, key=lambda pair: (need.image in pair[0].images, pair[0].memory - pair[1].memory,
                                          pair[0].cpus - pair[1].cpus, pair[0].slots - pair[1].containers,
                                          pair[0].node))
    return best[0]


class Placement(Protocol):
    """The registry of which node holds which container, kept by the service layer in the database."""

    async def place(self, container_id: str, need: Need, candidates: Sequence[NodeReport]) -> Assignment | None:
        """In one transaction: the candidates' usage counted, ``choose`` asked, the choice recorded for
        ``container_id``. None when no candidate has room."""

    async def assignment(self, container_id: str) -> Assignment | None:
        """Where ``container_id`` was placed (None: never, or forgotten)."""

    async def forget(self, container_id: str) -> None:
        """The container was destroyed (or its create failed): its share of the node is free again."""

    async def seen(self, reports: Sequence[NodeReport]) -> int:
        """The nodes answering now. Containers placed on any of their earlier incarnations become
        ``lost`` (the node restarted empty); returns how many did."""

    async def lose(self, node: str) -> int:
        """The node stopped answering: its containers and snapshots become ``lost``; returns how many
        containers did."""

    async def usage(self) -> dict[str, Usage]:
        """What is placed where, by node (containers not lost)."""

    async def keep_snapshot(self, snapshot_id: str, node: str) -> None:
        """``snapshot_id``'s files are (about to be) on ``node``: containers made from it go there."""

    async def snapshot(self, snapshot_id: str) -> KeptSnapshot | None:
        """Where ``snapshot_id``'s files are (None: no node has them)."""

    async def forget_snapshot(self, snapshot_id: str) -> None:
        """The snapshot was deleted."""
