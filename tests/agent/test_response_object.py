"""The response object as created: every field the SDK's ``Response`` declares, read back by it unchanged."""

from __future__ import annotations

from openai.types.responses import Response

from cove.agent.request import CreateParams
from cove.agent.response_object import ResponseObject, new_response


def test_the_response_object_has_every_field_of_the_sdk_response() -> None:
    assert set(Response.model_fields) <= set(ResponseObject.model_fields)
    # OpenAI sends ``store`` though the SDK does not declare it; ``container_id`` is Cove's.
    assert set(ResponseObject.model_fields) - set(Response.model_fields) == {"container_id", "store"}
    params = CreateParams.model_validate({"model": "m", "input": "x", "temperature": 0.5,
                                          "tools": [{"type": "function", "name": "f", "strict": True}]})
    created = new_response("resp_1", params)
    parsed = Response.model_validate(created)
    assert (parsed.status, parsed.temperature, parsed.tool_choice, parsed.store) == ("in_progress", 0.5, "auto", True)
    assert created["tools"] == [{"type": "function", "name": "f", "strict": True}]
