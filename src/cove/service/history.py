"""What a new response remembers: its chain of previous responses, or its conversation.

``previous_response_id`` means: the previous response's context, then its input, then its
output. The chain is walked with one recursive query, never one query per link.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import CTE, select
from sqlalchemy.ext.asyncio import AsyncSession

from cove.errors import InvalidRequest, NotFound
from cove.store.models import ConversationItemRow, ConversationRow, ResponseItemRow, ResponseRow


def _chain(project: str, response_id: str) -> CTE:
    """The responses of a chain, from ``response_id`` back to its first (one recursive query)."""
    link = select(ResponseRow.id, ResponseRow.previous_response_id, ResponseRow.seq).where(
        ResponseRow.id == response_id, ResponseRow.project == project).cte("chain", recursive=True)
    return link.union_all(select(ResponseRow.id, ResponseRow.previous_response_id, ResponseRow.seq).where(
        ResponseRow.id == link.c.previous_response_id, ResponseRow.project == project))


async def chain_items(session: AsyncSession, project: str, previous_response_id: str) -> list[dict[str, Any]]:
    """Every item of the chain ending at ``previous_response_id``, oldest first."""
    head = await session.scalar(select(ResponseRow).where(
        ResponseRow.id == previous_response_id, ResponseRow.project == project, ResponseRow.stored.is_(True)))
    if head is None:
        raise NotFound(f"Previous response with id '{previous_response_id}' not found.",
                       param="previous_response_id", code="previous_response_not_found")
    if head.status in ("queued", "in_progress"):
        raise InvalidRequest(f"Previous response '{previous_response_id}' has not finished yet.",
                             param="previous_response_id")
    link = _chain(project, previous_response_id)
    rows = await session.execute(
        select(ResponseItemRow.data).join(link, ResponseItemRow.response_id == link.c.id)
        .order_by(link.c.seq, ResponseItemRow.role, ResponseItemRow.position))  # "input" < "output"
    return [row for (row,) in rows]


async def conversation_items(session: AsyncSession, project: str, conversation_id: str) -> list[dict[str, Any]]:
    conversation = await session.scalar(select(ConversationRow).where(
        ConversationRow.id == conversation_id, ConversationRow.project == project))
    if conversation is None:
        raise NotFound(f"Conversation with id '{conversation_id}' not found.", param="conversation",
                       code="conversation_not_found")
    rows = await session.scalars(select(ConversationItemRow.data).where(
        ConversationItemRow.conversation_id == conversation_id).order_by(ConversationItemRow.seq))
    return list(rows)


async def resolve_references(session: AsyncSession, project: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replaces ``item_reference`` inputs by the stored items they name, and restores what the model was
    shown of web searches (``_restore_search_results``)."""
    resolved = []
    for index, item in enumerate(items):
        if item.get("type") != "item_reference":
            resolved.append(item)
            continue
        data = await session.scalar(
            select(ResponseItemRow.data).join(ResponseRow, ResponseRow.id == ResponseItemRow.response_id)
            .where(ResponseItemRow.id == item["id"], ResponseRow.project == project).limit(1))
        if data is None:
            raise NotFound(f"Item with id '{item['id']}' not found.", param=f"input[{index}].id",
                           code="item_not_found")
        resolved.append(data)
    return await _restore_search_results(session, project, resolved)


async def _restore_search_results(session: AsyncSession, project: str,
                                  items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``web_search_call`` inputs as the project stored them, with the ``results`` the model was shown.

    Clients that send the whole history back each time (the agents SDK) send these items as they were
    shown them, without ``results`` (an ``include`` they did not ask for); the model would then lose
    what it found. One query for all of them; an item this project did not store stays as sent."""
    wanted = {item["id"] for item in items if item.get("type") == "web_search_call" and "results" not in item
              and isinstance(item.get("id"), str)}
    if not wanted:
        return items
    rows = await session.scalars(
        select(ResponseItemRow.data).join(ResponseRow, ResponseRow.id == ResponseItemRow.response_id)
        .where(ResponseItemRow.id.in_(wanted), ResponseRow.project == project))
    stored = {data["id"]: data for data in rows if data.get("type") == "web_search_call" and "results" in data}
    return [stored.get(item.get("id"), item) if item.get("type") == "web_search_call" else item for item in items]


async def chain_ids(session: AsyncSession, project: str, response_id: str) -> list[str]:
    """The ids of the chain ending at ``response_id``, newest first."""
    link = _chain(project, response_id)
    return list(await session.scalars(select(link.c.id).order_by(link.c.seq.desc())))


async def last_container(session: AsyncSession, project: str, params: Any) -> str | None:
    """The container the chain or conversation used last (``container_auto`` follows it)."""
    query = select(ResponseRow.body).where(ResponseRow.project == project)
    if params.previous_response_id:
        link = _chain(project, params.previous_response_id)
        query = query.join(link, ResponseRow.id == link.c.id)
    elif params.conversation_id:
        query = query.where(ResponseRow.conversation_id == params.conversation_id)
    else:
        return None
    for body in await session.scalars(query.order_by(ResponseRow.seq.desc())):
        if body.get("container_id"):
            return str(body["container_id"])
    return None
