"""``/v1/conversations``: conversations and their items."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from cove.agent import includes
from cove.agent.request import check_include
from cove.api.auth import project_of
from cove.service.conversations import ConversationService
from cove.service.objects import Conversation, Deleted, ListPage
from cove.service.pagination import Page

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])
Project = Annotated[str, Depends(project_of)]
Include = Annotated[list[str] | None, Query(alias="include[]")]
"""What items show (``agent/includes.py``)."""


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Any] | None = None
    metadata: dict[str, str] | None = None


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metadata: dict[str, str]


class ItemsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Any] = Field(min_length=1)


def _service(request: Request) -> ConversationService:
    service: ConversationService = request.app.state.conversations
    return service


@router.post("")
async def create_conversation(body: ConversationCreate, request: Request, project: Project) -> Conversation:
    return await _service(request).create(project, body.items, body.metadata)


@router.get("/{conversation_id}")
async def get_conversation(conversation_id: str, request: Request, project: Project) -> Conversation:
    return await _service(request).get(project, conversation_id)


@router.post("/{conversation_id}")
async def update_conversation(conversation_id: str, body: ConversationUpdate, request: Request,
                              project: Project) -> Conversation:
    return await _service(request).update(project, conversation_id, body.metadata)


@router.delete("/{conversation_id}")
async def delete_conversation(conversation_id: str, request: Request, project: Project) -> Deleted:
    await _service(request).delete(project, conversation_id)
    return Deleted.of("conversation", conversation_id)


@router.post("/{conversation_id}/items")
async def add_items(conversation_id: str, body: ItemsCreate, request: Request,
                    project: Project) -> ListPage[dict[str, Any]]:
    return await _service(request).add_items(project, conversation_id, body.items)


@router.get("/{conversation_id}/items")
async def list_items(conversation_id: str, request: Request, project: Project, after: str | None = None,
                     limit: int = 20, order: Literal["asc", "desc"] = "desc", include: Include = None,
                     ) -> ListPage[dict[str, Any]]:
    check_include(include)
    page = await _service(request).list_items(project, conversation_id, Page(after, limit, order))
    return ListPage.of([includes.item(item, include) for item in page.data], page.has_more)


@router.get("/{conversation_id}/items/{item_id}")
async def get_item(conversation_id: str, item_id: str, request: Request, project: Project,
                   include: Include = None) -> dict[str, Any]:
    return includes.item(await _service(request).get_item(project, conversation_id, item_id),
                         check_include(include))


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_item(conversation_id: str, item_id: str, request: Request, project: Project) -> Conversation:
    return await _service(request).delete_item(project, conversation_id, item_id)
