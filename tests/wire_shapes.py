"""Checks Cove's wire objects against the two references that define them: the ``openai`` SDK's types
and the Open Responses specification's OpenAPI document.

The SDK's pydantic types check every object and event (a required field missing or a wrong literal is
an error). The Open Responses schema checks what it defines: the response object, its core items
(``message``, ``function_call``, ``function_call_output``, ``reasoning``) and function tools, and
every stream event it names. Hosted tools' items and events (``shell_call``, ``code_interpreter_call``
...) are OpenAI's and are not in the specification, which wants them renamed with a vendor prefix
(``openai:shell_call``) no OpenAI client understands: Cove keeps OpenAI's names, and those are checked
against the SDK alone, as are annotations other than ``url_citation`` (the code interpreter's
``container_file_citation``). Cove's one tool type OpenAI lacks, the text editor
(``text_editor_20250429``, Anthropic's name; its calls are OpenAI ``custom_tool_call`` items), is
left out of the ``tools`` the SDK checks. The two disagree on one name: the specification streams reasoning text as
``response.reasoning.delta``/``.done``, the SDK (and OpenAI) as ``response.reasoning_text.*``. Cove
follows the SDK, and such events are checked against the specification's schema for its name.

The schema file is not part of this repository: ``OPENRESPONSES_SCHEMA`` names it, else
``../shared/reference/openresponses/openapi.json`` beside the checkout (the openresponses/openresponses
repository's ``public/openapi/openapi.json``, Apache-2.0). Without it only the SDK checks run.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from openai.types.responses import (
    CompactedResponse,
    Response,
    ResponseItem,
    ResponseOutputItem,
    ResponseStreamEvent,
)
from pydantic import TypeAdapter, ValidationError

_DEFAULT_SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "reference" / "openresponses" / "openapi.json"
_SPEC_EVENT_NAMES = {"response.reasoning_text.delta": "response.reasoning.delta",
                     "response.reasoning_text.done": "response.reasoning.done"}
_SPEC_ITEMS = {"message", "function_call", "function_call_output", "reasoning", "compaction"}
_SPEC_ANNOTATIONS = {"url_citation"}

_SDK_RESPONSE = TypeAdapter(Response)
_SDK_COMPACTED = TypeAdapter(CompactedResponse)
_SDK_OUTPUT_ITEM = TypeAdapter(ResponseOutputItem)
_SDK_ITEM = TypeAdapter(ResponseItem)
_SDK_EVENT = TypeAdapter(ResponseStreamEvent)


def schema_path() -> Path:
    return Path(os.environ.get("OPENRESPONSES_SCHEMA") or _DEFAULT_SCHEMA)


@cache
def _spec() -> dict[str, Any] | None:
    path = schema_path()
    return json.loads(path.read_text()) if path.exists() else None


def spec_available() -> bool:
    return _spec() is not None


@cache
def _validator(name: str) -> jsonschema.protocols.Validator | None:
    spec = _spec()
    if spec is None or name not in spec["components"]["schemas"]:
        return None
    root = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(root)


@cache
def _event_schemas() -> dict[str, str]:
    """Event type -> the specification's schema name for it."""
    spec = _spec() or {"components": {"schemas": {}}}
    names = {}
    for name, schema in spec["components"]["schemas"].items():
        if name.endswith("StreamingEvent"):
            names[schema["properties"]["type"]["enum"][0]] = name
    return names


def _spec_errors(name: str, value: Any, where: str) -> list[str]:
    validator = _validator(name)
    if validator is None:
        return []
    return [f"{where}: Open Responses {name}: {'/'.join(map(str, error.absolute_path)) or '(root)'}: "
            f"{error.message[:300]}" for error in validator.iter_errors(value)]


def _sdk_errors(adapter: TypeAdapter[Any], value: Any, where: str) -> list[str]:
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        # A union reports every member's complaint; the member named by the value's type says why.
        kind = value.get("type") if isinstance(value, dict) else None
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        named = [line for line in lines if kind and _member_of(line, kind)] or lines
        return [f"{where}: openai SDK: {line}" for line in named[:8]]
    return []


def _member_of(line: str, kind: str) -> bool:
    return kind.replace(".", "").replace("_", "").lower() in line.replace("_", "").lower()


def _core(item: dict[str, Any]) -> dict[str, Any]:
    """An item as the specification can check it: annotations it does not define left out."""
    if item.get("type") != "message" or not isinstance(item.get("content"), list):
        return item
    return {**item, "content": [{**part, "annotations": [a for a in part["annotations"] if a.get("type")
                                                         in _SPEC_ANNOTATIONS]} if "annotations" in part else part
                                for part in item["content"]]}


def _openai_tools(response: dict[str, Any]) -> dict[str, Any]:
    tools = response.get("tools") or []
    kept = [tool for tool in tools if not str(tool.get("type")).startswith("text_editor_")]
    return response if len(kept) == len(tools) else {**response, "tools": kept}


def response_errors(response: dict[str, Any], where: str = "response") -> list[str]:
    response = _openai_tools(response)
    errors = _sdk_errors(_SDK_RESPONSE, response, where)
    output = response.get("output", [])
    core = {**response, "output": [_core(item) for item in output if item.get("type") in _SPEC_ITEMS],
            "tools": [tool for tool in response.get("tools", []) if tool.get("type") == "function"]}
    errors += _spec_errors("ResponseResource", core, where)
    for index, item in enumerate(response.get("output", [])):
        errors += output_item_errors(item, f"{where}.output[{index}]")
    return errors


def compacted_errors(compacted: dict[str, Any], where: str = "compacted") -> list[str]:
    """``POST /responses/compact``'s answer: the SDK's ``CompactedResponse``, the spec's ``CompactResource``.
    The SDK types its output as output items, which cannot hold the user messages its own docstring
    says it holds; each item is checked as an item of a conversation instead."""
    errors = _sdk_errors(_SDK_COMPACTED, {**compacted, "output": []}, where)
    errors += _spec_errors("CompactResource", compacted, where)
    for index, item in enumerate(compacted.get("output", [])):
        errors += input_item_errors(item, f"{where}.output[{index}]")
    return errors


def output_item_errors(item: dict[str, Any], where: str = "item") -> list[str]:
    errors = _sdk_errors(_SDK_OUTPUT_ITEM, item, where)
    if item.get("type") in _SPEC_ITEMS:
        errors += _spec_errors("ItemField", _core(item), where)
    return errors


def input_item_errors(item: dict[str, Any], where: str = "input item") -> list[str]:
    """An item of ``input_items``: the SDK's ``ResponseItem`` (and the spec's item, for its core types)."""
    errors = _sdk_errors(_SDK_ITEM, item, where)
    if item.get("type") in _SPEC_ITEMS:
        errors += _spec_errors("ItemField", item, where)
    return errors


def event_errors(event: dict[str, Any], where: str = "event") -> list[str]:
    kind = str(event.get("type"))
    where = f"{where} {kind}"
    if isinstance(event.get("response"), dict):
        event = {**event, "response": _openai_tools(event["response"])}
    errors = _sdk_errors(_SDK_EVENT, event, where)
    spec_kind = _SPEC_EVENT_NAMES.get(kind, kind)
    name = _event_schemas().get(spec_kind)
    if name is not None:
        item = event.get("item")
        if isinstance(item, dict) and item.get("type") not in _SPEC_ITEMS:
            return errors + output_item_errors(item, f"{where}.item")  # a hosted tool's item: the SDK's alone
        if isinstance(event.get("annotation"), dict) and event["annotation"].get("type") not in _SPEC_ANNOTATIONS:
            event = {**event, "annotation": None}  # checked by the SDK above
        if "response" in event:
            errors += response_errors(event["response"], f"{where}.response")
            event = {**event, "response": {**event["response"], "output": [], "tools": []}}
        errors += _spec_errors(name, {**event, "type": spec_kind}, where)
    return errors
