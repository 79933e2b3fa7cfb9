"""``/v1/webhook_endpoints`` and ``/v1/webhook_event_types`` as the ``openai`` SDK's ``client.webhooks``
calls them, and Cove's ``GET /v1/responses/{id}/webhook_deliveries``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from cove.api.auth import project_of
from cove.service.objects import Deleted, ListPage
from cove.service.pagination import Page
from cove.service.responses import ResponseService
from cove.service.webhooks import EVENT_TYPES, WebhookService

router = APIRouter(tags=["webhooks"])
Project = Annotated[str, Depends(project_of)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointCreate(_Strict):
    name: str
    url: str
    event_types: list[str]


class EndpointUpdate(_Strict):
    name: str | None = None
    url: str | None = None
    event_types: list[str] | None = None


class EndpointTest(_Strict):
    event_type: str


def _service(request: Request) -> WebhookService:
    service: WebhookService = request.app.state.webhooks
    return service


@router.post("/v1/webhook_endpoints")
async def create_endpoint(body: EndpointCreate, request: Request, project: Project) -> dict[str, Any]:
    return await _service(request).create(project, body.name, body.url, body.event_types)


@router.get("/v1/webhook_endpoints")
async def list_endpoints(request: Request, project: Project, after: str | None = None,
                         limit: int = 20) -> ListPage[dict[str, Any]]:
    data, has_more = await _service(request).list_page(project, Page(after, limit, "desc"))
    return ListPage.of(data, has_more)


@router.get("/v1/webhook_endpoints/{webhook_endpoint_id}")
async def get_endpoint(webhook_endpoint_id: str, request: Request, project: Project) -> dict[str, Any]:
    return await _service(request).get(project, webhook_endpoint_id)


@router.post("/v1/webhook_endpoints/{webhook_endpoint_id}")
async def update_endpoint(webhook_endpoint_id: str, body: EndpointUpdate, request: Request,
                          project: Project) -> dict[str, Any]:
    return await _service(request).update(project, webhook_endpoint_id, name=body.name, url=body.url,
                                          event_types=body.event_types)


@router.delete("/v1/webhook_endpoints/{webhook_endpoint_id}")
async def delete_endpoint(webhook_endpoint_id: str, request: Request, project: Project) -> Deleted:
    await _service(request).delete(project, webhook_endpoint_id)
    return Deleted.of("webhook_endpoint", webhook_endpoint_id)


@router.post("/v1/webhook_endpoints/{webhook_endpoint_id}/rotate_secret")
async def rotate_secret(webhook_endpoint_id: str, request: Request, project: Project) -> dict[str, Any]:
    return await _service(request).rotate_secret(project, webhook_endpoint_id)


@router.post("/v1/webhook_endpoints/{webhook_endpoint_id}/test")
async def test_endpoint(webhook_endpoint_id: str, body: EndpointTest, request: Request,
                        project: Project) -> dict[str, Any]:
    return await _service(request).test(project, webhook_endpoint_id, body.event_type)


@router.get("/v1/webhook_event_types")
async def event_types(project: Project) -> dict[str, Any]:
    return {"object": "list", "data": list(EVENT_TYPES)}


@router.get("/v1/responses/{response_id}/webhook_deliveries")
async def deliveries(response_id: str, request: Request, project: Project) -> dict[str, Any]:
    """Cove extension: every delivery of the response's webhook events, with attempts and outcome."""
    responses: ResponseService = request.app.state.responses
    await responses.get(project, response_id)  # another project's id: 404 as any unknown one
    return {"object": "list", "data": await _service(request).deliveries(project, response_id)}
