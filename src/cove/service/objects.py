"""The objects the API sends, typed, each built from its store row in one place.

Field names, order and values follow the ``openai`` package's types (``ContainerCreateResponse``,
``containers.FileCreateResponse``, ``conversations.Conversation``, ``Model``), so the JSON is what
OpenAI's clients expect; Cove's extensions (a container's ``image`` and ``cpu_limit``, the audit
trail) come after OpenAI's fields. Services return these; routers return them unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypeAliasType

from cove.sandbox.base import Outcome
from cove.store.models import (
    AuditEventRow,
    ContainerFileRow,
    ContainerRow,
    ConversationRow,
    SkillRow,
    SkillVersionRow,
    SnapshotRow,
    StoredFileRow,
)

Item = TypeVar("Item")


class _Object(BaseModel):
    """Attribute docstrings describe the fields in the OpenAPI schema, which shows every field as sent."""

    model_config = ConfigDict(use_attribute_docstrings=True, json_schema_serialization_defaults_required=True)


# -- lists and deletions ----------------------------------------------------------------------------
class ObjectList(_Object, Generic[Item]):
    """A whole list, unpaged (``/v1/models``)."""

    object: Literal["list"] = "list"
    data: list[Item]


class ListPage(ObjectList[Item], Generic[Item]):
    """One page of a cursor-paginated list; ``last_id`` is the ``after`` for the next page."""

    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, data: list[Item], has_more: bool) -> ListPage[Item]:
        return cls(data=data, first_id=_id(data[0]) if data else None, last_id=_id(data[-1]) if data else None,
                   has_more=has_more)


def _id(item: Any) -> str:
    """Typed objects carry ``id`` as an attribute; items (response and conversation items) as a key."""
    return str(item["id"] if isinstance(item, dict) else item.id)


class Deleted(_Object):
    """What a delete answers: ``{"id": ..., "object": "container.deleted", "deleted": true}``."""

    id: str
    object: str
    deleted: Literal[True] = True

    @classmethod
    def of(cls, kind: str, object_id: str) -> Deleted:
        """``kind`` is the deleted object's ``object`` (``container``, ``container.file`` ...)."""
        return cls(id=object_id, object=f"{kind}.deleted")


# -- containers -------------------------------------------------------------------------------------
class ContainerExpiresAfter(_Object):
    anchor: Literal["last_active_at"] = "last_active_at"
    minutes: int


class NetworkDisabled(_Object):
    type: Literal["disabled"] = "disabled"


class NetworkAllowlist(_Object):
    type: Literal["allowlist"] = "allowlist"
    allowed_domains: list[str]
    """Domain secrets are never shown, only the domains."""


ContainerNetworkPolicy = TypeAliasType("ContainerNetworkPolicy",
                                       Annotated[NetworkDisabled | NetworkAllowlist, Field(discriminator="type")])


class Container(_Object):
    id: str
    object: Literal["container"] = "container"
    name: str
    created_at: int
    status: Literal["running", "paused", "stopped", "expired", "lost"]
    """``paused``: a Cove extension (``POST .../pause``); its processes are frozen until resumed.
    ``stopped``: a Cove extension (``COVE_IDLE_ACTION=stop``); idle, its files kept, started by its next use.
    ``lost``: a Cove extension (the fleet, docs/fleet.md): its node died; using it answers 410."""
    expires_after: ContainerExpiresAfter
    last_active_at: int
    memory_limit: Literal["1g", "4g", "16g", "64g"]
    network_policy: ContainerNetworkPolicy
    image: str
    """Cove extension: the image the container started from."""
    cpu_limit: float
    """Cove extension: the CPUs it may use."""

    @classmethod
    def from_row(cls, row: ContainerRow) -> Container:
        return cls.model_validate({
            "id": row.id, "name": row.name, "created_at": row.created_at, "status": row.status,
            "expires_after": {"minutes": row.expires_minutes}, "last_active_at": row.last_active_at,
            "memory_limit": row.memory_limit, "network_policy": row.network_policy, "image": row.image,
            "cpu_limit": row.cpu_limit})


class Snapshot(_Object):
    """Cove extension: a container's files at one moment (``POST /v1/containers/{id}/snapshots``)."""

    id: str
    object: Literal["container.snapshot"] = "container.snapshot"
    container_id: str
    """The container it was taken of (which may since have been deleted)."""
    name: str | None
    created_at: int
    bytes: int
    """The space its disk takes, counted as if it shared nothing (it counts so against the ``disk`` quota)."""
    image: str
    """The image a container made from it runs on."""

    @classmethod
    def from_row(cls, row: SnapshotRow) -> Snapshot:
        return cls.model_validate({"id": row.id, "container_id": row.container_id, "name": row.name,
                                   "created_at": row.created_at, "bytes": row.bytes, "image": row.image})


class ContainerFile(_Object):
    id: str
    object: Literal["container.file"] = "container.file"
    container_id: str
    path: str
    bytes: int
    created_at: int
    source: Literal["user", "assistant"]
    """``user`` for uploads, ``assistant`` for files the container's commands wrote."""

    @classmethod
    def from_row(cls, row: ContainerFileRow) -> ContainerFile:
        return cls.model_validate({"id": row.id, "container_id": row.container_id, "path": row.path,
                                   "bytes": row.bytes, "created_at": row.created_at, "source": row.source})


# -- files (``/v1/files``) --------------------------------------------------------------------------
FilePurpose = Literal["assistants", "assistants_output", "batch", "batch_output", "fine-tune", "fine-tune-results",
                      "vision", "user_data", "evals"]


class FileObject(_Object):
    """An uploaded file, as the SDK's ``FileObject``."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"] = "processed"
    """Deprecated by OpenAI; a stored file is always ``processed``."""
    status_details: str | None = None

    @classmethod
    def from_row(cls, row: StoredFileRow) -> FileObject:
        return cls.model_validate({"id": row.id, "bytes": row.bytes, "created_at": row.created_at,
                                   "expires_at": row.expires_at, "filename": row.filename, "purpose": row.purpose})


# -- skills ----------------------------------------------------------------------------------------
class Skill(_Object):
    """A skill, as the SDK's ``Skill``: its name and description are its default version's."""

    id: str
    object: Literal["skill"] = "skill"
    created_at: int
    default_version: str
    description: str
    latest_version: str
    name: str

    @classmethod
    def from_row(cls, row: SkillRow) -> Skill:
        return cls(id=row.id, created_at=row.created_at, default_version=str(row.default_version),
                   description=row.description, latest_version=str(row.latest_version), name=row.name)


class SkillVersion(_Object):
    """One version of a skill, as the SDK's ``SkillVersion``."""

    id: str
    object: Literal["skill.version"] = "skill.version"
    created_at: int
    description: str
    name: str
    skill_id: str
    version: str

    @classmethod
    def from_row(cls, row: SkillVersionRow) -> SkillVersion:
        return cls(id=row.id, created_at=row.created_at, description=row.description, name=row.name,
                   skill_id=row.skill_id, version=str(row.version))


class DeletedSkillVersion(_Object):
    """What deleting a version answers, as the SDK's ``DeletedSkillVersion``."""

    id: str
    object: Literal["skill.version.deleted"] = "skill.version.deleted"
    deleted: Literal[True] = True
    version: str


# -- the audit trail --------------------------------------------------------------------------------
class _AuditEvent(_Object):
    id: str
    object: Literal["container.audit_event"] = "container.audit_event"
    type: str
    container_id: str
    response_id: str | None
    """The response whose tools ran the command (or, for egress, used the container then)."""
    created_at: float


class CommandEvent(_AuditEvent):
    """A command run in the container, through ``/exec`` or a response's tools."""

    type: Literal["command"] = "command"
    command: str
    workdir: str | None
    outcome: Outcome
    duration_ms: float


class EgressEvent(_AuditEvent):
    """A request through the egress proxy, allowed or refused, and why."""

    type: Literal["egress"] = "egress"
    method: str
    host: str
    port: int | None
    allowed: bool
    reason: str
    address: str | None
    """The address the proxy connected to (allowed requests only)."""


class ComputerOutcome(_Object):
    type: Literal["completed", "refused", "failed", "cancelled"]
    """``refused``: nothing ran (an action the display does not take); ``failed``: the display failed on
    the way; ``cancelled``: the request ended first."""
    message: str | None = None


class ComputerEvent(_AuditEvent):
    """A batch of computer actions on the container's display, through ``/computer`` or a response's
    computer tool."""

    type: Literal["computer"] = "computer"
    actions: list[dict[str, Any]]
    """As given: typed text and keys kept; a drag's path cut to its ends, with ``points`` its length."""
    outcome: ComputerOutcome
    duration_ms: float


class DisplayViewEvent(_AuditEvent):
    """A live view of the display (``/display``) that ended: who opened it and how much went each way
    (what a person typed or clicked in it is RFB input, not recorded)."""

    type: Literal["display_view"] = "display_view"
    via: Literal["api_key", "token"]
    duration_ms: float
    bytes_in: int
    """From the viewer to the display: input, if the person took over."""
    bytes_out: int


class TerminalEvent(_AuditEvent):
    """A terminal (``/pty``) that ended: what it ran, who opened it, how it ended and how much went
    each way (what was typed is terminal input, not recorded, as a live view's is not)."""

    type: Literal["terminal"] = "terminal"
    command: str | None
    """None: an interactive shell."""
    cols: int
    rows: int
    via: Literal["api_key", "token"]
    exit_code: int | None
    """None: the client left before the program ended (it was then killed)."""
    duration_ms: float
    bytes_in: int
    bytes_out: int


class PreviewEvent(_AuditEvent):
    """A request (or WebSocket session) through a preview URL that reached the container's port: who
    came in (key or token), for which path (never the query or the token), how it ended, what crossed."""

    type: Literal["preview"] = "preview"
    port: int
    method: str
    path: str
    websocket: bool
    via: Literal["api_key", "token"]
    status: int | None
    """The app's status (101: a WebSocket it accepted), or Cove's error's (502: nothing answered)."""
    duration_ms: float
    bytes_in: int
    bytes_out: int


class SnapshotEvent(_AuditEvent):
    """A snapshot of the container's files, through the API or at the end of a response (a branch point)."""

    type: Literal["snapshot"] = "snapshot"
    snapshot_id: str
    bytes: int


class ForkEvent(_AuditEvent):
    """New containers made with the container's files: a fork, or branches of responses that continued
    from one of its snapshots (``snapshot_id``) after it had moved on."""

    type: Literal["fork"] = "fork"
    containers: list[str]
    snapshot_id: str | None = None


class SkillEvent(_AuditEvent):
    """A skill put in the container (read-only at ``path``), from a response's ``container_auto`` or a create."""

    type: Literal["skill"] = "skill"
    name: str
    path: str
    files: int
    bytes: int


class McpCallEvent(_AuditEvent):
    """A call of a tool on an MCP server by a response (kept in the trail under the response's id): which
    server and tool, how long it took, how it ended; never its arguments, output or headers."""

    type: Literal["mcp_call"] = "mcp_call"
    server_label: str
    server: str
    """``host:port`` of the server's URL."""
    tool: str
    duration_ms: float
    outcome: str
    """``completed``, or the error's type (``http_error``, ``mcp_protocol_error``, ``mcp_tool_execution_error``)."""


AuditEvent = TypeAliasType("AuditEvent", Annotated[
    CommandEvent | EgressEvent | ComputerEvent | DisplayViewEvent | TerminalEvent | PreviewEvent | SnapshotEvent
    | ForkEvent | SkillEvent | McpCallEvent,
    Field(discriminator="type")])


class AuditPage(ListPage[AuditEvent]):
    """A page of a container's audit trail."""

    pruned: int
    """Cove extension: how many of the container's oldest events were pruned (its project keeps
    ``audit_rows`` per container); the list starts after them."""

    @classmethod
    def of_page(cls, page: ListPage[AuditEvent], pruned: int) -> AuditPage:
        return cls(data=page.data, first_id=page.first_id, last_id=page.last_id, has_more=page.has_more,
                   pruned=pruned)


class OperatorCommandEvent(CommandEvent):
    project: str
    """The operator's view (``cove audit``) spans projects, so it names each event's."""


class OperatorEgressEvent(EgressEvent):
    project: str
    """The operator's view (``cove audit``) spans projects, so it names each event's."""


class OperatorComputerEvent(ComputerEvent):
    project: str
    """The operator's view (``cove audit``) spans projects, so it names each event's."""


class OperatorDisplayViewEvent(DisplayViewEvent):
    project: str
    """The operator's view (``cove audit``) spans projects, so it names each event's."""


class OperatorTerminalEvent(TerminalEvent):
    project: str
    """The operator's view (``cove audit``) spans projects, so it names each event's."""


class OperatorPreviewEvent(PreviewEvent):
    project: str
    """The operator's view (``cove audit``) spans projects, so it names each event's."""


class OperatorSnapshotEvent(SnapshotEvent):
    project: str
    """The operator's view (``cove audit``) spans projects, so it names each event's."""


class OperatorForkEvent(ForkEvent):
    project: str
    """The operator's view (``cove audit``) spans projects, so it names each event's."""


class OperatorSkillEvent(SkillEvent):
    project: str
    """The operator's view (``cove audit``) spans projects, so it names each event's."""


class OperatorMcpCallEvent(McpCallEvent):
    project: str
    """The operator's view (``cove audit``) spans projects, so it names each event's."""


OperatorAuditEvent = TypeAliasType("OperatorAuditEvent", Annotated[
    OperatorCommandEvent | OperatorEgressEvent | OperatorComputerEvent | OperatorDisplayViewEvent
    | OperatorTerminalEvent | OperatorPreviewEvent | OperatorSnapshotEvent | OperatorForkEvent
    | OperatorSkillEvent | OperatorMcpCallEvent, Field(discriminator="type")])

_AUDIT_EVENT: TypeAdapter[AuditEvent] = TypeAdapter(AuditEvent)
_OPERATOR_AUDIT_EVENT: TypeAdapter[OperatorAuditEvent] = TypeAdapter(OperatorAuditEvent)


def _audit_fields(row: AuditEventRow) -> dict[str, Any]:
    return {"id": row.id, "type": row.kind, "container_id": row.container_id, "response_id": row.response_id,
            "created_at": row.created_at, **row.data}


def audit_event(row: AuditEventRow) -> AuditEvent:
    return _AUDIT_EVENT.validate_python(_audit_fields(row))


def operator_audit_event(row: AuditEventRow) -> OperatorAuditEvent:
    return _OPERATOR_AUDIT_EVENT.validate_python({**_audit_fields(row), "project": row.project})


# -- conversations and models -----------------------------------------------------------------------
class Conversation(_Object):
    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    metadata: dict[str, str]

    @classmethod
    def from_row(cls, row: ConversationRow) -> Conversation:
        return cls(id=row.id, created_at=row.created_at, metadata=row.metadata_)


class Model(_Object):
    """A model this server answers with (``/v1/models``)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
