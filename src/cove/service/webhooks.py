"""Webhooks as OpenAI sends them: a project's endpoints (``/v1/webhook_endpoints``) and the delivery of
``response.completed``, ``.failed``, ``.cancelled`` and ``.incomplete`` for background responses.

Each event is signed by the Standard Webhooks scheme (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``; HMAC-SHA256 with the endpoint's ``whsec_`` secret), which is what the ``openai``
SDK's ``client.webhooks.unwrap()`` verifies. Deliveries are rows in the store written in the same
transaction as the response's final status, so a crash cannot lose one; a deliverer task sends what
is due, one attempt per endpoint at a time (a dead receiver holds one slot, never another project's),
and retries on the ``COVE_WEBHOOK_RETRIES`` schedule. The event id stays the same across retries so
receivers can drop duplicates: delivery is at least once.

Where an endpoint may point is the operator's decision (``webhook_urls`` in the projects file): by
default any https URL of a public host, checked at every attempt as the egress proxy checks a
container's destination (``cove.egress.outbound``), because a tenant's URL is hostile to the network
Cove sits in. A URL under a prefix the operator wrote may use http and reach a private address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete, insert, select, update
from standardwebhooks import Webhook

from cove import telemetry
from cove.config import Settings
from cove.egress.outbound import checked_addresses, pinned_request
from cove.egress.policy import is_ip_literal, normalize_host
from cove.egress.resolver import Refused, Resolver, host_addresses, parse_test_hosts
from cove.errors import InvalidRequest, NotFound
from cove.ids import new_id
from cove.service.pagination import Page, paginate
from cove.service.projects import OperatorWebhook, ProjectPolicies
from cove.store.db import Database
from cove.store.models import WebhookDeliveryRow, WebhookEndpointRow
from cove.store.sealing import Sealer
from cove.store.writer import Write

log = logging.getLogger(__name__)

RESPONSE_EVENTS = {"completed": "response.completed", "failed": "response.failed",
                   "cancelled": "response.cancelled", "incomplete": "response.incomplete"}
"""A background response's final status -> the event it sends."""
EVENT_TYPES = tuple(RESPONSE_EVENTS.values())
"""The event types Cove sends (of those the SDK knows; batches, evals and the rest do not exist here)."""
MAX_ENDPOINTS = 20
"""Endpoints per project: each finished background response writes one delivery per subscribed one."""
USER_AGENT = "Cove-Webhooks/1.0"
_ERROR_CHARS = 500
_INSERT_DELIVERY = insert(WebhookDeliveryRow)


@dataclass(frozen=True)
class Target:
    """Where an endpoint's URL leads, as the operator's patterns allow it."""

    host: str
    port: int
    named_exactly: bool
    """Under a prefix the operator wrote: may resolve to a private address (never to this host)."""


class WebhookService:
    def __init__(self, db: Database, policies: ProjectPolicies, sealer: Sealer, settings: Settings,
                 resolver: Resolver, client: httpx.AsyncClient | None = None) -> None:
        self.db = db
        self.policies = policies
        self.sealer = sealer
        self.settings = settings
        self.resolver = resolver
        # No keep-alive: connections are made to checked addresses (``pinned_request``).
        self.client = client or httpx.AsyncClient(
            trust_env=False, follow_redirects=False, timeout=httpx.Timeout(settings.webhook_timeout),
            limits=httpx.Limits(max_keepalive_connections=0), headers={"User-Agent": USER_AGENT})
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        """Endpoint id -> its one attempt in flight."""

    @classmethod
    def from_settings(cls, db: Database, policies: ProjectPolicies, sealer: Sealer,
                      settings: Settings) -> WebhookService:
        resolver = Resolver(hosts=parse_test_hosts(settings.egress_test_hosts), forbidden=host_addresses())
        return cls(db, policies, sealer, settings, resolver)

    # -- endpoints ------------------------------------------------------------------------------------
    async def create(self, project: str, name: str, url: str, event_types: list[str]) -> dict[str, Any]:
        self._target(project, url, "url")
        now = int(time.time())
        secret = _new_secret()
        row = WebhookEndpointRow(id=new_id("whep"), project=project, name=_name(name),
                                 url=url, event_types=_event_types(event_types), secret="",
                                 secret_hint=_hint(secret), managed=False, created_at=now, updated_at=now)
        row.secret = self.sealer.seal(secret, _purpose(row.id))
        async with self.db.begin() as session:
            count = len(list(await session.scalars(select(WebhookEndpointRow.id).where(
                WebhookEndpointRow.project == project))))
            if count >= MAX_ENDPOINTS:
                raise InvalidRequest(f"A project may have at most {MAX_ENDPOINTS} webhook endpoints.",
                                     code="too_many_endpoints")
            session.add(row)
        return {**endpoint_object(row), "signing_secret": secret}

    async def get(self, project: str, endpoint_id: str) -> dict[str, Any]:
        return endpoint_object(await self._row(project, endpoint_id))

    async def list_page(self, project: str, page: Page) -> tuple[list[dict[str, Any]], bool]:
        query = select(WebhookEndpointRow).where(WebhookEndpointRow.project == project)
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, query, WebhookEndpointRow, page)
        return [endpoint_object(row) for row in rows], has_more

    async def update(self, project: str, endpoint_id: str, *, name: str | None, url: str | None,
                     event_types: list[str] | None) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = _name(name)
        if url is not None:
            self._target(project, url, "url")
            changes["url"] = url
        if event_types is not None:
            changes["event_types"] = _event_types(event_types)
        async with self.db.begin() as session:
            row = await self._row(project, endpoint_id, session, changing=True)
            if any(getattr(row, key) != value for key, value in changes.items()):
                for key, value in changes.items():
                    setattr(row, key, value)
                row.updated_at = int(time.time())
        return endpoint_object(row)

    async def delete(self, project: str, endpoint_id: str) -> None:
        """The endpoint and its deliveries still waiting (nothing is sent to it after this)."""
        async with self.db.begin() as session:
            await self._row(project, endpoint_id, session, changing=True)
            await session.execute(delete(WebhookDeliveryRow).where(WebhookDeliveryRow.endpoint_id == endpoint_id,
                                                                   WebhookDeliveryRow.status == "pending"))
            await session.execute(delete(WebhookEndpointRow).where(WebhookEndpointRow.id == endpoint_id))

    async def rotate_secret(self, project: str, endpoint_id: str) -> dict[str, Any]:
        """A new secret from now on, deliveries waiting included (they are signed when sent)."""
        secret = _new_secret()
        async with self.db.begin() as session:
            row = await self._row(project, endpoint_id, session, changing=True)
            row.secret, row.secret_hint = self.sealer.seal(secret, _purpose(row.id)), _hint(secret)
            row.updated_at = int(time.time())
        return {**endpoint_object(row), "signing_secret": secret}

    async def test(self, project: str, endpoint_id: str, event_type: str) -> dict[str, Any]:
        """Sends one sample event now (one attempt, not queued) and says what the endpoint answered."""
        if event_type not in EVENT_TYPES:
            raise InvalidRequest(f"event_type must be one of {', '.join(EVENT_TYPES)}.", param="event_type")
        row = await self._row(project, endpoint_id)
        event_id = new_id("evt")
        status, error = await self._attempt(row, event_id, event_payload(event_id, event_type, new_id("resp"),
                                                                          int(time.time())))
        if status is None:
            raise InvalidRequest(f"The endpoint could not be reached: {error}", param="webhook_endpoint_id",
                                 code="webhook_unreachable")
        return {"object": "webhook_endpoint.test", "webhook_endpoint_id": row.id, "event_type": event_type,
                "status_code": status, "success": True}

    async def _row(self, project: str, endpoint_id: str, session: Any = None,
                   changing: bool = False) -> WebhookEndpointRow:
        query = select(WebhookEndpointRow).where(WebhookEndpointRow.id == endpoint_id,
                                                 WebhookEndpointRow.project == project)
        if session is not None:
            row = await session.scalar(query)
        else:
            async with self.db.begin() as own:
                row = await own.scalar(query)
        if row is None:
            raise NotFound(f"No webhook endpoint found with id '{endpoint_id}'.", param="webhook_endpoint_id",
                           code="webhook_endpoint_not_found")
        assert isinstance(row, WebhookEndpointRow)
        if changing and row.managed:
            raise InvalidRequest(f"Webhook endpoint '{endpoint_id}' is set in the server's projects file; "
                                 "only its operator can change it.", param="webhook_endpoint_id",
                                 code="endpoint_managed")
        return row

    async def sync(self) -> None:
        """Makes the store's operator-declared endpoints those of the projects file: added, changed (a
        new secret applies from the next attempt) or removed with their waiting deliveries."""
        declared: dict[str, tuple[str, OperatorWebhook]] = {}
        for project, rules in self.policies.rules.items():
            for hook in rules.webhooks:
                try:
                    _event_types(list(hook.event_types))
                except InvalidRequest as exc:
                    raise ValueError(f"projects file: projects.{project}.webhooks {hook.name!r}: "
                                     f"{exc.message}") from None
                endpoint_id = "whep_" + hashlib.sha256(f"{project}\0{hook.name}".encode()).hexdigest()[:48]
                declared[endpoint_id] = (project, hook)
        now = int(time.time())
        async with self.db.begin() as session:
            kept = {row.id: row for row in await session.scalars(select(WebhookEndpointRow).where(
                WebhookEndpointRow.managed.is_(True)))}
            for endpoint_id in set(kept) - set(declared):
                await session.execute(delete(WebhookDeliveryRow).where(
                    WebhookDeliveryRow.endpoint_id == endpoint_id, WebhookDeliveryRow.status == "pending"))
                await session.delete(kept[endpoint_id])
            for endpoint_id, (project, hook) in declared.items():
                row = kept.get(endpoint_id)
                if row is None:
                    row = WebhookEndpointRow(id=endpoint_id, project=project, name=hook.name, managed=True,
                                             created_at=now, updated_at=now, secret="", secret_hint="")
                    session.add(row)
                elif (row.url, list(row.event_types), row.secret_hint) == (
                        hook.url, list(hook.event_types), _hint(hook.secret)) and \
                        self.sealer.open(row.secret, _purpose(row.id)) == hook.secret:
                    continue
                row.url, row.event_types = hook.url, list(hook.event_types)
                row.secret, row.secret_hint = self.sealer.seal(hook.secret, _purpose(endpoint_id)), _hint(hook.secret)
                row.updated_at = now

    def _target(self, project: str, url: str, param: str, trusted: bool = False) -> Target:
        """Where ``url`` leads, if the project's ``webhook_urls`` allow it (else a 400 naming ``param``);
        ``trusted``: the operator wrote the URL itself (an endpoint of the projects file)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise InvalidRequest("url must be an http(s) URL without credentials.", param=param,
                                 code="invalid_url")
        if is_ip_literal(parts.hostname):
            raise InvalidRequest("url must name its host; IP addresses are not allowed.", param=param,
                                 code="invalid_url")
        try:
            host = normalize_host(parts.hostname)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidRequest("url has an invalid host or port.", param=param, code="invalid_url") from None
        patterns = self.policies.of(project).webhook_urls
        if trusted or any(pattern != "*" and url.startswith(pattern) for pattern in patterns):
            return Target(host, port, named_exactly=True)
        if "*" in patterns and parts.scheme == "https":
            return Target(host, port, named_exactly=False)
        allowed = ", ".join("any https URL of a public host" if p == "*" else p for p in patterns)
        raise InvalidRequest(f"This project's webhook endpoints may only point at: {allowed}.", param=param,
                             code="url_not_allowed")

    # -- events ---------------------------------------------------------------------------------------
    async def response_finished(self, project: str, response_id: str, status: str) -> list[Write]:
        """The deliveries a background response ending ``status`` makes, as writes for the transaction
        that stores that status (none when no endpoint of the project wants the event)."""
        event_type = RESPONSE_EVENTS.get(status)
        if event_type is None:
            return []
        async with self.db.begin() as session:
            endpoints = (await session.execute(select(WebhookEndpointRow.id, WebhookEndpointRow.event_types).where(
                WebhookEndpointRow.project == project))).all()
        wanted = [endpoint_id for endpoint_id, types in endpoints if event_type in types]
        if not wanted:
            return []
        now = time.time()
        event_id = new_id("evt")
        payload = event_payload(event_id, event_type, response_id, int(now))
        return [Write(_INSERT_DELIVERY, [
            {"id": new_id("whdl"), "event_id": event_id, "endpoint_id": endpoint_id, "project": project,
             "response_id": response_id, "event_type": event_type, "payload": payload, "status": "pending",
             "attempts": 0, "next_attempt_at": now, "created_at": int(now)} for endpoint_id in wanted])]

    def queued(self) -> None:
        """Wakes the deliverer: deliveries were just committed."""
        self._wake.set()

    async def deliveries(self, project: str, response_id: str) -> list[dict[str, Any]]:
        async with self.db.begin() as session:
            rows = list(await session.scalars(select(WebhookDeliveryRow).where(
                WebhookDeliveryRow.project == project, WebhookDeliveryRow.response_id == response_id)
                .order_by(WebhookDeliveryRow.seq)))
        return [delivery_object(row) for row in rows]

    # -- delivery -------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.sync()
        self._task = asyncio.create_task(self._deliverer())

    async def stop(self) -> None:
        tasks = [task for task in (self._task, *self._inflight.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.aclose()

    async def _deliverer(self) -> None:
        while True:
            self._wake.clear()
            wait = 5.0
            try:
                wait = await self._start_due()
            except Exception:
                log.exception("webhook deliveries could not be read; will retry")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _start_due(self) -> float:
        """Starts an attempt for each due delivery whose endpoint has none in flight; returns how long
        until the next one is due (at most 5 s: another replica's rows are picked up by then)."""
        room = self.settings.webhook_concurrency - len(self._inflight)
        now = time.time()
        async with self.db.begin() as session:
            rows = list(await session.scalars(select(WebhookDeliveryRow).where(
                WebhookDeliveryRow.status == "pending", WebhookDeliveryRow.next_attempt_at <= now,
                WebhookDeliveryRow.endpoint_id.not_in(list(self._inflight)))
                .order_by(WebhookDeliveryRow.next_attempt_at).limit(max(room, 0) * 4)))
            upcoming = await session.scalar(select(WebhookDeliveryRow.next_attempt_at).where(
                WebhookDeliveryRow.status == "pending", WebhookDeliveryRow.next_attempt_at > now)
                .order_by(WebhookDeliveryRow.next_attempt_at).limit(1))
        for row in rows:
            if len(self._inflight) >= self.settings.webhook_concurrency:
                return 0.05  # the rest wait for a slot; a finished attempt wakes the loop
            if row.endpoint_id in self._inflight:
                continue
            task = asyncio.create_task(self._deliver(row))
            self._inflight[row.endpoint_id] = task
            task.add_done_callback(functools.partial(self._done, row.endpoint_id))
        return min(5.0, max(0.0, upcoming - now)) if upcoming is not None else 5.0

    def _done(self, endpoint_id: str, task: asyncio.Task[None]) -> None:
        self._inflight.pop(endpoint_id, None)
        if not task.cancelled() and (exc := task.exception()) is not None:  # still pending: retried
            log.error("a webhook delivery to endpoint %s failed: %r", endpoint_id, exc)
        self._wake.set()

    async def _deliver(self, delivery: WebhookDeliveryRow) -> None:
        async with self.db.begin() as session:
            endpoint = await session.scalar(select(WebhookEndpointRow).where(
                WebhookEndpointRow.id == delivery.endpoint_id))
        status: int | None
        error: str | None
        if endpoint is None:  # deleted meanwhile
            status, error = None, "the endpoint was deleted"
            attempts, final = delivery.attempts, "failed"
        else:
            status, error = await self._attempt(endpoint, delivery.event_id, delivery.payload)
            attempts = delivery.attempts + 1
            waits = self.settings.webhook_waits
            final = ("delivered" if status is not None and 200 <= status < 300
                     else "failed" if attempts > len(waits) else "pending")
        telemetry.webhook_attempted(final)
        now = time.time()
        values: dict[str, Any] = {"attempts": attempts, "status": final, "last_status_code": status,
                                  "last_error": error}
        if final == "pending":
            values["next_attempt_at"] = now + self.settings.webhook_waits[attempts - 1]
        if final == "delivered":
            values["delivered_at"] = int(now)
        async with self.db.begin() as session:
            await session.execute(update(WebhookDeliveryRow).where(WebhookDeliveryRow.id == delivery.id)
                                  .values(**values))

    async def _attempt(self, endpoint: WebhookEndpointRow, event_id: str,
                       payload: str) -> tuple[int | None, str | None]:
        """One POST of ``payload``, signed now: the receiver's status, or None and why there was none."""
        try:
            target = self._target(endpoint.project, endpoint.url, "url", trusted=endpoint.managed)
            addresses = await checked_addresses(self.resolver, target.host, target.port,
                                                named_exactly=target.named_exactly)
        except InvalidRequest as exc:  # the operator narrowed webhook_urls since
            return None, exc.message
        except Refused as exc:
            return None, exc.reason
        secret = self.sealer.open(endpoint.secret, _purpose(endpoint.id))
        sent_at = datetime.now(UTC)
        headers = {"content-type": "application/json", "webhook-id": event_id,
                   "webhook-timestamp": str(int(sent_at.timestamp())),
                   "webhook-signature": Webhook(secret).sign(event_id, sent_at, payload)}
        failure = "no address"
        for address in addresses:
            request = pinned_request(self.client, "POST", endpoint.url, target.host, target.port, address,
                                     headers=headers, content=payload.encode())
            try:
                response = await self.client.send(request)
            except httpx.TimeoutException:
                return None, f"no answer in {self.settings.webhook_timeout:g} s"
            except httpx.HTTPError as exc:
                failure = f"{type(exc).__name__} connecting to {target.host}"
                continue
            await response.aclose()
            return response.status_code, None if response.is_success else f"HTTP {response.status_code}"
        return None, failure[:_ERROR_CHARS]


def event_payload(event_id: str, event_type: str, response_id: str, created_at: int) -> str:
    """The body OpenAI sends (``openai.types.webhooks.Response*WebhookEvent``)."""
    return json.dumps({"id": event_id, "object": "event", "type": event_type, "created_at": created_at,
                       "data": {"id": response_id}}, separators=(",", ":"))


def endpoint_object(row: WebhookEndpointRow) -> dict[str, Any]:
    return {"id": row.id, "object": "webhook_endpoint", "name": row.name, "url": row.url,
            "event_types": list(row.event_types), "signing_secret_hint": row.secret_hint,
            "created_at": row.created_at, "updated_at": row.updated_at}


def delivery_object(row: WebhookDeliveryRow) -> dict[str, Any]:
    """Cove extension: a delivery as ``GET /v1/responses/{id}/webhook_deliveries`` shows it."""
    return {"id": row.id, "object": "webhook_delivery", "event_id": row.event_id, "event_type": row.event_type,
            "webhook_endpoint_id": row.endpoint_id, "status": row.status, "attempts": row.attempts,
            "last_status_code": row.last_status_code, "last_error": row.last_error,
            "next_attempt_at": int(row.next_attempt_at) if row.status == "pending" else None,
            "created_at": row.created_at, "delivered_at": row.delivered_at}


def _new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _hint(secret: str) -> str:
    return f"whsec_...{secret[-4:]}"


def _purpose(endpoint_id: str) -> str:
    return f"webhook:{endpoint_id}"


def _name(name: str) -> str:
    if not name.strip() or len(name) > 256:
        raise InvalidRequest("name must be 1 to 256 characters.", param="name")
    return name


def _event_types(types: list[str]) -> list[str]:
    if not types:
        raise InvalidRequest("event_types must name at least one event type.", param="event_types")
    for index, event_type in enumerate(types):
        if event_type not in EVENT_TYPES:
            raise InvalidRequest(f"{event_type!r} is not an event type this server sends (it sends "
                                 f"{', '.join(EVENT_TYPES)}).", param=f"event_types[{index}]",
                                 code="unsupported_event_type")
    return list(dict.fromkeys(types))
