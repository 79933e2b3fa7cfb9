"""``/v1/containers``: OpenAI's Containers API, plus ``image``, ``cpu_limit`` and ``/exec``."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from cove.api import sse
from cove.api.auth import project_of
from cove.errors import CoveError, InvalidRequest
from cove.sandbox.base import Command, CommandOutput
from cove.service.audit import AuditLog
from cove.service.containers import ContainerService
from cove.service.objects import AuditPage, Container, Deleted, ListPage
from cove.service.pagination import Page
from cove.service.project_files import ProjectFileService
from cove.service.skills import SkillService
from cove.service.snapshots import SnapshotService

router = APIRouter(prefix="/v1/containers", tags=["containers"])
Project = Annotated[str, Depends(project_of)]

DEFAULT_TIMEOUT_MS = 60_000
DEFAULT_MAX_OUTPUT = 1_000_000
MAX_PENDING_OUTPUT = 4 << 20
"""Characters of streamed output held for a client that reads slower than its commands write;
past it the commands wait for the client (``_Outbox``)."""
_EVENT_COST = 256
"""What one queued event costs besides its text, counted against ``MAX_PENDING_OUTPUT``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpiresAfter(_Strict):
    anchor: Literal["last_active_at"]
    minutes: int


class NetworkPolicy(_Strict):
    type: Literal["disabled", "allowlist"]
    allowed_domains: list[str] | None = None
    domain_secrets: list[dict[str, Any]] | None = None


class ContainerCreate(_Strict):
    name: str = Field(min_length=1, max_length=256)
    expires_after: ExpiresAfter | None = None
    file_ids: list[str] | None = None
    memory_limit: Literal["1g", "4g", "16g", "64g"] = "1g"
    network_policy: NetworkPolicy | None = None
    skills: list[dict[str, Any]] | None = None
    image: str | None = Field(default=None, description="Cove extension: the image to start from.")
    cpu_limit: float | None = Field(default=None, description="Cove extension: CPUs it may use.")
    snapshot_id: str | None = Field(default=None, description="Cove extension: start with this snapshot's files "
                                                              "(and its image).")


class ExecRequest(_Strict):
    commands: list[str] = Field(min_length=1)
    timeout_ms: int = Field(default=DEFAULT_TIMEOUT_MS, ge=1, le=3_600_000)
    max_output_length: int = Field(default=DEFAULT_MAX_OUTPUT, ge=1, le=10_000_000)
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    stream: bool = False


def _service(request: Request) -> ContainerService:
    service: ContainerService = request.app.state.containers
    return service


@router.post("")
async def create_container(body: ContainerCreate, request: Request, project: Project) -> Container:
    project_files: ProjectFileService = request.app.state.project_files
    await project_files.check(project, body.file_ids or [], "file_ids")  # refused before anything is made
    skills: SkillService = request.app.state.skills
    bundles = await skills.resolve(project, body.skills or [], "skills")
    snapshot = None
    if body.snapshot_id is not None:
        snapshots: SnapshotService = request.app.state.snapshots
        snapshot = await snapshots.row(project, body.snapshot_id)
        if body.image is not None and body.image != snapshot.image:
            raise InvalidRequest(f"A container made from snapshot {snapshot.id!r} runs on its image "
                                 f"{snapshot.image!r}; leave out image or name that one.", param="image")
    container = await _service(request).create(
        project, name=body.name, image=body.image, memory_limit=body.memory_limit, cpu_limit=body.cpu_limit,
        expires_minutes=body.expires_after.minutes if body.expires_after else None,
        network_policy=body.network_policy.model_dump(exclude_none=True) if body.network_policy else {},
        snapshot=snapshot)
    try:
        for index, file_id in enumerate(body.file_ids or []):  # copied to /mnt/data/<filename>
            await project_files.copy_to_container(project, container.id, file_id, f"file_ids[{index}]")
        if bundles:  # read-only at /skills/<name>/
            await skills.install(project, container.id, bundles)
    except BaseException:
        await _service(request).delete(project, container.id)  # a file deleted meanwhile: no half-made container
        raise
    return container


@router.get("")
async def list_containers(
    request: Request, project: Project, after: str | None = None,
    limit: Annotated[int, Query()] = 20, order: Literal["asc", "desc"] = "desc", name: str | None = None,
) -> ListPage[Container]:
    return await _service(request).list_page(project, Page(after, limit, order), name)


@router.get("/{container_id}")
async def get_container(container_id: str, request: Request, project: Project) -> Container:
    return await _service(request).get(project, container_id)


@router.delete("/{container_id}")
async def delete_container(container_id: str, request: Request, project: Project) -> Deleted:
    await _service(request).delete(project, container_id)
    return Deleted.of("container", container_id)


@router.post("/{container_id}/pause")
async def pause_container(container_id: str, request: Request, project: Project) -> Container:
    """Cove extension: freezes every process of the container (no CPU; memory, files and connections
    kept); status ``paused`` until ``/resume`` or its next use (an exec or a file call resumes it)."""
    return await _service(request).pause(project, container_id)


@router.post("/{container_id}/resume")
async def resume_container(container_id: str, request: Request, project: Project) -> Container:
    """Cove extension: thaws a paused container; one that is not paused is answered as it is."""
    return await _service(request).resume(project, container_id)


@router.get("/{container_id}/audit")
async def container_audit(container_id: str, request: Request, project: Project, after: str | None = None,
                          limit: int = 20, order: Literal["asc", "desc"] = "desc") -> AuditPage:
    """Cove extension: the commands run in this container (and its egress decisions), newest first,
    and how many of the oldest were pruned."""
    await _service(request).get(project, container_id)
    audit: AuditLog = request.app.state.audit
    return await audit.events(project, container_id, Page(after, limit, order))


def _exec_object(container_id: str, outputs: list[CommandOutput]) -> dict[str, Any]:
    return {"object": "container.exec", "container_id": container_id,
            "output": [output.model_dump() for output in outputs]}


@router.post("/{container_id}/exec", response_model=None)
async def exec_commands(container_id: str, body: ExecRequest, request: Request,
                        project: Project) -> dict[str, Any] | Any:
    service = _service(request)
    commands = [Command(command=text, timeout_ms=body.timeout_ms, max_output_length=body.max_output_length,
                        env=body.env, workdir=body.workdir) for text in body.commands]
    if not body.stream:  # encoded here: FastAPI's generic encoder walks every field again
        outputs = await service.exec(project, container_id, commands)
        return Response(json.dumps(_exec_object(container_id, outputs), separators=(",", ":")),
                        media_type="application/json")
    await service.get(project, container_id)  # unknown ids fail as JSON, before the stream starts
    return sse.stream(sse.numbered(_exec_events(service, project, container_id, commands)), _encode_exec_event)


_DELTA = "container.exec.output.delta"


def _encode_exec_event(event: dict[str, Any]) -> bytes:
    """``sse.encode``'s bytes, with an output delta's text (up to megabytes) escaped by ``sse.json_escaped``
    where that is faster: the rest of the event is encoded around an empty text, which is then filled in."""
    if event["type"] != _DELTA:
        return sse.encode(event)
    ((stream, text),) = event["delta"].items()
    escaped = sse.json_escaped(text)
    if escaped is None:
        return sse.encode(event)
    empty = f'"delta":{{"{stream}":""}}'.encode()
    before, after = sse.encode({**event, "delta": {stream: ""}}).split(empty)
    return b"".join((before, b'"delta":{"', stream.encode(), b'":"', escaped, b'"}', after))


@dataclass
class _Delta:
    index: int
    stream: str
    pieces: list[str] = field(default_factory=list)


class _Outbox:
    """A streaming exec's events on their way to the client, in bounded memory, losing nothing.

    The sandbox hands output over as it arrives (consecutive output of one stream merges into one
    delta). Once ``MAX_PENDING_OUTPUT`` characters wait, ``output`` answers with a future that is done
    when the client has read half of them: the sandbox stops reading until then and the command blocks
    on its full pipe, so a slow client slows the command rather than losing its output or growing the
    server. A client that goes away (``close``) releases the command, whose further output is dropped.
    """

    def __init__(self) -> None:
        self._events: deque[dict[str, Any] | _Delta] = deque()
        self._pending = 0
        self._ready = asyncio.Event()
        self._drained: asyncio.Future[None] | None = None
        self._closed = False

    def output(self, index: int, stream: str, text: str) -> asyncio.Future[None] | None:
        if self._closed:
            return None
        self._add(index, stream, text)
        if self._pending <= MAX_PENDING_OUTPUT:
            return None
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()
        return self._drained

    def _add(self, index: int, stream: str, text: str) -> None:
        last = self._events[-1] if self._events else None
        if isinstance(last, _Delta) and (last.index, last.stream) == (index, stream):
            self._pending += len(text)
        else:
            last = _Delta(index, stream)
            self._events.append(last)
            self._pending += len(text) + _EVENT_COST
        last.pieces.append(text)
        self._ready.set()

    def put(self, event: dict[str, Any]) -> None:
        if not self._closed:
            self._events.append(event)
            self._ready.set()

    async def get(self) -> dict[str, Any]:
        while not self._events:
            self._ready.clear()
            await self._ready.wait()
        event = self._events.popleft()
        if isinstance(event, dict):
            return event
        text = "".join(event.pieces)
        self._pending -= len(text) + _EVENT_COST
        if self._pending <= MAX_PENDING_OUTPUT // 2:
            self._release()
        return {"type": _DELTA, "command_index": event.index, "delta": {event.stream: text}}

    def close(self) -> None:
        """The client is gone: nothing more is kept, and a command held back runs on."""
        self._closed = True
        self._events.clear()
        self._pending = 0
        self._release()

    def _release(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)


async def _exec_events(service: ContainerService, project: str, container_id: str,
                       commands: list[Command]) -> AsyncIterator[dict[str, Any]]:
    outbox = _Outbox()

    def on_done(index: int, output: CommandOutput) -> None:
        outbox.put({"type": "container.exec.command.done", "command_index": index, "output": output.model_dump()})

    task = asyncio.create_task(service.exec(project, container_id, commands, outbox.output, on_done))
    # The commands finish even if the client goes away (they are in the audit trail either way). This
    # callback only retrieves the task's exception, so asyncio does not warn that nobody did.
    task.add_done_callback(lambda t: t.cancelled() or t.exception() or True)
    task.add_done_callback(lambda _t: outbox.put({"type": "_end"}))
    try:
        yield {"type": "container.exec.started", "container_id": container_id, "commands": len(commands)}
        while (event := await outbox.get())["type"] != "_end":
            yield event
    finally:  # the end, or a client that went away: a command held back for it must not wait on
        outbox.close()
    try:
        outputs = task.result()
    except CoveError as exc:
        yield {"type": "error", **exc.to_dict()["error"]}
        return
    yield {"type": "container.exec.completed", "exec": _exec_object(container_id, outputs)}
