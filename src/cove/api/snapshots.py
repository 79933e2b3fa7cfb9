"""Cove extension: snapshots of containers (``/v1/containers/{id}/snapshots``, ``/v1/snapshots``) and
forks (``POST /v1/containers/{id}/fork``). A container is made from a snapshot by ``POST /v1/containers``
with ``snapshot_id``. See docs/snapshots.md."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from cove.api.auth import project_of
from cove.service.objects import Container, Deleted, ListPage, ObjectList, Snapshot
from cove.service.pagination import Page
from cove.service.snapshots import MAX_FORKS, SnapshotService

router = APIRouter(tags=["snapshots"])
Project = Annotated[str, Depends(project_of)]


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=256)


class ForkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(default=1, ge=1, le=MAX_FORKS)


def _service(request: Request) -> SnapshotService:
    service: SnapshotService = request.app.state.snapshots
    return service


@router.post("/v1/containers/{container_id}/snapshots")
async def create_snapshot(container_id: str, request: Request, project: Project,
                          body: SnapshotCreate | None = None) -> Snapshot:
    """The container's files as they are now, kept until deleted (O(1) in their size)."""
    return await _service(request).create(project, container_id, body.name if body else None)


@router.get("/v1/containers/{container_id}/snapshots")
async def list_container_snapshots(
    container_id: str, request: Request, project: Project, after: str | None = None,
    limit: Annotated[int, Query()] = 20, order: Literal["asc", "desc"] = "desc",
) -> ListPage[Snapshot]:
    """Snapshots of this container, also after it was deleted."""
    return await _service(request).list_page(project, Page(after, limit, order), container_id)


@router.get("/v1/containers/{container_id}/snapshots/{snapshot_id}")
async def get_container_snapshot(container_id: str, snapshot_id: str, request: Request, project: Project) -> Snapshot:
    return await _service(request).get(project, snapshot_id, container_id)


@router.delete("/v1/containers/{container_id}/snapshots/{snapshot_id}")
async def delete_container_snapshot(container_id: str, snapshot_id: str, request: Request,
                                    project: Project) -> Deleted:
    await _service(request).delete(project, snapshot_id, container_id)
    return Deleted.of("container.snapshot", snapshot_id)


@router.get("/v1/snapshots")
async def list_snapshots(
    request: Request, project: Project, after: str | None = None,
    limit: Annotated[int, Query()] = 20, order: Literal["asc", "desc"] = "desc",
) -> ListPage[Snapshot]:
    """Every snapshot of the project (they count against its ``disk`` quota)."""
    return await _service(request).list_page(project, Page(after, limit, order))


@router.get("/v1/snapshots/{snapshot_id}")
async def get_snapshot(snapshot_id: str, request: Request, project: Project) -> Snapshot:
    return await _service(request).get(project, snapshot_id)


@router.delete("/v1/snapshots/{snapshot_id}")
async def delete_snapshot(snapshot_id: str, request: Request, project: Project) -> Deleted:
    await _service(request).delete(project, snapshot_id)
    return Deleted.of("container.snapshot", snapshot_id)


@router.post("/v1/containers/{container_id}/fork")
async def fork_container(container_id: str, request: Request, project: Project,
                         body: ForkRequest | None = None) -> ObjectList[Container]:
    """``count`` new containers with this one's files as they are now (its processes are not copied)."""
    return ObjectList(data=await _service(request).fork(project, container_id, body.count if body else 1))
