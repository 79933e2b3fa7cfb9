"""Conversations: items in order, extended by responses, and the items API."""

from __future__ import annotations

import openai
import pytest

from tests.scripted_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.root

MODEL = "scripted-model"


def test_conversation_order_and_items(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    conversation = client.conversations.create(items=[{"role": "user", "content": "first seed"}],
                                               metadata={"topic": "order"})
    assert conversation.metadata == {"topic": "order"}
    upstream.script([Reply(text="reply one"), Reply(text="reply two")])
    one = client.responses.create(model=MODEL, input="question one", conversation=conversation.id)
    two = client.responses.create(model=MODEL, input="question two", conversation={"id": conversation.id})
    assert one.conversation is not None and one.conversation.id == conversation.id
    assert two.output_text == "reply two"
    sent = [(m["role"], m["content"]) for m in upstream.requests[-1]["messages"]]
    assert sent == [("user", "first seed"), ("user", "question one"), ("assistant", "reply one"),
                    ("user", "question two")]
    items = client.conversations.items.list(conversation.id, order="asc")
    texts = [item.content[0].text if hasattr(item.content[0], "text") else item.content[0]  # type: ignore[union-attr]
             for item in items.data]
    assert texts == ["first seed", "question one", "reply one", "question two", "reply two"]
    newest = client.conversations.items.list(conversation.id, limit=1)
    assert newest.has_more and newest.data[0].id == items.data[-1].id
    added = client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "manual"}])
    item_id = added.data[0].id
    assert client.conversations.items.retrieve(item_id, conversation_id=conversation.id).id == item_id
    client.conversations.items.delete(item_id, conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(item_id, conversation_id=conversation.id)
    updated = client.conversations.update(conversation.id, metadata={"topic": "changed"})
    assert updated.metadata == {"topic": "changed"}
    deleted = client.conversations.delete(conversation.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)


def test_conversation_limits(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.conversations.create(items=[{"role": "user", "content": str(i)} for i in range(21)])
    assert info.value.body["param"] == "items"  # type: ignore[index]
