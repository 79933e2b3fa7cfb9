"""WebSocket mode: ``client.responses.connect()`` drives responses over one socket at ``/v1/responses``.

The SDK's ``ResponsesConnection`` and its event types are the reference; the protocol as served here:

- The key goes on the handshake (``Authorization: Bearer``) and is checked as for HTTP: without a
  good one the upgrade is refused with the same 401 and error body.
- The client sends ``response.create`` (the body of ``POST /v1/responses`` plus ``type``; ``stream`` is
  implied, ``background`` refused; ``generate: false`` is a warm-up, a response completed at once
  without output that later requests chain from) and ``response.steer``. Each response's events are
  exactly the ones its SSE stream carries, from the same run (``ResponseService``), so the same
  quotas, limits and validation apply; a refused request is an ``error`` event with the HTTP ``status`` and the same
  error object, and the socket stays usable.
- ``stream_id`` names a lane: the creates of one lane run one after another (FIFO), lanes run side by
  side, and a lane's events carry its ``stream_id``. Without one, a request runs on the default lane.
- ``previous_response_id`` continues from this connection's cache of the last responses it made
  (``store: false`` ones too, which the store never holds), else from the store. A new socket has an
  empty cache: a reconnecting client continues stored responses only, as on OpenAI.
- Steering (``api/steering.py``) queues user input into a running response of this connection.

One connection must not cost the server more than it can bound: events wait for a slow client in an
outbox of about ``COVE_WEBSOCKET_BUFFER`` bytes, and a client that leaves it full (``STALL_SECONDS``)
is dropped (close code 1008) rather than held in memory; messages are capped at ``COVE_MAX_REQUEST``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from cove.agent import includes
from cove.agent.request import CreateParams
from cove.api import steering
from cove.api.auth import project_of
from cove.api.errors import validation_error_body
from cove.api.json_text import check_json_text
from cove.config import parse_size
from cove.errors import CoveError, InvalidRequest, RequestTooLarge, TooManyRequests
from cove.service.responses import ResponseService, drain
from cove.service.runs import Run

log = logging.getLogger(__name__)

_STREAM_ID = re.compile(r"[A-Za-z0-9_.-]{1,256}")
MAX_LANES = 32
"""Named lanes per connection (OpenAI's limit); the default lane does not count."""
MAX_WAITING = 32
"""``response.create`` messages waiting for their lane, across the connection: more is a 429 event."""
STALL_SECONDS = 10.0
"""How long a full outbox waits for its client to read before the client counts as gone."""
_CONTROL_SLACK = 1024 * 1024
CACHE_SIZE = 4
"""Finished unstored responses a connection keeps for continuation (stored ones are read from the store)."""
_INLINE_JSON = 64 * 1024
"""Larger messages are parsed in a worker thread, as HTTP bodies are (``api/responses.py``)."""


class Outbox:
    """Events on their way to one client: at most ``limit`` bytes of them wait, plus one.

    One writer sends. A response's events are followed from its run's log (which holds them anyway),
    so when the outbox is full its follower waits for room, not the run: a slow client never slows
    the run, which other readers and the store also follow. A client that makes no room for
    ``STALL_SECONDS`` has stopped reading: the outbox overflows and the connection is dropped rather
    than buffered without bound. Errors and steer events (one per client message) do not wait: they
    may pass the limit by ``_CONTROL_SLACK``, beyond which the outbox overflows at once."""

    def __init__(self, websocket: WebSocket, limit: int) -> None:
        self._websocket = websocket
        self._limit = limit
        self._queue: collections.deque[str] = collections.deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self.overflowed = asyncio.Event()

    async def put(self, event: dict[str, Any]) -> None:
        if self._bytes > self._limit:
            try:
                async with asyncio.timeout(STALL_SECONDS):
                    while self._bytes > self._limit and not self.overflowed.is_set():
                        self._room.clear()
                        await self._room.wait()
            except TimeoutError:
                self._overflow()
        self.put_nowait(event)

    def put_nowait(self, event: dict[str, Any]) -> None:
        if self.overflowed.is_set():
            return
        if self._bytes > self._limit + _CONTROL_SLACK:
            self._overflow()
            return
        text = json.dumps(event, separators=(",", ":"))
        self._queue.append(text)
        self._bytes += len(text)  # ASCII: json.dumps escapes the rest
        self._ready.set()

    def _overflow(self) -> None:
        self._queue.clear()
        self.overflowed.set()
        self._room.set()

    async def send_all(self) -> None:
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            text = self._queue.popleft()
            self._bytes -= len(text)
            self._room.set()
            await self._websocket.send_text(text)


@dataclass
class _Request:
    params: CreateParams
    generate: bool = True
    """False: a warm-up (``generate: false``), answered with a response without output to chain from."""


@dataclass
class _Lane:
    id: str | None
    queue: asyncio.Queue[_Request] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


@dataclass
class _Finished:
    """An unstored response this connection made: what a continuation of it needs."""

    items: list[dict[str, Any]]
    """Its context: earlier items, its input, its output (what the store's chain would give)."""
    container_id: str | None
    """Its container, which a continuation follows as it follows a stored chain's."""


@dataclass
class _Active:
    run: Run
    params: CreateParams
    lane: str | None


class Connection:
    """One client's socket: reads its messages, runs its responses lane by lane, sends their events."""

    def __init__(self, websocket: WebSocket, service: ResponseService, project: str, *, max_message: int,
                 buffer: int) -> None:
        self.websocket = websocket
        self.service = service
        self.project = project
        self.max_message = max_message
        self.outbox = Outbox(websocket, buffer)
        self.lanes: dict[str | None, _Lane] = {}
        self.waiting = 0
        self.active: dict[str, _Active] = {}
        self.finished: collections.OrderedDict[str, _Finished] = collections.OrderedDict()
        self.steers = steering.Steering(self)

    async def serve(self) -> None:
        writer = asyncio.create_task(self.outbox.send_all())
        reader = asyncio.create_task(self._read())
        overflow = asyncio.create_task(self.outbox.overflowed.wait())
        try:
            await asyncio.wait([writer, reader, overflow], return_when=asyncio.FIRST_COMPLETED)
            if overflow.done():
                log.info("dropping a WebSocket of project %s: its client stopped reading", self.project)
                with contextlib.suppress(Exception):  # the close frame queues behind what it does not read
                    async with asyncio.timeout(STALL_SECONDS):
                        await self.websocket.close(1008, "The client is not reading its events.")
        finally:
            tasks = [writer, reader, overflow, *(lane.task for lane in self.lanes.values() if lane.task)]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- reading -----------------------------------------------------------------------------------
    async def _read(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            try:
                await self._handle(data)
            except CoveError as exc:
                self.error(exc, None)
            except Exception:
                log.exception("a WebSocket message failed")
                self.error(CoveError("The server had an error while processing your message."), None)

    async def _handle(self, data: bytes) -> None:
        if len(data) > self.max_message:
            raise RequestTooLarge(self.max_message)
        await check_json_text(data)
        try:
            message = json.loads(data) if len(data) <= _INLINE_JSON else await asyncio.to_thread(json.loads, data)
        except ValueError:
            raise InvalidRequest("We could not parse the JSON of your message: it is not valid JSON.",
                                 code="invalid_json") from None
        if not isinstance(message, dict):
            raise InvalidRequest("A message must be a JSON object with a 'type'.", param="type")
        kind = message.get("type")
        if kind == "response.create":
            await self._create(message)
        elif kind == "response.steer":
            self.steers.submit(message)
        else:
            raise InvalidRequest(f"Unknown event type {kind!r}: send 'response.create' or 'response.steer'.",
                                 param="type", code="invalid_type")

    async def _create(self, message: dict[str, Any]) -> None:
        body = {k: v for k, v in message.items() if k not in ("type", "stream_id", "stream", "generate")}
        lane = message.get("stream_id")
        if lane is not None and (not isinstance(lane, str) or not _STREAM_ID.fullmatch(lane)):
            raise InvalidRequest("A stream_id is 1-256 ASCII letters, digits, '_', '-' or '.'.", param="stream_id",
                                 code="invalid_stream_id")
        generate = message.get("generate", True)
        if not isinstance(generate, bool):
            raise InvalidRequest("generate must be a boolean.", param="generate", code="invalid_type")
        try:
            if body.get("background"):
                raise InvalidRequest("background is not supported over a WebSocket: every response streams on it.",
                                     param="background")
            try:
                params = await asyncio.to_thread(CreateParams.model_validate, body)
            except ValidationError as exc:
                self._send_error(400, validation_error_body(list(exc.errors())), lane)
                return
            if self.waiting >= MAX_WAITING:
                raise TooManyRequests(f"More than {MAX_WAITING} responses are waiting on this connection; wait "
                                      "for some to finish.", code="too_many_pending_requests")
            self._lane(lane).queue.put_nowait(_Request(params, generate))
            self.waiting += 1
        except CoveError as exc:
            self.error(exc, lane)

    def _lane(self, lane_id: str | None) -> _Lane:
        lane = self.lanes.get(lane_id)
        if lane is None:
            if lane_id is not None and sum(1 for known in self.lanes if known is not None) >= MAX_LANES:
                raise InvalidRequest(f"A connection may use {MAX_LANES} stream ids.", param="stream_id",
                                     code="websocket_stream_limit_reached")
            lane = self.lanes[lane_id] = _Lane(lane_id)
            lane.task = asyncio.create_task(self._run_lane(lane))
        return lane

    # -- running -----------------------------------------------------------------------------------
    async def _run_lane(self, lane: _Lane) -> None:
        while True:
            request = await lane.queue.get()
            self.waiting -= 1
            try:
                await self.respond(request.params, lane.id, generate=request.generate)
            except Exception:  # the lane goes on with its next request
                log.exception("a WebSocket response failed")
                self.error(CoveError("The server had an error while processing your request."), lane.id)

    async def respond(self, params: CreateParams, lane: str | None, steers: list[steering.Steer] | None = None, *,
                      generate: bool = True) -> None:
        """Runs one response and sends its events; ``steers``: the queued input it commits (a successor)."""
        prior = params.previous_response_id
        pending = self.steers.take_pending(prior) if prior else []
        if pending:  # input queued while the parent waited for tool output goes first, in order
            params = params.model_copy(update={"input": [*steering.items_of(pending), *_as_items(params.input)]})
        cached = self.finished.get(prior or "")
        params = _follow_container(params, cached)
        creating = asyncio.ensure_future(self.service.create(
            self.project, params, earlier=None if cached is None else cached.items, generate=generate))
        try:
            # Shielded: a create cut off halfway (the socket closing) could leave a stored row never run.
            run = await asyncio.shield(creating)
        except asyncio.CancelledError:
            creating.add_done_callback(_drain_unread)
            raise
        except CoveError as exc:
            if steers:
                self.steers.failed(steers, "successor_creation_failed", exc.message, lane)
            else:
                self.error(exc, lane)
            if pending and prior:
                self.steers.keep_pending(prior, pending)
            return
        self.active[run.id] = _Active(run, params, lane)
        try:
            async for event in includes.events(run.log.follow(), params.include):  # shown as over SSE
                await self.outbox.put(event if lane is None else {**event, "stream_id": lane})
        finally:
            self.active.pop(run.id, None)
            if not run.done.is_set():
                await drain(run)  # the socket went away: an unstored run stops, as an SSE stream's does
        if not run.stored:
            self.finished[run.id] = _Finished([*(run.earlier or []), *run.input_items, *run.response["output"]],
                                              run.response.get("container_id"))
            while len(self.finished) > CACHE_SIZE:
                self.finished.popitem(last=False)
        await self.steers.after(run, params, lane)

    # -- sending -----------------------------------------------------------------------------------
    def error(self, exc: CoveError, lane: str | None) -> None:
        self._send_error(exc.status_code, exc.to_dict(), lane)

    def _send_error(self, status: int, body: dict[str, Any], lane: str | None) -> None:
        event = {"type": "error", "status": status, **body}
        self.send(event, lane)

    def send(self, event: dict[str, Any], lane: str | None) -> None:
        if lane is not None:
            event["stream_id"] = lane
        self.outbox.put_nowait(event)


def _follow_container(params: CreateParams, cached: _Finished | None) -> CreateParams:
    """A continuation of a cached response uses its container, as one of a stored chain does
    (``container_auto`` follows the chain's; a request naming a container keeps it)."""
    if cached is None or cached.container_id is None or params.container_id is not None:
        return params
    try:
        toolbox = params.toolbox
    except CoveError:
        return params  # the create refuses the tools, naming the bad one
    if toolbox.needs_container and toolbox.environment().get("type") == "container_auto":
        return params.model_copy(update={"container_id": cached.container_id})
    return params


def _drain_unread(creating: asyncio.Future[Run]) -> None:
    """An unstored run started for a socket that closed meanwhile has no reader: it stops."""
    if not creating.cancelled() and creating.exception() is None:
        run = creating.result()
        if not run.stored and run.task is not None:
            run.task.cancel()


def _as_items(value: str | list[Any]) -> list[Any]:
    return [{"type": "message", "role": "user", "content": value}] if isinstance(value, str) else list(value)


async def serve(websocket: WebSocket) -> None:
    """The route: the handshake's key is checked before the upgrade, then the connection runs."""
    try:
        project = await project_of(websocket)
    except CoveError as exc:
        await websocket.send_denial_response(JSONResponse(exc.to_dict(), status_code=exc.status_code))
        return
    await websocket.accept()
    settings = websocket.app.state.settings
    connection = Connection(websocket, websocket.app.state.responses, project,
                            max_message=parse_size(settings.max_request), buffer=parse_size(settings.websocket_buffer))
    await connection.serve()
