"""The response object as created: every field the SDK's ``Response`` declares, read back by it unchanged."""

from __future__ import annotations

from openai.types.responses import Response

from cove.agent.request import CreateParams
from cove.agent.response_object import ResponseObject, new_response


def test_the_response_object_has_every_field_of_the_sdk_response() -> None:
    assert set(Response.model_fields) <= set(ResponseObject.model_fields)
    # OpenAI sends these though the SDK does not declare them; ``container_id`` is Cove's.
    assert set(ResponseObject.model_fields) - set(Response.model_fields) == {
        "container_id", "store", "presence_penalty", "frequency_penalty"}
    params = CreateParams.model_validate({"model": "m", "input": "x", "temperature": 0.5,
                                          "tools": [{"type": "function", "name": "f"},
                                                    {"type": "function", "name": "g", "strict": False}]})
    created = new_response("resp_1", params)
    parsed = Response.model_validate(created)
    assert (parsed.status, parsed.temperature, parsed.tool_choice, parsed.store) == ("in_progress", 0.5, "auto", True)
    # Echoed whole, as OpenAI does: ``strict`` defaults to true, missing fields are null.
    assert created["tools"] == [
        {"type": "function", "name": "f", "description": None, "parameters": None, "strict": True},
        {"type": "function", "name": "g", "description": None, "parameters": None, "strict": False}]


def test_times_are_whole_seconds_and_sampling_fields_carry_their_effective_values() -> None:
    created = new_response("resp_1", CreateParams.model_validate({"model": "m", "input": "x"}))
    assert isinstance(created["created_at"], int) and created["completed_at"] is None
    assert {key: created[key] for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty",
                                          "top_logprobs")} == {"temperature": 1.0, "top_p": 1.0,
                                                               "presence_penalty": 0.0, "frequency_penalty": 0.0,
                                                               "top_logprobs": 0}
    given = new_response("resp_2", CreateParams.model_validate({"model": "m", "input": "x", "temperature": 0,
                                                                "top_p": 0.5, "top_logprobs": 3}))
    assert (given["temperature"], given["top_p"], given["top_logprobs"]) == (0, 0.5, 3)
