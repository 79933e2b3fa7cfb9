"""Conversations: a durable, ordered list of items that responses read and extend."""

from __future__ import annotations

import time
from typing import Any, cast

from sqlalchemy import delete, select

from cove.agent.items import normalize_input
from cove.agent.request import check_metadata
from cove.errors import InvalidRequest, NotFound
from cove.ids import new_id
from cove.service.objects import Conversation, ListPage
from cove.service.pagination import Page, paginate
from cove.store.db import Database
from cove.store.models import ConversationItemRow, ConversationRow

MAX_ITEMS_PER_CALL = 20


class ConversationService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, project: str, items: list[Any] | None, metadata: dict[str, str] | None) -> Conversation:
        check_metadata(metadata)
        normalized = self._items(items or [], "items")
        row = ConversationRow(id=new_id("conv"), project=project, metadata_=metadata or {},
                              created_at=int(time.time()))
        async with self.db.begin() as session:
            session.add(row)
            await session.flush()
            self._add(session, row.id, normalized)
        return Conversation.from_row(row)

    @staticmethod
    def _items(items: list[Any], param: str) -> list[dict[str, Any]]:
        if len(items) > MAX_ITEMS_PER_CALL:
            raise InvalidRequest(f"At most {MAX_ITEMS_PER_CALL} items can be added at once.", param=param)
        return normalize_input(items, param)

    @staticmethod
    def _add(session: Any, conversation_id: str, items: list[dict[str, Any]]) -> None:
        now = int(time.time())
        session.add_all(ConversationItemRow(id=item["id"], conversation_id=conversation_id, data=item,
                                            created_at=now) for item in items)

    async def get(self, project: str, conversation_id: str) -> Conversation:
        return Conversation.from_row(await self._row(project, conversation_id))

    async def _row(self, project: str, conversation_id: str) -> ConversationRow:
        async with self.db.begin() as session:
            row = await session.scalar(select(ConversationRow).where(
                ConversationRow.id == conversation_id, ConversationRow.project == project))
        if row is None:
            raise NotFound(f"Conversation with id '{conversation_id}' not found.", param="conversation_id",
                           code="conversation_not_found")
        return row

    async def update(self, project: str, conversation_id: str, metadata: dict[str, str]) -> Conversation:
        check_metadata(metadata)
        row = await self._row(project, conversation_id)
        async with self.db.begin() as session:
            merged: ConversationRow = await session.merge(row)
            merged.metadata_ = metadata
        return Conversation.from_row(merged)

    async def delete(self, project: str, conversation_id: str) -> None:
        await self._row(project, conversation_id)
        async with self.db.begin() as session:
            await session.execute(delete(ConversationRow).where(ConversationRow.id == conversation_id))

    async def add_items(self, project: str, conversation_id: str, items: list[Any]) -> ListPage[dict[str, Any]]:
        """The items added, as one page (OpenAI answers with a list)."""
        await self._row(project, conversation_id)
        normalized = self._items(items, "items")
        async with self.db.begin() as session:
            existing = set(await session.scalars(select(ConversationItemRow.id).where(
                ConversationItemRow.conversation_id == conversation_id,
                ConversationItemRow.id.in_([item["id"] for item in normalized]))))
            if existing:
                raise InvalidRequest(f"Item '{sorted(existing)[0]}' is already in this conversation.",
                                     param="items", code="duplicate_item")
            self._add(session, conversation_id, normalized)
        return ListPage.of(normalized, False)

    async def list_items(self, project: str, conversation_id: str, page: Page) -> ListPage[dict[str, Any]]:
        await self._row(project, conversation_id)
        query = select(ConversationItemRow).where(ConversationItemRow.conversation_id == conversation_id)
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, query, ConversationItemRow, page)
        return ListPage.of([row.data for row in rows], has_more)

    async def get_item(self, project: str, conversation_id: str, item_id: str) -> dict[str, Any]:
        await self._row(project, conversation_id)
        async with self.db.begin() as session:
            data = await session.scalar(select(ConversationItemRow.data).where(
                ConversationItemRow.conversation_id == conversation_id, ConversationItemRow.id == item_id))
        if data is None:
            raise NotFound(f"Item with id '{item_id}' not found.", param="item_id", code="item_not_found")
        return cast(dict[str, Any], data)

    async def delete_item(self, project: str, conversation_id: str, item_id: str) -> Conversation:
        """Removes the item; answers with the conversation, as OpenAI does."""
        await self.get_item(project, conversation_id, item_id)
        async with self.db.begin() as session:
            await session.execute(delete(ConversationItemRow).where(
                ConversationItemRow.conversation_id == conversation_id, ConversationItemRow.id == item_id))
        return await self.get(project, conversation_id)
