"""Cursor pagination shared by every list endpoint: ``after``, ``limit``, ``order``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from cove.errors import InvalidRequest


@dataclass(frozen=True)
class Page:
    after: str | None = None
    limit: int = 20
    order: Literal["asc", "desc"] = "desc"
    most: int = 100
    """The largest ``limit`` the list allows (OpenAI's files list allows 10,000)."""

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= self.most:
            raise InvalidRequest(f"limit must be between 1 and {self.most}.", param="limit")
        if self.order not in ("asc", "desc"):
            raise InvalidRequest("order must be 'asc' or 'desc'.", param="order")


async def paginate(session: AsyncSession, query: Select[Any], model: Any, page: Page) -> tuple[list[Any], bool]:
    """Rows after the cursor in ``seq`` order, and whether more follow.

    The cursor is looked up with the list's own filters (its project, its parent), so an id from
    elsewhere, another project's included, is answered exactly as an unknown one.
    """
    if page.after is not None:
        cursor_query = query.with_only_columns(model.seq).where(model.id == page.after)
        cursor = (await session.execute(cursor_query.limit(1))).scalar()
        if cursor is None:
            raise InvalidRequest(f"No object found with id {page.after!r} to list after.", param="after")
        query = query.where(model.seq > cursor if page.order == "asc" else model.seq < cursor)
    query = query.order_by(model.seq.asc() if page.order == "asc" else model.seq.desc()).limit(page.limit + 1)
    rows = list((await session.execute(query)).scalars())
    return rows[: page.limit], len(rows) > page.limit
