"""Input items: validated against the ``openai`` SDK's own types and normalized.

Clients send the SDK's input shapes (a bare string, easy messages without ``type``, items copied
from an earlier output). Cove stores one canonical form: every item has a ``type`` and an ``id``.
"""

from __future__ import annotations

import typing
from functools import cache
from typing import Any

from openai.types.responses import ResponseInputItemParam
from pydantic import TypeAdapter, ValidationError

from cove.errors import InvalidRequest
from cove.ids import new_id

MESSAGE_ROLES = ("user", "assistant", "system", "developer")
MESSAGE_PART_TYPES = ("input_text", "input_image", "input_file", "input_audio", "output_text", "refusal")
_STATUS_REQUIRED = ("message", "function_call", "function_call_output", "computer_call_output")
ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs",
             "compaction": "cmp", "computer_call_output": "cuo"}


def _literals(annotation: Any) -> list[Any]:
    """The values of every ``Literal`` inside ``annotation`` (through Required, Optional ...)."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [value for arg in typing.get_args(annotation) for value in _literals(arg)]


@cache
def _adapters() -> dict[str, tuple[TypeAdapter[Any], frozenset[str]]]:
    """One validator per item ``type`` from the SDK's input item union, with its required keys.

    The SDK's TypedDicts are declared under ``from __future__ import annotations``, which hides
    ``Required[...]`` from ``__required_keys__`` on Python 3.11; the raw annotations still say it.
    """
    adapters: dict[str, tuple[TypeAdapter[Any], frozenset[str]]] = {}
    for member in typing.get_args(ResponseInputItemParam):
        required = frozenset(key for key, note in member.__annotations__.items()
                             if getattr(note, "__forward_arg__", str(note)).startswith("Required["))
        for kind in _literals(typing.get_type_hints(member).get("type")):
            if kind != "message":
                adapters.setdefault(kind, (TypeAdapter(member), required))
    return adapters


def _check_message(item: dict[str, Any], where: str) -> None:
    if item.get("role") not in MESSAGE_ROLES:
        raise InvalidRequest(f"Invalid value for '{where}.role': expected one of {', '.join(MESSAGE_ROLES)}.",
                             param=f"{where}.role", code="invalid_value")
    content = item.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"Invalid type for '{where}.content': expected a string or an array of parts.",
                             param=f"{where}.content", code="invalid_type")
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in MESSAGE_PART_TYPES:
            raise InvalidRequest(f"Invalid content part at '{where}.content[{index}]'.",
                                 param=f"{where}.content[{index}]", code="invalid_value")


def normalize_input(raw: str | list[Any], param: str = "input") -> list[dict[str, Any]]:
    """Validated, canonical copies of the input items (each with ``type`` and ``id``)."""
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    items: list[dict[str, Any]] = []
    for index, original in enumerate(raw):
        where = f"{param}[{index}]"
        if not isinstance(original, dict):
            raise InvalidRequest(f"Invalid type for '{where}': expected an object.", param=where,
                                 code="invalid_type")
        item = dict(original)
        kind = item.setdefault("type", "message")
        if kind == "message":
            _check_message(item, where)
            if isinstance(item["content"], str):  # stored, and listed back, in the SDK's full form
                part = "output_text" if item["role"] == "assistant" else "input_text"
                item["content"] = [{"type": part, "text": item["content"]}]
        else:
            known = _adapters().get(kind)
            if known is None:
                raise InvalidRequest(f"Invalid value for '{where}.type': unknown item type {kind!r}.",
                                     param=f"{where}.type", code="invalid_value")
            adapter, required = known
            missing = sorted(required - item.keys())
            if missing:
                raise InvalidRequest(f"Missing required parameter: '{where}.{missing[0]}'.",
                                     param=f"{where}.{missing[0]}", code="missing_required_parameter")
            try:
                adapter.validate_python(item)
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(p) for p in first["loc"] if p != kind)
                name = f"{where}.{field}" if field else where
                raise InvalidRequest(f"Invalid value for '{name}': {first['msg']}.", param=name,
                                     code="invalid_value") from None
        item.setdefault("id", new_id(ID_PREFIX.get(kind, "item")))
        if kind in _STATUS_REQUIRED:  # listed back as OpenAI lists input items
            item.setdefault("status", "completed")
        items.append(item)
    return items
