"""The gauges ``/metrics`` reads from the store when scraped: containers by status, the background
queue, webhook deliveries waiting. Counted in the store rather than in this process, so they are right
after a restart and the same on every replica of one database (``docs/metrics.md``: take ``max``, not
``sum``, across replicas)."""

from __future__ import annotations

from sqlalchemy import func, select

from cove.service.containers import KEPT
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
