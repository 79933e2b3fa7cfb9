"""The wire objects: every field OpenAI's SDK types declare, read back through those types unchanged."""

from __future__ import annotations

import openai
import pytest
from openai.types import ContainerCreateResponse, ContainerListResponse, ContainerRetrieveResponse
from openai.types import Model as SDKModel
from openai.types.containers import FileCreateResponse, FileListResponse, FileRetrieveResponse
from openai.types.conversations import Conversation as SDKConversation
from openai.types.conversations import ConversationDeletedResource, ConversationItemList
from pydantic import BaseModel

from cove.service.objects import (
    CommandEvent,
    Container,
    ContainerFile,
    Conversation,
    Deleted,
    EgressEvent,
    ListPage,
    Model,
    audit_event,
    operator_audit_event,
)
from cove.store.models import AuditEventRow, ContainerFileRow, ContainerRow, ConversationRow


def round_trip(obj: BaseModel, sdk_type: type[openai.BaseModel]) -> None:
    """``obj`` as sent carries every field of ``sdk_type``, and the SDK reads it back as sent."""
    wire = obj.model_dump(mode="json")
    assert set(sdk_type.model_fields) <= set(wire)
    assert sdk_type.model_validate(wire).model_dump(mode="json", exclude_unset=True) == wire


def container_row(network_policy: dict[str, object]) -> ContainerRow:
    return ContainerRow(id="cntr_1", project="alpha", name="box", image="default", status="running",
                        memory_limit="4g", cpu_limit=0.5, expires_minutes=20, network_policy=network_policy,
                        secrets="sealed", created_at=1_700_000_000, last_active_at=1_700_000_060)


@pytest.mark.parametrize("sdk_type", [ContainerCreateResponse, ContainerRetrieveResponse, ContainerListResponse])
@pytest.mark.parametrize("policy", [{"type": "disabled"}, {"type": "allowlist", "allowed_domains": ["pypi.org"]}])
def test_container(sdk_type: type[openai.BaseModel], policy: dict[str, object]) -> None:
    container = Container.from_row(container_row(policy))
    round_trip(container, sdk_type)
    assert container.model_dump() == {
        "id": "cntr_1", "object": "container", "name": "box", "created_at": 1_700_000_000, "status": "running",
        "expires_after": {"anchor": "last_active_at", "minutes": 20}, "last_active_at": 1_700_000_060,
        "memory_limit": "4g", "network_policy": policy, "image": "default", "cpu_limit": 0.5}


@pytest.mark.parametrize("sdk_type", [FileCreateResponse, FileRetrieveResponse, FileListResponse])
def test_container_file(sdk_type: type[openai.BaseModel]) -> None:
    row = ContainerFileRow(id="cfile_1", container_id="cntr_1", path="/mnt/data/a.txt", bytes=5, source="user",
                           created_at=1_700_000_000)
    round_trip(ContainerFile.from_row(row), sdk_type)


def test_conversation() -> None:
    row = ConversationRow(id="conv_1", project="alpha", metadata_={"topic": "tests"}, created_at=1_700_000_000)
    round_trip(Conversation.from_row(row), SDKConversation)
    round_trip(Deleted.of("conversation", "conv_1"), ConversationDeletedResource)


def test_list_page() -> None:
    item = {"id": "msg_1", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": "hi"}]}
    round_trip(ListPage.of([item], has_more=True), ConversationItemList)
    assert ListPage.of([], has_more=False).model_dump() == {"object": "list", "data": [], "first_id": None,
                                                           "last_id": None, "has_more": False}


def test_model() -> None:
    model = Model(id="smollm2", created=1_700_000_000, owned_by="cove")
    wire = model.model_dump(mode="json")
    assert SDKModel.model_validate(wire).model_dump(mode="json", exclude_unset=True) == wire
    # shutdown_date, OpenAI's one optional field, is left out: Cove's models have none.
    assert {name for name, field in SDKModel.model_fields.items() if field.is_required()} <= set(wire)


def test_audit_events_keep_the_stored_data_in_order() -> None:
    command = AuditEventRow(id="aud_1", project="alpha", container_id="cntr_1", response_id=None, kind="command",
                            created_at=1.5, data={"command": "ls", "workdir": None,
                                                  "outcome": {"type": "exit", "exit_code": 0}, "duration_ms": 3.2})
    egress = AuditEventRow(id="aud_2", project="beta", container_id="cntr_1", response_id="resp_1", kind="egress",
                           created_at=2.5, data={"method": "GET", "host": "pypi.org", "port": 443, "allowed": True,
                                                 "reason": "allowed by the policy", "address": "151.101.0.223"})
    for row, kind in ((command, CommandEvent), (egress, EgressEvent)):
        event = audit_event(row)
        assert isinstance(event, kind)
        assert list(event.model_dump().items()) == [
            ("id", row.id), ("object", "container.audit_event"), ("type", row.kind),
            ("container_id", "cntr_1"), ("response_id", row.response_id), ("created_at", row.created_at),
            *row.data.items()]
        assert operator_audit_event(row).model_dump() == {**event.model_dump(), "project": row.project}
