"""Pages from templates, and a response's items shaped for them.

Jinja2 escapes every value a template prints (``autoescape`` for every template, ``StrictUndefined``
so a misspelt name fails a test instead of printing nothing). Nothing is marked safe: item texts,
command output, file names and metadata come from the model and from the container's code, both
hostile. Screenshots are shown only as ``data:image/...`` URLs, the one form the page's CSP lets an
image take besides the console's own files.
"""

from __future__ import annotations

import json
import time
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

_env = Environment(loader=PackageLoader("cove.api.console", "templates"), autoescape=True,
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _when(seconds: float | int | None) -> str:
    return "" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _image(url: Any) -> str | None:
    """The screenshot URL when it is an inline image, else None (a ``file_id`` or anything else is not
    shown inline)."""
    return url if isinstance(url, str) and url.startswith("data:image/") else None


_env.filters["when"] = _when
_env.filters["pretty"] = _pretty
_env.filters["image"] = _image


def render(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)


def text_of(item: dict[str, Any]) -> str:
    """A message's or reasoning item's text, its parts joined."""
    parts = item.get("content") if item.get("type") == "message" else item.get("summary")
    if isinstance(parts, str):
        return parts
    return "\n".join(str(part.get("text", "")) for part in parts or [] if isinstance(part, dict))


def steps(items: list[dict[str, Any]], commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items in order, each with what the page shows besides it: a message's text, and for a
    shell call each command's duration, matched to the audit trail's commands in the order they ran
    (a command the trail does not hold, e.g. pruned, shows none)."""
    unused = list(commands)
    shaped = []
    for item in items:
        step: dict[str, Any] = {"item": item, "type": str(item.get("type", "")), "text": "", "commands": []}
        if step["type"] in ("message", "reasoning"):
            step["text"] = text_of(item)
        action = item.get("action")
        if step["type"] == "shell_call" and isinstance(action, dict):
            for command in action.get("commands") or []:
                ran = next((c for c in unused if c.get("command") == command), None)
                if ran is not None:
                    unused.remove(ran)
                step["commands"].append({"command": command,
                                         "duration_ms": None if ran is None else ran.get("duration_ms")})
        shaped.append(step)
    return shaped
