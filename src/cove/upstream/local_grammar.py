"""Grammars that keep the embedded model's output well-formed, and decoding it as it streams.

A turn with tools is one JSON object: a message or a call of a named tool whose arguments follow its
schema; ``text.format`` JSON follows its schema. llama.cpp enforces the grammar token by token.
"""

from __future__ import annotations

import json
from typing import Any

from cove.upstream import _llama

MESSAGE_PREFIX = '{"type": "message", "content": "'
"""How a message answer starts when tools are on; its content streams out as a JSON string."""




def _gbnf_literal(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def format_schema(text_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema a ``text.format`` asks for, or None for free text."""
    if not text_format:
        return None
    if text_format.get("type") == "json_schema":
        schema = text_format.get("schema")
        return schema if isinstance(schema, dict) else {"type": "object"}
    if text_format.get("type") == "json_object":
        return {"type": "object"}
    return None


def tool_grammar(tools: list[dict[str, Any]], required: bool, content_schema: dict[str, Any] | None) -> str:
    """GBNF for one turn with tools: a message (unless a call is required) or a call of a named tool.

    ``{"type": "message", "content": "..."}`` or ``{"type": "function_call", "name": "<tool>",
    "arguments": {...}}``; each tool's arguments follow its own parameters schema.
    """
    converter = _llama.SchemaConverter()
    alternatives = []
    rules = []
    if not required:
        content = converter.visit(content_schema or {"type": "string"}, "cove-content")
        rules.append(f'cove-message ::= {_gbnf_literal(MESSAGE_PREFIX[:-1])} {content} "}}"')
        alternatives.append("cove-message")
    for i, tool in enumerate(tools):
        params = tool.get("parameters") or {"type": "object"}
        try:
            args = converter.visit(converter.resolve_refs(params), f"cove-args-{i}")
        except Exception:  # a schema the converter cannot express: allow any object
            args = converter.visit({"type": "object"}, f"cove-args-{i}")
        head = json.dumps({"type": "function_call", "name": tool["name"]})[:-1] + ', "arguments": '
        rules.append(f'cove-call-{i} ::= {_gbnf_literal(head)} {args} "}}"')
        alternatives.append(f"cove-call-{i}")
    return "\n".join([f"root ::= {' | '.join(alternatives)}", *rules, converter.format()])


ANSWER_CHARS = 160
"""How long an answer from tool results may be: a sentence, not a ramble to the window's end (left
to itself, the 135M model repeats the output until its context is full)."""


def answer_grammar(quote: str) -> str:
    """GBNF for a turn that answers from tool results: the tool-mode message whose content is ``quote``
    (``local_prompt.result_quote``). A model this small, left free, rewrites what a command printed into
    something it did not print (a wrong exit code, an error that never happened); held to the quote,
    its answer is short and true."""
    answer = MESSAGE_PREFIX[:-1] + json.dumps(quote[:ANSWER_CHARS]) + "}"
    return f"root ::= {_gbnf_literal(answer)}"  # llama's schema converter mis-escapes a const's backslashes


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF for output that is JSON matching ``schema``."""
    converter = _llama.SchemaConverter()
    converter.visit(converter.resolve_refs(schema), "")
    return converter.format()


class JsonStringStream:
    """Decodes a JSON string body as it streams in: feeds raw chars, returns decoded text."""

    def __init__(self) -> None:
        self.pending = ""
        self.done = False

    def feed(self, raw: str) -> str:
        out = []
        text = self.pending + raw
        i = 0
        while i < len(text) and not self.done:
            ch = text[i]
            if ch == '"':
                self.done = True
                break
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            size = 6 if text[i + 1:i + 2] == "u" else 2
            if text[i + 1:i + 2] == "u" and "\\ud800" <= text[i:i + 6].lower() < "\\udc00":
                size = 12  # a surrogate pair decodes as one character
            if len(text) - i < size:
                break
            try:
                out.append(json.loads(f'"{text[i:i + size]}"'))
            except ValueError:
                out.append(text[i:i + size])
            i += size
        self.pending = "" if self.done else text[i:]
        return "".join(out)
