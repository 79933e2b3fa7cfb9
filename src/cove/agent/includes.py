"""``include``: what a response, its items and its events show of the data Cove keeps.

Cove keeps every item whole (the model reads code interpreter outputs and encrypted reasoning on the
next turn, whatever the client asked to see); what the client sees follows OpenAI:

- ``code_interpreter_call.outputs``: a ``code_interpreter_call`` shows ``outputs: null`` without it.
- ``reasoning.encrypted_content``: a reasoning item carries ``encrypted_content`` only with it (Cove
  asks a Responses upstream for it only then, ``upstream/responses.py``).
- ``message.output_text.logprobs``: ``logprobs`` is ``[]`` without it (asked of the upstream only then).
- ``message.input_image.image_url``: input items (and conversation items) list an ``input_image``
  with ``image_url: null`` without it (its ``file_id``, if any, stays).
- ``web_search_call.action.sources``: a search's ``action.sources`` only with it.
- ``web_search_call.results``: the numbered sources and text the model was shown (``results``, Cove's)
  only with it.

Views copy only what they change: events and stored items are shared and never modified.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from cove.upstream.base import ENCRYPTED_REASONING, LOGPROBS

CODE_OUTPUTS = "code_interpreter_call.outputs"
INPUT_IMAGE_URL = "message.input_image.image_url"
SEARCH_SOURCES = "web_search_call.action.sources"
SEARCH_RESULTS = "web_search_call.results"


def output_item(item: dict[str, Any], include: Iterable[str] | None) -> dict[str, Any]:
    """An output item as shown with ``include``."""
    shown = set(include or ())
    kind = item.get("type")
    if kind == "code_interpreter_call" and CODE_OUTPUTS not in shown and item.get("outputs") is not None:
        return {**item, "outputs": None}
    if kind == "reasoning" and ENCRYPTED_REASONING not in shown and "encrypted_content" in item:
        return {key: value for key, value in item.items() if key != "encrypted_content"}
    if kind == "web_search_call":
        return _search_call(item, shown)
    if kind == "message" and LOGPROBS not in shown and any(part.get("logprobs") for part in item.get("content", [])):
        return {**item, "content": [{**part, "logprobs": []} if part.get("logprobs") else part
                                    for part in item["content"]]}
    return item


def _search_call(item: dict[str, Any], shown: set[str]) -> dict[str, Any]:
    action = item.get("action")
    hide_sources = SEARCH_SOURCES not in shown and isinstance(action, dict) and "sources" in action
    hide_results = SEARCH_RESULTS not in shown and "results" in item
    if not (hide_sources or hide_results):
        return item
    view = {key: value for key, value in item.items() if not (hide_results and key == "results")}
    if hide_sources:
        assert isinstance(action, dict)
        view["action"] = {key: value for key, value in action.items() if key != "sources"}
    return view


def response(body: dict[str, Any], include: Iterable[str] | None) -> dict[str, Any]:
    output = body.get("output") or []
    shown = [output_item(item, include) for item in output]
    if all(new is old for new, old in zip(shown, output, strict=True)):
        return body
    return {**body, "output": shown}


def event(body: dict[str, Any], include: Iterable[str] | None) -> dict[str, Any]:
    if isinstance(body.get("item"), dict):
        item = output_item(body["item"], include)
        return body if item is body["item"] else {**body, "item": item}
    if isinstance(body.get("response"), dict):
        shown = response(body["response"], include)
        return body if shown is body["response"] else {**body, "response": shown}
    return body


async def events(stream: AsyncIterator[dict[str, Any]], include: Iterable[str] | None) -> AsyncIterator[dict[str, Any]]:
    kept = list(include or ())
    async for body in stream:
        yield event(body, kept)


def input_item(item: dict[str, Any], include: Iterable[str] | None) -> dict[str, Any]:
    """An input item as ``input_items`` lists it with ``include`` (an image's ``detail`` defaults to
    ``auto``, as OpenAI lists it)."""
    content = item.get("content")
    if not isinstance(content, list) or not any(_is_image(part) for part in content):
        return item
    with_url = INPUT_IMAGE_URL in set(include or ())
    return {**item, "content": [{"detail": "auto", **part, **({} if with_url else {"image_url": None})}
                                if _is_image(part) else part for part in content]}


def item(body: dict[str, Any], include: Iterable[str] | None) -> dict[str, Any]:
    """A conversation's item, which may be an input or an output item."""
    return output_item(input_item(body, include), include)


def _is_image(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "input_image"
