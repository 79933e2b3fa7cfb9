"""``/v1/responses``: create (plain, streamed, background), retrieve, stream again, delete, cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from cove.agent import includes
from cove.agent.compaction import CompactParams
from cove.agent.request import INLINE_BYTES, CountParams, CreateParams, check_include, sized
from cove.api import sse
from cove.api.auth import project_of
from cove.service.objects import Deleted, ListPage
from cove.service.pagination import Page
from cove.service.responses import ResponseService, drain
from cove.service.runs import Run

router = APIRouter(prefix="/v1/responses", tags=["responses"])
Project = Annotated[str, Depends(project_of)]
MAX_SEQUENCE_NUMBER = 2**31 - 1
"""Sequence numbers are stored as 32-bit integers (``Integer`` on PostgreSQL); a larger
``starting_after`` is refused up front (the query would fail after the stream's headers went out)."""


def _service(request: Request) -> ResponseService:
    service: ResponseService = request.app.state.responses
    return service


async def _params(request: Request) -> CreateParams:
    """The request body, parsed and validated; a large one in a worker thread: a body may be tens of
    megabytes (up to ``max_request``), and parsing it on the event loop would hold up every other tenant."""
    body = await request.body()
    try:
        return await sized(len(body) <= INLINE_BYTES, CreateParams.model_validate_json, body)
    except ValidationError as exc:  # answered as FastAPI's own body errors are
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None


Params = Annotated[CreateParams, Depends(_params)]


def _answer(response: dict[str, Any]) -> JSONResponse:
    """A response object sent as it is: it is plain JSON already (built from the wire's own dicts), so
    FastAPI's walk through it (``jsonable_encoder``, a few percent of the server's CPU per response
    against a fast upstream) would change nothing."""
    return JSONResponse(response)


async def _follow(run: Run) -> AsyncIterator[dict[str, Any]]:
    try:
        async for event in run.log.follow():
            yield event
    finally:
        if not run.done.is_set():
            await drain(run)


@router.post("", response_model=None)
async def create_response(params: Params, request: Request, project: Project) -> Any:
    service = _service(request)
    run = await service.create(project, params, body_bytes=len(await request.body()))  # the body is cached
    if params.stream:
        return sse.stream(includes.events(_follow(run), params.include))
    if params.background:
        return _answer(includes.response(run.builder.snapshot(), params.include))
    return _answer(includes.response(await service.wait(run), params.include))


@router.get("")
async def list_responses(request: Request, project: Project, after: str | None = None, limit: int = 20,
                         order: Literal["asc", "desc"] = "desc") -> ListPage[dict[str, Any]]:
    """Cove extension (OpenAI has no list): stored responses without ``output``, for ``cove responses ls``."""
    responses, has_more = await _service(request).list_page(project, Page(after, limit, order))
    return ListPage.of(responses, has_more)


@router.post("/input_tokens")
async def input_tokens(params: CountParams, request: Request, project: Project) -> dict[str, Any]:
    count = await _service(request).count_input_tokens(project, params.as_create())
    return {"object": "response.input_tokens", "input_tokens": count}


@router.post("/compact")
async def compact(params: CompactParams, request: Request, project: Project) -> dict[str, Any]:
    """The compacted window the SDK's ``responses.compact()`` returns (``agent/compaction.py``)."""
    return await _service(request).compact(project, params)


@router.get("/{response_id}", response_model=None)
async def get_response(response_id: str, request: Request, project: Project, stream: bool = False,
                       starting_after: Annotated[int, Query(ge=-1, le=MAX_SEQUENCE_NUMBER)] = -1,
                       include: Annotated[list[str] | None, Query(alias="include[]")] = None) -> Any:
    service = _service(request)
    shown = check_include(include)
    if stream:
        return sse.stream(includes.events(await service.events(project, response_id, starting_after), shown))
    return _answer(includes.response(await service.get(project, response_id), shown))


@router.delete("/{response_id}")
async def delete_response(response_id: str, request: Request, project: Project) -> Deleted:
    await _service(request).delete(project, response_id)
    return Deleted.of("response", response_id)


@router.post("/{response_id}/cancel")
async def cancel_response(response_id: str, request: Request, project: Project) -> dict[str, Any]:
    return await _service(request).cancel(project, response_id)


@router.get("/{response_id}/progress")
async def response_progress(response_id: str, request: Request, project: Project) -> dict[str, Any]:
    """Cove extension: a response's step, hosted calls in flight and heartbeat (``docs/responses.md``)."""
    return await _service(request).progress(project, response_id)


@router.get("/{response_id}/input_items")
async def list_input_items(response_id: str, request: Request, project: Project, after: str | None = None,
                           limit: int = 20, order: Literal["asc", "desc"] = "desc",
                           include: Annotated[list[str] | None, Query(alias="include[]")] = None,
                           ) -> ListPage[dict[str, Any]]:
    check_include(include)
    items, has_more = await _service(request).input_items(project, response_id, Page(after, limit, order))
    return ListPage.of([includes.input_item(item, include) for item in items], has_more)


