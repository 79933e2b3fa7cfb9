"""Tables. Rows are ordered by ``seq`` (insertion order), never by timestamps."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def columns(row: Base) -> dict[str, Any]:
    """A new object's attributes as a row for a Core ``insert`` of its table (those not set take their
    defaults): on a hot path the ORM's unit of work costs more than the insert itself."""
    state = inspect(row)
    return {attribute.key: state.dict[attribute.key] for attribute in state.mapper.column_attrs
            if attribute.key in state.dict}


class ContainerRow(Base):
    __tablename__ = "containers"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(256))
    image: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    memory_limit: Mapped[str] = mapped_column(String(8))
    cpu_limit: Mapped[float] = mapped_column(Float)
    expires_minutes: Mapped[int] = mapped_column(Integer)
    network_policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    secrets: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    """The domain secrets with their placeholders, as one sealed JSON list (``cove.store.sealing``)."""
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_active_at: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    """The replica whose engine runs it (``Settings.replica``): only that server can reach it."""


class ContainerFileRow(Base):
    __tablename__ = "container_files"
    __table_args__ = (UniqueConstraint("container_id", "path"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    container_id: Mapped[str] = mapped_column(ForeignKey("containers.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(4096))
    bytes: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)


class ResponseRow(Base):
    __tablename__ = "responses"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    background: Mapped[bool] = mapped_column(Boolean)
    stored: Mapped[bool] = mapped_column(Boolean)
    previous_response_id: Mapped[str | None] = mapped_column(String(64), index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The response object as last saved (without ``output``, which lives in items)."""
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    """What is needed to run it (again): the validated create parameters."""
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    """When a running background response last showed it is alive (every ``COVE_HEARTBEAT_SECONDS``)."""
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)
    """A background response's step, calls in flight and last checkpoint (``agent/progress.py``): what
    the progress endpoint shows and a resume after a restart goes on from."""
    resumes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Server restarts it was resumed after (at most ``COVE_MAX_RESUMES``)."""
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None, index=True)
    """The replica running it (``Settings.replica``); None for a background response nobody claimed yet."""


class ResponseItemRow(Base):
    """An input or output item of a response, in order."""

    __tablename__ = "response_items"
    __table_args__ = (UniqueConstraint("response_id", "role", "position"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(128), index=True)
    response_id: Mapped[str] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(8))
    position: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class ResponseEventRow(Base):
    """Stream events of a background response, kept so clients can resume by sequence number."""

    __tablename__ = "response_events"

    response_id: Mapped[str] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"), primary_key=True)
    sequence_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class ConversationRow(Base):
    __tablename__ = "conversations"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)


class ConversationItemRow(Base):
    __tablename__ = "conversation_items"
    __table_args__ = (UniqueConstraint("conversation_id", "id"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(128))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)


class AuditEventRow(Base):
    """A command run or an egress decision, kept for ``GET /v1/containers/{id}/audit``."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_container_seq", "container_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    container_id: Mapped[str] = mapped_column(String(64), index=True)
    response_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class AuditPrunedRow(Base):
    """How many of a container's oldest audit events were pruned (beyond its project's ``audit_rows``)."""

    __tablename__ = "audit_pruned"

    container_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pruned: Mapped[int] = mapped_column(BigInteger)


class LockRow(Base):
    """A row updated first in a transaction that checks a quota, so such transactions run one at a time
    (a row lock on PostgreSQL, the write lock on SQLite) and two of them never both see room for one."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class StoredFileRow(Base):
    """A file uploaded to ``/v1/files``: its metadata; the bytes live in the blob store under ``id``."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_project_seq", "project", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(128))
    filename: Mapped[str] = mapped_column(String(1024))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)


class WebhookEndpointRow(Base):
    """A project's webhook endpoint (``/v1/webhook_endpoints``); its signing secret sealed for it."""

    __tablename__ = "webhook_endpoints"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(256))
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(Text)
    secret_hint: Mapped[str] = mapped_column(String(32))
    managed: Mapped[bool] = mapped_column(Boolean, default=False)
    """Declared in the projects file: kept in step with it at start, not changed through the API."""
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class WebhookDeliveryRow(Base):
    """One event on its way to one endpoint: the durable queue the deliverer works from."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    event_id: Mapped[str] = mapped_column(String(64))
    """The event's id (``webhook-id``): the same for every endpoint and every retry, so receivers dedupe."""
    endpoint_id: Mapped[str] = mapped_column(String(64), index=True)
    project: Mapped[str] = mapped_column(String(128))
    response_id: Mapped[str | None] = mapped_column(String(64), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    """The exact body sent (and signed), kept as text so every retry sends the same bytes."""
    status: Mapped[str] = mapped_column(String(16))
    """``pending``, ``delivered`` or ``failed`` (every attempt used)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    last_error: Mapped[str | None] = mapped_column(String(512), nullable=True, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
    delivered_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)


class SnapshotRow(Base):
    """A container's disk as it was at one moment (``disks/snapshots/<id>.img``), with the image it ran on.

    It outlives its container until deleted. ``response_id`` marks the snapshot Cove takes at the end of
    a response that used a container (a branch point for continuations), kept out of the snapshot lists."""

    __tablename__ = "snapshots"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    container_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(256), nullable=True, default=None)
    image: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """The container's file records (``container_files``) when it was taken; a container made from it gets them."""
    response_id: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None, index=True)
    generation: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    """For a response's snapshot: how far the container's use by responses had got (``ContainerService``)."""
    created_at: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    """The replica on whose disk it lies (its container's holder when it was taken)."""


class ReplicaRow(Base):
    """A server sharing the store with others (PostgreSQL): alive while its heartbeat is recent
    (``service/replicas.py``); a replica whose heartbeat stopped has its responses taken over."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)


class FleetNodeRow(Base):
    """A fleet node as its ``SandboxHost`` last reported it (``service/fleet.py``); placement locks these rows."""

    __tablename__ = "fleet_nodes"

    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    incarnation: Mapped[str] = mapped_column(String(64))
    memory: Mapped[int] = mapped_column(BigInteger)
    cpus: Mapped[float] = mapped_column(Float)
    slots: Mapped[int] = mapped_column(Integer)
    images: Mapped[list[str]] = mapped_column(JSON)
    alive: Mapped[bool] = mapped_column(Boolean)
    seen_at: Mapped[int] = mapped_column(BigInteger)
    used_memory: Mapped[int] = mapped_column(BigInteger, default=0)
    used_cpus: Mapped[float] = mapped_column(Float, default=0.0)
    used_slots: Mapped[int] = mapped_column(Integer, default=0)
    """What the node's placed containers take, kept with each placement so that placing reads one row per
    node rather than summing the placements."""


class FleetPlacementRow(Base):
    """Which node (and which of its incarnations) holds a container, and the share of the node it takes.

    A table of its own rather than a column of ``containers``: placement happens before the container's
    row exists, and a container's API replica (``holder``) is another matter than its node."""

    __tablename__ = "fleet_placements"

    container_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String(128), index=True)
    incarnation: Mapped[str] = mapped_column(String(64))
    memory: Mapped[int] = mapped_column(BigInteger)
    cpus: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(8))
    """``placed``, or ``lost`` with its node."""
    placed_at: Mapped[int] = mapped_column(BigInteger)


class FleetSnapshotRow(Base):
    """Which fleet node holds a snapshot's files (its disk, copied by reference on that node's own disk):
    containers made from the snapshot must be placed there. Kept apart from ``snapshots`` like placements
    from ``containers``: a fork's snapshot is never a ``snapshots`` row."""

    __tablename__ = "fleet_snapshots"

    snapshot_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String(128), index=True)
    state: Mapped[str] = mapped_column(String(8))
    """``kept``, or ``lost`` with its node."""
    taken_at: Mapped[int] = mapped_column(BigInteger)


class SkillRow(Base):
    """A project's skill (``/v1/skills``): its versions are ``SkillVersionRow``; name and description
    are its default version's."""

    __tablename__ = "skills"
    __table_args__ = (Index("ix_skills_project_seq", "project", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    default_version: Mapped[int] = mapped_column(Integer)
    latest_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)


class SkillVersionRow(Base):
    """One version of a skill: its front matter and size; the zip Cove made of its files lives in the
    blob store under ``id``, as uploaded files' bytes do."""

    __tablename__ = "skill_versions"
    __table_args__ = (UniqueConstraint("skill_id", "version"), Index("ix_skill_versions_project", "project"))

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    skill_id: Mapped[str] = mapped_column(String(64), ForeignKey("skills.id", ondelete="CASCADE"))
    project: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    """The zip's size (what the blob store holds)."""
    created_at: Mapped[int] = mapped_column(BigInteger)


class ContainerSkillRow(Base):
    """A skill put in a container (``/skills/<name>``), so a later request naming the container tells
    the model of it; the newest of a name wins, as it does on disk."""

    __tablename__ = "container_skills"
    __table_args__ = (UniqueConstraint("container_id", "name"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    container_id: Mapped[str] = mapped_column(ForeignKey("containers.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(String(128))


class ConsoleSessionRow(Base):
    """A web console sign-in (``service/console_sessions.py``), in the store so that any replica serves
    the browser: the browser's cookie holds the session id, this row only its SHA-256 (a copy of the table
    signs nobody in), the API key sealed, the CSRF token and the expiry."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    key: Mapped[str] = mapped_column(Text)
    """The API key the session signed in with, sealed (``store/sealing.py``)."""
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
