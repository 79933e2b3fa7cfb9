"""Responses: create (plain, streamed, background), read, delete, cancel, and their input items.

Every response runs as a ``Run`` task. Stored responses are written to the store when created
(with their input) and when they end (with their output), so a finished response is readable
at once and a crash can leave nothing half-written but a status, which start-up repairs: a
background response goes on from its last checkpoint (its stream events and ``progress`` in the
store, ``agent/resume.py``), others fail. Every response ends at ``COVE_RESPONSE_TIME_LIMIT``; a
running background response's row gets a heartbeat with its step every ``COVE_HEARTBEAT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import math
import operator
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, delete, func, insert, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from cove import telemetry
from cove.agent.compaction import Compactor, CompactParams, take_trigger
from cove.agent.events import EventLog
from cove.agent.items import normalize_input
from cove.agent.loop import Turn, check_input, fit_context, model_request, run_response
from cove.agent.progress import Progress
from cove.agent.request import INLINE_BYTES, CreateParams, sized
from cove.agent.response_object import echo_tools, new_response
from cove.agent.resume import replay, resume
from cove.config import Settings
from cove.errors import Conflict, CoveError, InvalidRequest, NotFound, SandboxUnavailable
from cove.ids import new_id
from cove.service import history, locks
from cove.service.admission import KEPT
from cove.service.background import FairQueue
from cove.service.compaction import CompactionSeal, compact
from cove.service.containers import ContainerService
from cove.service.file_inputs import FileInputs
from cove.service.files import FileService
from cove.service.mcp import McpServers, ResponseMcp
from cove.service.pagination import Page, paginate
from cove.service.project_files import ProjectFileService
from cove.service.projects import ProjectPolicies
from cove.service.replicas import Replicas
from cove.service.runs import Run
from cove.service.secrets import SecretKeeper, network_limits, refuse_sealed
from cove.service.skill_bundles import Bundle
from cove.service.skills import SkillService, mounted
from cove.service.snapshots import SnapshotService
from cove.service.web_search import WebSearchEngines
from cove.service.webhooks import WebhookService
from cove.service.workspace import ContainerWorkspace
from cove.store import notify
from cove.store.bulk import insert_rows
from cove.store.db import Database
from cove.store.models import ConversationItemRow, ReplicaRow, ResponseEventRow, ResponseItemRow, ResponseRow
from cove.store.writer import Write, execute
from cove.tools.environment import ContainerAuto
from cove.upstream.registry import ModelRegistry

log = logging.getLogger(__name__)

# The write path's statements, Core rather than ORM flushes (a fraction of the CPU), and module
# constants so that the store's writer runs each once for every response waiting (store/writer.py).
_INSERT_RESPONSE = insert(ResponseRow)
_INSERT_ITEMS = insert(ResponseItemRow)
_SET_STATUS = update(ResponseRow).where(ResponseRow.id == bindparam("b_id")).values(status=bindparam("b_status"))
_SAVE_RESULT = update(ResponseRow).where(ResponseRow.id == bindparam("b_id")).values(
    status=bindparam("b_status"), body=bindparam("b_body", type_=ResponseRow.__table__.c.body.type))
_SAVE_PROGRESS = update(ResponseRow).where(ResponseRow.id == bindparam("b_id")).values(
    heartbeat_at=bindparam("b_heartbeat"),
    progress=bindparam("b_progress", type_=ResponseRow.__table__.c.progress.type))
_RESTARTED = "The server restarted while this response was being generated; run it again."
_ENDED = frozenset({"response.completed", "response.failed", "response.incomplete"})
"""Stream events after which a response's stream has nothing more (a cancelled one just ends)."""
_RUNNING = ("queued", "in_progress")
_CLAIM_LOCK = 0x636C61
"""The first key of the advisory locks that take one project's background claims one at a time (the
second is the project's hash); the migration lock (``store/db.py``) is a single-key lock, apart."""
_CANCEL_WAIT = 10.0
"""Seconds a cancel waits for the replica running the response to stop it."""


async def _next_event_number(session: AsyncSession, response_id: str) -> int:
    """The sequence number a response's next stored stream event gets."""
    last = await session.scalar(select(ResponseEventRow.sequence_number).where(
        ResponseEventRow.response_id == response_id).order_by(ResponseEventRow.sequence_number.desc()).limit(1))
    return 0 if last is None else last + 1


class ResponseService:
    def __init__(self, db: Database, models: ModelRegistry, containers: ContainerService, files: FileService,
                 settings: Settings, *, policies: ProjectPolicies, secrets: SecretKeeper,
                 project_files: ProjectFileService, search: WebSearchEngines | None = None,
                 webhooks: WebhookService | None = None, snapshots: SnapshotService | None = None,
                 skills: SkillService | None = None, mcp: McpServers | None = None) -> None:
        self.db = db
        self.skills = skills
        """Reads the skills a ``container_auto`` names (None: skills are refused)."""
        self.mcp = mcp
        """Where ``mcp`` tools may connect, and their connections (None: ``mcp`` tools cannot connect)."""
        self.snapshots = snapshots
        """Snapshots a response's container at its end, and branches continuations (None: they share it)."""
        self.webhooks = webhooks
        """Sends the project's webhooks when a background response ends (None: no webhooks)."""
        self.search = search or WebSearchEngines()
        """Each project's web search engine (none configured: a ``web_search`` tool is a 400)."""
        self.containers = containers
        self.files = files
        self.project_files = project_files
        self.file_inputs = FileInputs(project_files)
        self.policies = policies
        self.secrets = secrets
        self.models = models
        self.settings = settings
        self.runs: dict[str, Run] = {}
        self._queue = FairQueue(lambda project: policies.quotas(project).background_running)
        self._workers: list[asyncio.Task[None]] = []
        self._resuming: set[str] = set()
        """Background responses a restart cut off, waiting in the queue to go on."""
        self._taken: set[str] = set()
        """Responses a worker of this server is starting or running."""
        self.replicas = Replicas(db, settings)
        self.listener = notify.Listener(db, f"cove-listen:{settings.replica}") if self.replicas.shared else None
        """Wakes stream readers and cancels from other replicas (PostgreSQL, ``docs/replicas.md``)."""

    # -- start-up and shutdown -------------------------------------------------------------------
    async def start(self) -> None:
        """Repairs what a stop left: a background response that was running goes on where it was (up to
        ``max_resumes`` times), other running ones fail, queued ones are queued again.

        A failed background response's stored stream gets its ``response.failed`` event too, so a
        client streaming it again (or resuming) sees why it ended instead of a stream that just stops.

        With replicas (PostgreSQL) only this replica's own responses (its previous run on the same data
        dir) are repaired here; the others' are theirs, or taken over when they die (``_replica_duties``)."""
        mine: ColumnElement[bool] = true()
        if self.replicas.shared:
            assert self.listener is not None
            await self.replicas.register()
            await self.listener.start(self._cancel_here)
            mine = ResponseRow.owner == self.replicas.me
        async with self.db.begin() as session:
            stale = list(await session.scalars(select(ResponseRow).where(ResponseRow.status == "in_progress", mine)
                                               .order_by(ResponseRow.seq).with_for_update(skip_locked=True)))
            resumed = await self._take_over(session, stale)
            queued = (await session.execute(select(ResponseRow.project, ResponseRow.id).where(
                ResponseRow.status == "queued", or_(ResponseRow.owner.is_(None), mine))
                .order_by(ResponseRow.seq))).all()
        await self._queue_resumed(resumed)
        for project, response_id in queued:
            self._queue.put(project, response_id)
        self._workers = [asyncio.create_task(self._worker()) for _ in range(self.settings.background_workers)]
        self._workers.append(asyncio.create_task(self._heartbeats()))
        if self.replicas.shared:
            self._workers.append(asyncio.create_task(self._replica_duties()))

    async def _take_over(self, session: AsyncSession, stale: list[ResponseRow]) -> list[ResponseRow]:
        """Running responses whose server is gone (restarted, or a dead replica): a background one goes on
        here (up to ``max_resumes`` times), the others fail. Returns those that go on."""
        resumed: list[ResponseRow] = []
        for row in stale:
            if row.background and row.resumes < self.settings.max_resumes:
                row.resumes += 1
                row.owner = self.replicas.me
                resumed.append(row)
            else:
                await self._fail_stale(session, row)
        return resumed

    async def _queue_resumed(self, resumed: list[ResponseRow]) -> None:
        async with self.db.begin() as session:
            for row in resumed:  # followed and read as running at once, before a worker takes it up
                await self._rebuild(session, row, resuming=True)
                self._resuming.add(row.id)
                self._queue.put(row.project, row.id)

    async def _replica_duties(self) -> None:
        """Every ``heartbeat_seconds`` (PostgreSQL): this replica's heartbeat; dead replicas buried and
        their responses taken over (each by one replica: ``FOR UPDATE SKIP LOCKED``); and background
        responses queued by any replica put in this one's queue too (whichever worker claims one first
        runs it, ``_run_queued``)."""
        while True:
            try:
                if not await self.replicas.beat():
                    self._fence()
                    await self.replicas.register()
                await self.replicas.bury()
                await self._adopt_orphans()
                async with self.db.begin() as session:
                    queued = (await session.execute(select(ResponseRow.project, ResponseRow.id).where(
                        ResponseRow.status == "queued", or_(ResponseRow.owner.is_(None),
                                                            ResponseRow.owner == self.replicas.me))
                        .order_by(ResponseRow.seq)
                        .limit(self.settings.background_workers * 4))).all()
                for project, response_id in queued:
                    self._queue.put(project, response_id)
            except Exception:  # the store is away for a moment: the next round tries again
                log.exception("replica duties failed; will retry")
            await asyncio.sleep(self.settings.heartbeat_seconds)

    async def _adopt_orphans(self) -> None:
        """Responses owned by a replica that is no longer registered (or by none: stored before replicas):
        running ones taken over, claimed but not started ones queued again."""
        async with self.db.begin() as session:
            orphans = list(await session.scalars(select(ResponseRow).where(
                ResponseRow.status.in_(_RUNNING), or_(
                    ResponseRow.owner.not_in(select(ReplicaRow.id)),
                    and_(ResponseRow.owner.is_(None), ResponseRow.status == "in_progress"))).order_by(ResponseRow.seq)
                .limit(100).with_for_update(skip_locked=True)))
            for row in orphans:
                if row.status == "queued":
                    row.owner = None
                    self._queue.put(row.project, row.id)
            stale = [row for row in orphans if row.status == "in_progress"]
            for row in stale:
                log.warning("taking over response %s from replica %s, which stopped", row.id, row.owner)
            resumed = await self._take_over(session, stale)
        await self._queue_resumed(resumed)

    def _fence(self) -> None:
        """This replica was taken for dead (its heartbeat row was deleted): others have taken its responses
        over, so its own runs stop and write nothing more."""
        log.error("this replica (%s) was taken for dead by the others: stopping its %d runs without saving them",
                  self.replicas.me, len(self.runs))
        for run in list(self.runs.values()):
            run.fenced = True
            if run.task is not None:
                run.task.cancel()

    def _cancel_here(self, response_id: str) -> None:
        """Another replica asked (``notify.CANCEL``) to stop a response running here."""
        run = self.runs.get(response_id)
        if run is not None and run.task is not None:
            run.task.cancel()

    async def _fail_stale(self, session: AsyncSession, row: ResponseRow) -> None:
        """A response a restart cut off that does not go on: failed, saying why, with the output its
        stream had shown (a background one), and its webhook."""
        message = _RESTARTED
        if row.background and self.settings.max_resumes:
            message = (f"The server restarted while this response was being generated, {row.resumes + 1} times; "
                       f"it was resumed {row.resumes} times (COVE_MAX_RESUMES) and is not resumed again.")
        body = dict(row.body)
        body.update(status="failed", error={"code": "server_error", "message": message})
        row.status, row.body = "failed", body
        if not row.background:
            return
        events = list(await session.scalars(select(ResponseEventRow.data).where(
            ResponseEventRow.response_id == row.id).order_by(ResponseEventRow.sequence_number)))
        if self.replicas.shared:  # a reader following it on another replica sees the end at once
            await session.execute(notify.NOTIFY_EVENTS, {"response_id": row.id})
        output, cut = replay(events)
        for index in cut:
            output[index]["status"] = "incomplete"
        await insert_rows(session, ResponseItemRow, (
            {"id": item.get("id") or new_id("item"), "response_id": row.id, "role": "output", "position": i,
             "data": item} for i, item in enumerate(output)))
        number = events[-1]["sequence_number"] + 1 if events else 0
        session.add(ResponseEventRow(response_id=row.id, sequence_number=number, data={
            "type": "response.failed", "sequence_number": number, "response": {**body, "output": output}}))
        if self.webhooks is not None:
            await execute(session, await self.webhooks.response_finished(row.project, row.id, "failed"))

    async def stop(self) -> None:
        """Stops the runs. With replicas their responses are handed over rather than cancelled: their
        events stored, the runs stopped without saving more, and this replica's row removed, so the
        others take them over at once (as after a crash, ``_adopt_orphans``); with one server they end
        cancelled."""
        for task in self._workers:
            task.cancel()
        if self.replicas.shared:
            await asyncio.gather(*(run.flush() for run in self.runs.values()), return_exceptions=True)
            for run in self.runs.values():
                run.fenced = True
        for run in list(self.runs.values()):
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*self._workers, *(r.task for r in self.runs.values() if r.task),
                             return_exceptions=True)
        if self.listener is not None:
            await self.listener.stop()
            await self.replicas.leave()

    # -- create -----------------------------------------------------------------------------------
    async def create(self, project: str, params: CreateParams, *, earlier: list[dict[str, Any]] | None = None,
                     generate: bool = True, body_bytes: int | None = None) -> Run:
        """Validates, stores and starts (or queues) a response; returns its run. ``earlier``: the items
        before its input when the caller holds them (a WebSocket continuing a response it made, even
        one not stored), else they are read from the store. ``generate``: False for a WebSocket warm-up
        (``Turn.generate``). ``body_bytes``: the size of the request's JSON where the caller knows it;
        a small one (``INLINE_BYTES``) is prepared on the event loop, not in worker threads."""
        params.check()
        refuse_sealed(params.tools, "tools")
        self.policies.check_tools(project, params.tools)
        if self.mcp is not None:
            self.mcp.check(project, params.tools)
        await self._check_tool_environments(project, params)
        small = body_bytes is not None and body_bytes <= INLINE_BYTES
        turn, run = await self._prepare(project, params, earlier, small=small)
        turn.generate = generate
        # An item the upstream cannot take is a 400, not a failed run (checked off the event loop unless
        # small: it is proportional to the input).
        await sized(small, check_input, turn, run.input_items)
        if isinstance(turn.workspace, ContainerWorkspace):
            await turn.workspace.admit()  # refused now, as a 403 or 429, rather than as a failed run
            display_param = params.toolbox.display_param
            if display_param is not None:
                await turn.workspace.check_display(display_param)
        run.response["tools"] = echo_tools(self.secrets.seal_tools(params.tools, run.id))
        if turn.compactor is None:  # with compaction asked for, the run compacts an oversized input instead
            # Refuse an oversized input now, as a 400, rather than as a failed run; the first model turn
            # sends what this fitted. Inline when the whole context is the small request's own items
            # (no history, no file read into it).
            own = len(turn.context) == len(run.input_items) and all(map(operator.is_, turn.context, run.input_items))
            turn.fitted = await fit_context(turn, inline=small and own)
        if params.background:
            self._taken.add(run.id)  # no worker (found by a scan of the store) starts it before it is queued
            try:
                if run.stored:
                    await self._insert(run, params)
                run.keep_events(self.db)
                self.runs[run.id] = run
                await run.builder.lifecycle("created", "queued")  # stream clients expect "created" first
                await run.builder.lifecycle("queued")
                if self.replicas.shared and not params.stream:
                    await self._release(run.id)
            finally:
                self._taken.discard(run.id)
            self._queue.put(project, run.id)
        else:
            if run.stored:
                await self._insert(run, params)
            self._launch(run, turn)
        return run

    async def _check_tool_environments(self, project: str, params: CreateParams) -> None:
        """What a tool's new container would get is the project's to give: its network policy within the
        project's rules, its ``file_ids`` files of the project (else a 404 naming one)."""
        for index, tool in enumerate(params.tools):
            key = "environment" if "environment" in tool else "container"
            environment = tool.get(key)
            if not isinstance(environment, dict):
                continue
            if environment.get("network_policy"):
                egress = network_limits(environment["network_policy"])
                self.policies.check_network(project, egress, f"tools[{index}].environment.network_policy")
            if environment.get("file_ids"):
                await self.project_files.check(project, list(environment["file_ids"]), f"tools[{index}].{key}.file_ids")

    async def _prepare(self, project: str, params: CreateParams, earlier: list[dict[str, Any]] | None = None,
                       *, small: bool = False) -> tuple[Turn, Run]:
        # Megabytes of input are CPU work: off the event loop unless the request is small.
        new_items = await sized(small, normalize_input, params.input)
        new_items = take_trigger(new_items)
        response_id = new_id("resp")
        async with self.db.begin() as session:
            new_items = await history.resolve_references(session, project, new_items)
            run = Run(id=response_id, project=project, response=new_response(response_id, params),
                      stored=params.store is not False, background=bool(params.background),
                      conversation_id=params.conversation_id, input_items=new_items, earlier=earlier)
            return await self._turn(session, run, params), run

    async def _turn(self, session: AsyncSession, run: Run, params: CreateParams) -> Turn:
        """Everything the loop needs: history, the model, the tools and the container they use."""
        if run.earlier is None:
            run.earlier = await self._history(session, run.project, params)
        earlier = run.earlier
        model, upstream_model = await self.models.resolve(params.model)
        history_param = "conversation" if params.conversation_id else "previous_response_id"
        resolved = await self.file_inputs.resolve(
            run.project, [*earlier, *run.input_items], first_new=len(earlier), reads_files=model.reads_files,
            history_param=history_param)
        seal = CompactionSeal(self.secrets.sealer, run.project)
        context, summary = await seal.window(resolved[:len(earlier)], resolved[len(earlier):], history_param)
        toolbox = params.toolbox
        released = toolbox.released(context, run.input_items)  # an acknowledgement that does not fit: a 400
        search = self.search.setup(run.project, toolbox, model)
        workspace = None
        if toolbox.needs_container:
            workspace = await self._workspace(session, run, params)
        max_turns = self.settings.background_max_turns if run.background else self.settings.max_turns
        return Turn(model, upstream_model, params, context, toolbox, workspace, max_turns=max_turns,
                    max_tool_turns=model.max_tool_turns, released=released, progress=run.progress,
                    compactor=Compactor.of(params, seal.seal, summary), steering=run.steering,
                    search=search.engine, upstream_search=search.upstream,
                    mcp=self.mcp.for_response(run.project, run.id) if self.mcp and toolbox.mcp_servers else None)

    async def _workspace(self, session: AsyncSession, run: Run, params: CreateParams) -> ContainerWorkspace:
        """The container: named by the request, else the chain's or conversation's, else made on first use."""
        environment = params.toolbox.environment()
        named = params.container_id or (environment.get("container_id")
                                        if environment.get("type") == "container_reference" else None)
        named = named or run.response.get("container_id")  # a resumed response's own, made before the restart
        followed = None if named else await history.last_container(session, run.project, params)
        if self.replicas.shared and (named or followed):  # only its holder reaches it (or branches from it)
            await self.containers.check_here(run.project, named or followed or "", "used")
        if followed is not None and params.previous_response_id and self.snapshots is not None:
            followed = await self._branch(session, run.project, params.previous_response_id, followed)
        container_id = named or followed
        if container_id is not None:
            container = await self.containers.get(run.project, container_id)
            if container.status not in KEPT:  # a paused one resumes on first use, a stopped one starts
                raise Conflict(f"Container '{container_id}' has {container.status}; start a new chain or name a "
                               "running container.", param="container_id", code=f"container_{container.status}")
            run.response["container_id"] = container_id

        def record(new_id_: str) -> None:
            run.response["container_id"] = new_id_

        auto = environment if environment.get("type") == "container_auto" else {}
        image = self.settings.desktop_image if params.toolbox.display_param is not None else None
        if isinstance(auto.get("network_policy"), dict):  # sealed in a queued request's tools
            auto = {**auto, "network_policy": self.secrets.open_policy(auto["network_policy"], run.id)}
        return ContainerWorkspace(self.containers, self.files, run.project, response_id=run.id,
                                  project_files=self.project_files, image=image,
                                  container_id=container_id, auto=auto, on_container=record,
                                  skills=await self._skills(run.project, params, container_id))

    async def _skills(self, project: str, params: CreateParams,
                      container_id: str | None) -> tuple[SkillService, list[Bundle]] | None:
        """The skills ``container_auto`` names, read and checked now (a 400 or 404 before anything runs),
        and, with those the named or followed container already has, marked on the tool so the model
        is told of them."""
        found = params.toolbox.container_environment()
        if found is None:
            return None
        index, environment = found
        asked = environment.skills if isinstance(environment, ContainerAuto) else None
        param = f"tools[{index}].environment.skills"
        if self.skills is None:
            if asked:
                raise InvalidRequest("Skills are not supported by this server.", param=param)
            return None
        bundles: list[Bundle] = []
        if asked:
            bundles = await self.skills.resolve(project, [skill.model_dump(exclude_none=True) for skill in asked],
                                                param)
        notes = {note.name: note for note in
                 await self.skills.in_container(project, container_id)} if container_id else {}
        notes.update((note.name, note) for note in mounted(bundles))
        environment.mount(list(notes.values()))
        return (self.skills, bundles) if bundles else None

    async def _branch(self, session: AsyncSession, project: str, previous_response_id: str, container_id: str) -> str:
        """The chain's container, or a new one made from the snapshot its latest response left when
        the container has moved on since (``docs/snapshots.md``)."""
        assert self.snapshots is not None
        chain = await history.chain_ids(session, project, previous_response_id)
        snapshot = await self.snapshots.response_snapshot(session, project, chain, container_id)
        if snapshot is None:  # responses from before snapshots, or the snapshot was pruned
            return container_id
        return await self.snapshots.branch(project, container_id, snapshot)

    async def _history(self, session: AsyncSession, project: str, params: CreateParams) -> list[dict[str, Any]]:
        if params.previous_response_id:
            return await history.chain_items(session, project, params.previous_response_id)
        if params.conversation_id:
            return await history.conversation_items(session, project, params.conversation_id)
        return []

    async def count_input_tokens(self, project: str, params: CreateParams) -> int:
        refuse_sealed(params.tools, "tools")
        turn, _run = await self._prepare(project, params)
        if params.truncation == "auto":
            request = await fit_context(turn)
            return await asyncio.to_thread(turn.model.count_tokens, request)
        return await asyncio.to_thread(lambda: turn.model.count_tokens(model_request(turn)))

    async def compact(self, project: str, params: CompactParams) -> dict[str, Any]:
        """``POST /v1/responses/compact`` (``service/compaction.py``)."""
        return await compact(self.db, self.models, self.secrets.sealer, project, params)

    async def _insert(self, run: Run, params: CreateParams) -> None:
        """Stores the response with its input: queued (background, after its project's queue quota is
        checked in the same transaction) or in progress (grouped with other responses' writes)."""
        body = {k: v for k, v in run.response.items() if k != "output"}
        writes = [Write(_INSERT_RESPONSE, [{
            "id": run.id, "project": run.project, "status": "queued" if run.background else "in_progress",
            "owner": self.replicas.me, "background": run.background, "stored": True,
            "previous_response_id": params.previous_response_id,
            "conversation_id": run.conversation_id, "created_at": run.response["created_at"], "body": body,
            "request": params.model_dump(exclude_none=True)}]),
            Write(_INSERT_ITEMS, [{"id": item["id"], "response_id": run.id, "role": "input", "position": i,
                                   "data": item} for i, item in enumerate(run.input_items)])]
        if not run.background:
            await self.db.write(*writes)
            return
        async with self.db.begin() as session:
            await self._check_queue_quota(session, run.project)
            await execute(session, writes)

    async def _release(self, response_id: str) -> None:
        """A new background response nobody streams, its first events stored, left to whichever replica's
        worker claims it first. A streamed one stays with this replica, where its client follows it from
        memory; so do all until their first events are stored (they would be numbered twice)."""
        async with self.db.begin() as session:
            await session.execute(update(ResponseRow).where(ResponseRow.id == response_id,
                                                            ResponseRow.owner == self.replicas.me)
                                  .values(owner=None))

    async def _check_queue_quota(self, session: AsyncSession, project: str) -> None:
        """Room for one more queued background response of the project (checked and inserted as one)."""
        await locks.hold(session, "responses")
        quotas = self.policies.quotas(project)
        queued = await session.scalar(select(func.count()).select_from(ResponseRow).where(
            ResponseRow.project == project, ResponseRow.status == "queued"))
        if (queued or 0) + 1 > quotas.background_queued:
            raise quotas.exceeded("background_queued", f"this project may have {quotas.background_queued} "
                                                       "background responses waiting to run")

    # -- running ----------------------------------------------------------------------------------
    def _launch(self, run: Run, turn: Turn) -> None:
        self.runs[run.id] = run
        run.task = asyncio.create_task(self._execute(run, turn))

    async def _worker(self) -> None:
        while True:
            project, response_id = await self._queue.get()
            try:
                await self._run_queued(response_id)
            except Exception:
                log.exception("background response %s could not run", response_id)
            finally:
                self._queue.done(project)

    async def _run_queued(self, response_id: str) -> None:
        """Runs a queued (or resumed) response unless a worker of this server already does: with replicas
        the store is scanned for queued work, which finds it again until it is marked in progress."""
        if response_id in self._taken:
            return
        self._taken.add(response_id)
        try:
            await self._claim_and_run(response_id)
        finally:
            self._taken.discard(response_id)

    async def _claim_and_run(self, response_id: str) -> None:
        resuming = response_id in self._resuming
        self._resuming.discard(response_id)
        async with self.db.begin() as session:
            # The claim: one replica's worker takes the row (the others skip it while it is locked, and
            # see its owner once committed); a resumed one was claimed when it was taken over.
            row = await session.scalar(select(ResponseRow).where(ResponseRow.id == response_id)
                                       .with_for_update(skip_locked=not resuming))
            owners = (self.replicas.me,) if resuming else (None, self.replicas.me)
            if row is None or row.status != ("in_progress" if resuming else "queued") or row.owner not in owners:
                self.runs.pop(response_id, None)  # deleted, cancelled or claimed elsewhere while it waited
                return
            if not resuming and not await self._room_across_replicas(session, row):
                return  # left queued, unclaimed: the next scan of the store offers it again
            row.owner = self.replicas.me
            run = self.runs.get(response_id) or await self._rebuild(session, row)
            params = CreateParams.model_validate(row.request)
            try:
                turn = await self._turn(session, run, params)
            except SandboxUnavailable as exc:
                if exc.holder is not None and not resuming and await self.replicas.alive(exc.holder):
                    row.owner = exc.holder  # handed to the replica holding its container, whose scan takes it
                    self.runs.pop(response_id, None)
                    return
                await self._fail_early(run, exc)
                return
            except CoveError as exc:
                await self._fail_early(run, exc)
                return
        if run.done.is_set():  # cancelled while its turn was made
            return
        run.task = asyncio.create_task(self._execute(run, turn))
        await asyncio.wait([run.task])

    async def _room_across_replicas(self, session: AsyncSession, row: ResponseRow) -> bool:
        """Whether the project runs fewer background responses than its ``background_running`` quota on
        all replicas together (each replica's queue counts only its own). Claims of one project are taken
        one at a time (a transaction-scoped advisory lock on the project), so two replicas cannot both
        take the last place. One server (SQLite) has its queue's count only."""
        if not self.replicas.shared:
            return True
        await session.execute(select(func.pg_advisory_xact_lock(_CLAIM_LOCK, func.hashtext(row.project))))
        running = await session.scalar(select(func.count()).select_from(ResponseRow).where(
            ResponseRow.project == row.project, ResponseRow.background, ResponseRow.status.in_(_RUNNING),
            ResponseRow.owner.is_not(None)))
        return (running or 0) < self.policies.quotas(row.project).background_running

    async def _rebuild(self, session: AsyncSession, row: ResponseRow, *, resuming: bool = False) -> Run:
        """A run for a response queued before a restart, continuing its stored event numbering; when
        ``resuming`` one that was running, with the output its stored stream shows (``agent/resume.py``)."""
        items = list(await session.scalars(select(ResponseItemRow.data).where(
            ResponseItemRow.response_id == row.id, ResponseItemRow.role == "input")
            .order_by(ResponseItemRow.position)))
        response: dict[str, Any] = {**row.body, "output": []}
        cut = None
        if resuming:
            events = list(await session.scalars(select(ResponseEventRow.data).where(
                ResponseEventRow.response_id == row.id).order_by(ResponseEventRow.sequence_number)))
            response["output"], cut = await asyncio.to_thread(replay, events)
            response["status"] = "in_progress"
            response["container_id"] = (row.progress or {}).get("container_id") or response.get("container_id")
        run = Run(id=row.id, project=row.project, response=response, stored=True,
                  background=True, conversation_id=row.conversation_id, input_items=items,
                  log=EventLog(first_sequence=await _next_event_number(session, row.id)),
                  progress=Progress.of(row.progress), cut=cut)
        run.keep_events(self.db)
        self.runs[run.id] = run
        return run

    async def _fail_early(self, run: Run, exc: CoveError) -> None:
        await run.builder.fail(exc.code or "server_error", exc.message)
        await self._finish(run)

    async def _execute(self, run: Run, turn: Turn) -> None:
        builder = run.builder
        # Wall clock from when it first started (a resumed response's time before the restart counts).
        if run.cut is None:
            run.progress.started_at = run.progress.step_started_at = time.time()
        limit = asyncio.timeout(max(run.progress.started_at + self.settings.response_time_limit - time.time(), 0))
        try:
            async with limit:
                if run.stored and run.background:
                    run.progress.on_checkpoint = functools.partial(self._save_progress, run)
                    if run.cut is None:  # others were stored in progress
                        await self._set_status(run.id, "in_progress")
                if run.cut is not None:
                    if await resume(turn, builder, run.cut):
                        await builder.complete(turn.usage)
                        return
                else:
                    if not run.background:
                        await builder.lifecycle("created")
                    await builder.lifecycle("in_progress", "in_progress")
                with telemetry.span("response", {"cove.response.background": run.background}):
                    await run_response(turn, builder)
        except asyncio.CancelledError:
            await builder.cancel()
        except CoveError as exc:  # upstream failures, context overflow, a container that cannot start ...
            await builder.fail(exc.code or exc.error_type, exc.message)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and limit.expired():
                # The SDK's reasons name no time limit; max_messages is its "the agent's budget ran out".
                log.info("response %s reached its time limit (COVE_RESPONSE_TIME_LIMIT=%g s)", run.id,
                         self.settings.response_time_limit)
                await builder.incomplete("max_messages", turn.usage)
            else:
                log.exception("response %s failed", run.id)
                await builder.fail("server_error", f"The response failed: {exc}")
        finally:
            if isinstance(turn.mcp, ResponseMcp):
                await turn.mcp.aclose()
            await self._finish(run)

    async def _finish(self, run: Run) -> None:
        telemetry.response_finished(run.response["status"], run.response.get("model"))
        try:
            if run.stored and not run.fenced:
                await run.flush()
                container_id = run.response.get("container_id")
                if container_id and self.snapshots is not None:  # before a continuation can find the result
                    await self.snapshots.mark_response(run.project, container_id, run.id)
                await self._save_result(run)
        finally:
            run.done.set()
            await run.log.close()
            self.runs.pop(run.id, None)

    async def _save_result(self, run: Run) -> None:
        """The final status and body with the output items, in one transaction (with the conversation's
        new items when it has one, whose check of what it holds must be in that transaction too)."""
        output = run.response["output"]
        body = {k: v for k, v in run.response.items() if k != "output"}
        writes = [Write(_SAVE_RESULT, [{"b_id": run.id, "b_status": run.response["status"], "b_body": body}]),
                  Write(_INSERT_ITEMS, [{"id": item["id"], "response_id": run.id, "role": "output", "position": i,
                                         "data": item} for i, item in enumerate(output)])]
        hooks = (await self.webhooks.response_finished(run.project, run.id, run.response["status"])
                 if self.webhooks is not None and run.background else [])
        writes.extend(hooks)
        if run.background:  # its last turns and step, for the progress endpoint
            writes.append(Write(_SAVE_PROGRESS, [self._progress_row(run, time.time())]))
        if not (run.conversation_id and run.response["status"] in ("completed", "incomplete")):
            await self.db.write(*writes)
        else:
            async with self.db.begin() as session:
                await execute(session, writes)
                await self._append_to_conversation(session, run.conversation_id, [*run.input_items, *output])
        if hooks and self.webhooks is not None:
            self.webhooks.queued()

    @staticmethod
    async def _append_to_conversation(session: AsyncSession, conversation_id: str,
                                      items: list[dict[str, Any]]) -> None:
        known = set(await session.scalars(select(ConversationItemRow.id).where(
            ConversationItemRow.conversation_id == conversation_id,
            ConversationItemRow.id.in_([item["id"] for item in items]))))
        now = int(time.time())
        await insert_rows(session, ConversationItemRow, (
            {"id": item["id"], "conversation_id": conversation_id, "data": item, "created_at": now}
            for item in items if item["id"] not in known))

    def _progress_row(self, run: Run, now: float) -> dict[str, Any]:
        return {"b_id": run.id, "b_heartbeat": now,
                "b_progress": {**run.progress.as_json(), "container_id": run.response.get("container_id")}}

    async def _save_progress(self, run: Run) -> None:
        """A new checkpoint, stored at once, after the events it counts on (a resume replays them)."""
        await run.flush()
        now = time.time()
        await self.db.write(Write(_SAVE_PROGRESS, [self._progress_row(run, now)]))
        run.heartbeat_at = now

    async def _heartbeats(self) -> None:
        """Every ``heartbeat_seconds``: each running background response's heartbeat and step into its
        row (one statement for all), and a warning for a hosted call running past ``stuck_tool_seconds``."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            now = time.time()
            for run in list(self.runs.values()):
                for call in run.progress.calls.values():
                    if not call.reported and now - call.started_at > self.settings.stuck_tool_seconds:
                        call.reported = True
                        log.warning("response %s: its %s call %s has run for %.0f s (COVE_STUCK_TOOL_SECONDS=%g)",
                                    run.id, call.tool, call.call_id, now - call.started_at,
                                    self.settings.stuck_tool_seconds)
            beating = [run for run in self.runs.values()
                       if run.background and run.stored and run.task is not None and not run.done.is_set()]
            if not beating:
                continue
            try:
                await self.db.write(Write(_SAVE_PROGRESS, [self._progress_row(run, now) for run in beating]))
            except Exception:  # the store is away for a moment: the next beat tries again
                log.exception("could not write the heartbeats of %d responses", len(beating))
                continue
            for run in beating:
                run.heartbeat_at = now

    async def _set_status(self, response_id: str, status: str) -> None:
        await self.db.write(Write(_SET_STATUS, [{"b_id": response_id, "b_status": status}]))

    # -- read, delete, cancel ---------------------------------------------------------------------
    async def _row(self, project: str, response_id: str) -> ResponseRow:
        async with self.db.begin() as session:
            row = await session.scalar(select(ResponseRow).where(
                ResponseRow.id == response_id, ResponseRow.project == project))
        if row is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id",
                           code="response_not_found")
        return row

    def _here(self, response_id: str) -> Run | None:
        """The run of ``response_id`` when this server is the one generating it. With replicas a run
        waiting in this server's queue may have been claimed by another: only a started one counts."""
        run = self.runs.get(response_id)
        if run is not None and self.replicas.shared and run.task is None:
            return None
        return run

    async def get(self, project: str, response_id: str) -> dict[str, Any]:
        run = self._here(response_id)
        if run is not None and run.project == project and run.stored:
            return run.builder.snapshot()
        row = await self._row(project, response_id)
        async with self.db.begin() as session:
            output = list(await session.scalars(select(ResponseItemRow.data).where(
                ResponseItemRow.response_id == response_id, ResponseItemRow.role == "output")
                .order_by(ResponseItemRow.position)))
        # The status column, not the body's: a queued response's body was stored before it was queued.
        return {**copy.deepcopy(row.body), "status": row.status, "output": output}

    async def list_page(self, project: str, page: Page) -> tuple[list[dict[str, Any]], bool]:
        """Cove extension: the project's stored responses, each as last saved without ``output`` (a
        retrieve has the items), so a page is one query however long the trajectories are."""
        query = select(ResponseRow).where(ResponseRow.project == project, ResponseRow.stored.is_(True))
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, query, ResponseRow, page)
        return [{**row.body, "status": row.status} for row in rows], has_more

    async def progress(self, project: str, response_id: str) -> dict[str, Any]:
        """``GET /v1/responses/{id}/progress`` (a Cove extension): what a response is doing now, from
        this server's run when it runs here, else from its row (another server's last heartbeat)."""
        row = await self._row(project, response_id)
        run = self._here(response_id)
        if run is not None and run.project != project:
            run = None
        progress = run.progress if run is not None else Progress.of(row.progress)
        status = run.response["status"] if run is not None else row.status
        known = (run is not None and status != "queued") or row.progress is not None
        running = status == "in_progress"
        now = time.time()
        return {"object": "response.progress", "id": response_id, "status": status, "background": row.background,
                "started_at": progress.started_at if known else None,
                "heartbeat_at": run.heartbeat_at if run is not None else row.heartbeat_at,
                "turns": progress.turns, "resumes": row.resumes, "replica": row.owner,
                "step": progress.step if running else None,
                "step_started_at": progress.step_started_at if running else None,
                "tool_calls": [{"call_id": call.call_id, "tool": call.tool, "started_at": call.started_at,
                                "running_seconds": round(now - call.started_at, 3)}
                               for call in progress.calls.values()] if running else []}

    async def events(self, project: str, response_id: str, starting_after: int) -> AsyncIterator[dict[str, Any]]:
        """The stream of a background response from ``starting_after``: stored, then live."""
        row = await self._row(project, response_id)
        if not row.background:
            raise InvalidRequest("Only background responses can be streamed again.", param="stream")
        run = self._here(response_id)
        if run is None and self.listener is not None:
            return self._follow_stored(self.listener, response_id, starting_after)
        return self._replay(response_id, starting_after, run)

    async def _follow_stored(self, listener: notify.Listener, response_id: str,
                             after: int) -> AsyncIterator[dict[str, Any]]:
        """The stream of a response another replica generates (or will): its stored events above
        ``after``, then each batch as it is stored, exactly once and in order (``store/notify.py``).
        The status is read before the events: once it has ended, every event was stored before it."""
        with listener.watch(response_id) as woken:
            while True:
                async with self.db.begin() as session:
                    status = await session.scalar(select(ResponseRow.status).where(ResponseRow.id == response_id))
                    stored = list(await session.scalars(select(ResponseEventRow.data).where(
                        ResponseEventRow.response_id == response_id, ResponseEventRow.sequence_number > after)
                        .order_by(ResponseEventRow.sequence_number)))
                for event in stored:
                    after = event["sequence_number"]
                    yield event
                    if event["type"] in _ENDED:
                        return
                if status not in _RUNNING:  # ended (a cancelled one has no last event) or deleted
                    return
                await notify.wait(woken)

    async def _replay(self, response_id: str, starting_after: int, run: Run | None) -> AsyncIterator[dict[str, Any]]:
        async with self.db.begin() as session:
            stored = list(await session.scalars(select(ResponseEventRow.data).where(
                ResponseEventRow.response_id == response_id,
                ResponseEventRow.sequence_number > starting_after).order_by(ResponseEventRow.sequence_number)))
        last = starting_after
        for event in stored:
            last = event["sequence_number"]
            yield event
        if run is not None:
            async for event in run.log.follow(last):
                yield event

    async def delete(self, project: str, response_id: str) -> None:
        row = await self._row(project, response_id)
        await self._stop_elsewhere(row)
        run = self.runs.get(response_id)
        if run is not None and run.task is not None:
            run.task.cancel()
            await run.done.wait()
        async with self.db.begin() as session:
            await session.execute(delete(ResponseRow).where(ResponseRow.id == response_id))
        if self.snapshots is not None:
            await self.snapshots.forget_response(response_id)

    async def cancel(self, project: str, response_id: str) -> dict[str, Any]:
        row = await self._row(project, response_id)
        if not row.background:
            raise InvalidRequest("Only background responses can be cancelled.", param="response_id")
        if await self._stop_elsewhere(row):
            return await self.get(project, response_id)
        run = self.runs.get(response_id)
        if run is not None and run.task is not None:
            run.task.cancel()
            await run.done.wait()
        elif row.status == "queued" or run is not None:  # waiting for a worker (queued, or to resume)
            if run is None:
                async with self.db.begin() as session:
                    run = await self._rebuild(session, row)
            await run.builder.cancel()
            await self._finish(run)
        return await self.get(project, response_id)

    async def _stop_elsewhere(self, row: ResponseRow) -> bool:
        """With replicas: a running response owned by another replica is stopped there (``notify.CANCEL``,
        sent again each second until it stopped) and waited for, up to ``_CANCEL_WAIT`` seconds; returns
        whether it was another's. A queued one nobody claimed is claimed here first, so no worker elsewhere
        starts it meanwhile."""
        if self.listener is None or row.status not in _RUNNING:
            return False
        async with self.db.begin() as session:
            claimed = await session.execute(update(ResponseRow).where(
                ResponseRow.id == row.id, ResponseRow.owner.is_(None)).values(owner=self.replicas.me))
        owner = row.owner if getattr(claimed, "rowcount", 0) != 1 else self.replicas.me
        if owner == self.replicas.me:
            return False
        if owner is None:  # claimed in between: read again
            async with self.db.begin() as session:
                owner = await session.scalar(select(ResponseRow.owner).where(ResponseRow.id == row.id))
            if owner in (None, self.replicas.me):
                return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CANCEL_WAIT):
                asked = -math.inf
                while True:
                    if time.monotonic() - asked >= notify.POLL:
                        # Again each second: a notification is lost on an owner whose listening connection
                        # is being opened again (``notify.Listener``), and stopping twice is stopping once.
                        await self.listener.notify(notify.CANCEL, row.id)
                        asked = time.monotonic()
                    async with self.db.begin() as session:
                        status = await session.scalar(select(ResponseRow.status).where(ResponseRow.id == row.id))
                    if status not in _RUNNING:
                        break
                    await asyncio.sleep(0.05)
        return True

    async def input_items(self, project: str, response_id: str, page: Page) -> tuple[list[dict[str, Any]], bool]:
        await self._row(project, response_id)
        query = select(ResponseItemRow).where(ResponseItemRow.response_id == response_id,
                                              ResponseItemRow.role == "input")
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, query, ResponseItemRow, page)
        return [row.data for row in rows], has_more

    async def wait(self, run: Run) -> dict[str, Any]:
        await run.done.wait()
        return run.builder.snapshot()


async def drain(run: Run) -> None:
    """Lets a non-stored streamed run stop when nobody is left to read it."""
    if not run.stored and run.task is not None:
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run.task
