"""Commands the embedded model may run, drawn from the user's words.

A 135M model picks commands close to random: an empty list, ``python3`` alone, a script that does not
exist, the same call again and again. So when the user's latest message names commands (lines of a
fenced block, backticked spans, else clauses that start with a well-known command word, as in "show
python3 -V"), a tool's ``commands`` (or ``command``) argument is held by the grammar to those, and
a call is due (the user asked for them to run). Each runs once per user turn; once all have run the
tool is no longer offered, and the model answers from their output. With nothing to draw from, the
argument is only held to a few short, non-empty commands. Any tool with such a parameter is treated
alike (the hosted shell, a client's own function), whatever the prompt.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

COMMAND_WORDS = frozenset({
    "python3", "python", "pip", "pip3", "node", "npm", "git", "ls", "pwd", "whoami", "uname", "date",
    "df", "du", "uptime", "hostname", "nproc", "lscpu", "ps", "echo", "printf", "wc", "grep", "seq",
    "bash", "sh", "gcc", "tar", "curl", "mkdir", "cat"})
"""Words that start a command in a clause of prose. Words that are also common English verbs ("make",
"find", "sort", "head", "touch", "free") are left out: "Make a venv" is not the command ``make``."""

PARAMETERS = {"commands": "array", "command": "string"}
"""Arguments that hold shell commands: a list of them, or one. A ``command`` array is an argv (Codex's
``shell`` function), not commands, and is left alone."""

_FENCED = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
_BACKTICKED = re.compile(r"`([^`\n]+)`")
_CLAUSES = re.compile(r"[;\n]|[.?!](?:\s|$)|,?\s+(?:and|then)\s+")
_WORD = re.compile(r"(?:^|\s)(" + "|".join(sorted(COMMAND_WORDS, key=len, reverse=True)) + r")(?=\s|$)")
_MAX_LENGTH = 200
"""The longest command taken from the user's words, or written by the model itself."""
_MAX_FREE = 3
"""Commands per call when the model writes its own: bounded, like their length, so a call cannot
take the model's whole context (and a minute) to write."""


def suggested_commands(text: str) -> list[str]:
    """The commands ``text`` names, in order, without repeats."""
    found = [line.strip().removeprefix("$ ").strip() for block in _FENCED.findall(text)
             for line in block.splitlines()]
    found += _BACKTICKED.findall(_FENCED.sub("", text))
    if not any(found):
        for clause in _CLAUSES.split(text):
            match = _WORD.search(clause)
            if match is not None:
                found.append(clause[match.start(1):].strip().rstrip(":,").strip("\"'"))
    return list(dict.fromkeys(command for command in found if command and len(command) <= _MAX_LENGTH))


def user_turn(items: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The latest user message's text and the items after it (this turn's calls so far)."""
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if item.get("type", "message") == "message" and item.get("role", "user") == "user":
            content = item.get("content")
            text = content if isinstance(content, str) else " ".join(
                str(part.get("text") or "") for part in content or [] if isinstance(part, dict))
            return text, items[index + 1:]
    return "", []


def _commands_run(items: list[dict[str, Any]]) -> set[str]:
    ran: set[str] = set()
    for item in items:
        if item.get("type") != "function_call":
            continue
        arguments: Any = item.get("arguments")
        with contextlib.suppress(ValueError, TypeError):
            arguments = json.loads(arguments)
        if not isinstance(arguments, dict):
            continue
        for name in PARAMETERS:
            value = arguments.get(name)
            ran.update([value] if isinstance(value, str) else
                       [c for c in value if isinstance(c, str)] if isinstance(value, list) else [])
    return ran


def hold_commands(tools: list[dict[str, Any]], items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """``tools`` with their command arguments held to the user's commands not run yet (see above),
    and whether a call is due: the user named commands that a tool here can run and have not run.
    A command tool is left out once every command the user named has run."""
    text, since = user_turn(items)
    suggested = suggested_commands(text)
    ran = _commands_run(since)
    left = [command for command in suggested if command not in ran]
    held = []
    due = False
    for tool in tools:
        parameters = tool.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        name = next((n for n, kind in PARAMETERS.items() if isinstance(properties, dict)
                     and isinstance(properties.get(n), dict) and properties[n].get("type") == kind), None)
        if name is None or not isinstance(parameters, dict) or not isinstance(properties, dict):
            held.append(tool)
            continue
        if suggested and not left:
            continue  # every command the user named has run: answer from their output
        one: dict[str, Any] = ({"type": "string", "enum": left} if left else
                               {"type": "string", "minLength": 1, "maxLength": _MAX_LENGTH})
        spec = properties[name]
        shape = ({"type": "array", "items": one, "minItems": 1, "maxItems": len(left) or _MAX_FREE}
                 if spec["type"] == "array" else one)
        due = due or bool(left)
        required = sorted({*parameters.get("required", []), name})
        held.append({**tool, "parameters": {**parameters, "required": required,
                                            "properties": {**properties, name: {**spec, **shape}}}})
    return held, due
