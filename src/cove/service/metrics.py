"""The gauges ``/metrics`` reads from the store when scraped: containers by status, the background
queue, webhook deliveries waiting. Counted in the store rather than in this process, so they are right
after a restart and the same on every replica of one database (``docs/metrics.md``: take ``max``, not
``sum``, across replicas)."""

from __future__ import annotations

from sqlalchemy import func, select

from cove.service.admission import KEPT
from cove.service.fleet import FleetRegistry
from cove.store.db import Database
from cove.store.models import ContainerRow, ResponseRow, WebhookDeliveryRow
from cove.telemetry import metrics

STATUSES = (*KEPT, "expired")
_CONTAINERS = select(ContainerRow.status, func.count()).group_by(ContainerRow.status)
_BACKGROUND = (select(ResponseRow.status, func.count())
               .where(ResponseRow.background, ResponseRow.status.in_(("queued", "in_progress")))
               .group_by(ResponseRow.status))
_WEBHOOKS = select(func.count()).select_from(WebhookDeliveryRow).where(WebhookDeliveryRow.status == "pending")


class StoreGauges:
    """A scrape hook (``cove.telemetry.on_scrape``) over one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self) -> None:
        async with self.db.begin() as session:
            containers = dict((await session.execute(_CONTAINERS)).tuples().all())
            background = dict((await session.execute(_BACKGROUND)).tuples().all())
            webhooks = await session.scalar(_WEBHOOKS)
        for status in {*STATUSES, *containers}:  # each status has a series, 0 when no container has it
            metrics.CONTAINERS.labels(status).set(containers.get(status, 0))
        for status in ("queued", "in_progress"):
            metrics.BACKGROUND.labels(status).set(background.get(status, 0))
        metrics.WEBHOOKS_PENDING.set(webhooks or 0)


class FleetGauges:
    """A scrape hook over the fleet's registry (``COVE_RAY_ADDRESS``): nodes by state, and each node's
    containers, lost containers, slots and memory. Read from the store, so every replica reports the
    same; a node no longer in the registry has no series."""

    def __init__(self, registry: FleetRegistry) -> None:
        self.registry = registry

    async def __call__(self) -> None:
        nodes = await self.registry.status()
        for gauge in (metrics.FLEET_CONTAINERS, metrics.FLEET_SLOTS, metrics.FLEET_MEMORY):
            gauge.clear()
        for state, alive in (("alive", True), ("lost", False)):
            metrics.FLEET_NODES.labels(state).set(sum(node.alive == alive for node in nodes))
        for node in nodes:
            metrics.FLEET_CONTAINERS.labels(node.node, "placed").set(node.containers)
            metrics.FLEET_CONTAINERS.labels(node.node, "lost").set(node.lost)
            metrics.FLEET_SLOTS.labels(node.node).set(node.slots)
            metrics.FLEET_MEMORY.labels(node.node, "total").set(node.memory)
            metrics.FLEET_MEMORY.labels(node.node, "placed").set(node.memory_used)
