"""What the web console reads that the API does not list: a project's responses and conversations,
the commands a response ran (with their durations, from the audit trail), a running response's
events to follow, and what its tokens cost.

OpenAI's API has no list of responses or conversations, so these queries live here rather than in
the API's services; like those, every one is filtered by project first, so the console cannot show
another project's rows whatever id a page is asked for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import defer

from cove.errors import InvalidRequest
from cove.service.audit import AuditLog
from cove.service.pagination import Page, paginate
from cove.service.responses import ResponseService
from cove.store.db import Database
from cove.store.models import AuditEventRow, ConversationRow, ResponseRow

TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete", "response.cancelled"})


@dataclass(frozen=True)
class ResponseSummary:
    """One row of the responses list: what the list shows, without the response's items."""

    id: str
    status: str
    model: str
    created_at: float
    background: bool
    total_tokens: int | None
    conversation_id: str | None


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    created_at: int
    metadata: dict[str, Any]


class ConsoleQueries:
    def __init__(self, db: Database, responses: ResponseService, audit: AuditLog,
                 prices: dict[str, tuple[float, float]]) -> None:
        self.db = db
        self.responses = responses
        self.audit = audit
        self.prices = prices

    async def response_page(self, project: str, page: Page) -> tuple[list[ResponseSummary], bool]:
        """A page of the project's responses, newest first by default. The request column (the
        whole input) is never loaded: a page costs the same whatever the responses held."""
        query = select(ResponseRow).where(ResponseRow.project == project).options(
            defer(ResponseRow.request), defer(ResponseRow.progress))
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, query, ResponseRow, page)
        return [ResponseSummary(row.id, row.status, str(row.body.get("model", "")), row.created_at, row.background,
                                (row.body.get("usage") or {}).get("total_tokens"), row.conversation_id)
                for row in rows], has_more

    async def conversation_page(self, project: str, page: Page) -> tuple[list[ConversationSummary], bool]:
        query = select(ConversationRow).where(ConversationRow.project == project)
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, query, ConversationRow, page)
        return [ConversationSummary(row.id, row.created_at, row.metadata_) for row in rows], has_more

    async def commands(self, project: str, response_id: str) -> list[dict[str, Any]]:
        """The commands the response ran, in order, as the audit trail recorded them (command,
        outcome, ``duration_ms``): the items themselves carry no timings."""
        await self.audit.flush()
        async with self.db.begin() as session:
            rows = await session.scalars(select(AuditEventRow.data).where(
                AuditEventRow.project == project, AuditEventRow.response_id == response_id,
                AuditEventRow.kind == "command").order_by(AuditEventRow.seq))
            return list(rows)

    async def follow(self, project: str, response_id: str) -> AsyncIterator[dict[str, Any]] | None:
        """The response's events from its start, live while it runs; None when there is nothing to
        follow: it has ended, or it runs in the foreground on another server (whose events no
        store keeps)."""
        run = self.responses.runs.get(response_id)
        if run is not None and run.project == project:
            return run.log.follow()
        response = await self.responses.get(project, response_id)  # the project's, or a 404
        if response["status"] not in ("queued", "in_progress"):
            return None
        try:
            return await self.responses.events(project, response_id, -1)
        except InvalidRequest:  # a foreground response running elsewhere
            return None

    def cost(self, model: str, usage: dict[str, Any] | None) -> float | None:
        return cost(self.prices, model, usage)


def cost(prices: dict[str, tuple[float, float]], model: str, usage: dict[str, Any] | None) -> float | None:
    """US dollars for ``usage`` at ``prices`` (``COVE_CONSOLE_PRICES``); None for a model without a price."""
    price = prices.get(model)
    if price is None or not usage:
        return None
    return (int(usage.get("input_tokens") or 0) * price[0] + int(usage.get("output_tokens") or 0) * price[1]) / 1e6
