"""A response's trajectory for a terminal, rendered with rich: its header (model, status, how long it
ran, tokens), then every input and output item in order, each tool call with what it ran, its output
and how long it took (from the container's audit trail, which times every command)."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from cove.cli.remote import when

MAX_LINES = 20
"""Lines of each output shown unless ``--full``."""


class Timings:
    """The audit trail's durations of one response's commands, matched to its calls by command text."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.by_command: dict[str, deque[int]] = defaultdict(deque)
        self.commands: list[tuple[str, int]] = []
        for event in events:
            if event.get("type") == "command" and event.get("duration_ms") is not None:
                self.by_command[str(event.get("command"))].append(int(event["duration_ms"]))
                self.commands.append((str(event.get("command")), int(event["duration_ms"])))

    def command(self, text: str) -> int | None:
        durations = self.by_command.get(text)
        return durations.popleft() if durations else None

    def containing(self, needle: str) -> int | None:
        return next((duration for command, duration in self.commands if needle in command), None)


def _clip(text: str, full: bool) -> str:
    lines = text.splitlines()
    if full or len(lines) <= MAX_LINES:
        return text.rstrip("\n")
    return "\n".join([*lines[:MAX_LINES], f"... {len(lines) - MAX_LINES} more lines (--full shows them)"])


def _ms(duration: int | None) -> str:
    return "" if duration is None else f" [dim]({duration} ms)[/dim]"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if part.get("type") in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            parts.append(str(part.get("text", "")))
        elif part.get("type") in ("input_image", "input_file"):
            parts.append(f"[{part['type']}]")
    return "\n".join(parts)


def header(response: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    created, completed = response.get("created_at"), response.get("completed_at")
    took = f" ({completed - created:.0f} s)" if created and completed else ""
    table.add_row("response", response["id"])
    table.add_row("model", escape(str(response.get("model"))))
    table.add_row("status", str(response.get("status")))
    table.add_row("created", f"{when(created)}{took}")
    if response.get("container_id"):
        table.add_row("container", str(response["container_id"]))
    usage = response.get("usage") or {}
    if usage:
        reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens", 0)
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
        table.add_row("tokens", f"{usage.get('input_tokens', 0)} in ({cached} cached), "
                                f"{usage.get('output_tokens', 0)} out ({reasoning} reasoning), "
                                f"{usage.get('total_tokens', 0)} total")
    if response.get("error"):
        table.add_row("error", Text(json.dumps(response["error"]), style="red"))
    return table


def item(entry: dict[str, Any], timings: Timings, full: bool) -> RenderableType:
    """One item: a title line and what it holds."""
    kind = str(entry.get("type", "message"))
    if kind == "message":
        role = entry.get("role", "?")
        style = "green" if role == "assistant" else "blue"
        return Panel(escape(_clip(_text_of(entry.get("content")), full)) or "[dim](empty)[/dim]",
                     title=f"{role} message", title_align="left", border_style=style)
    if kind == "reasoning":
        summary = _text_of(entry.get("summary")) or _text_of(entry.get("content"))
        return Text(f"reasoning: {_clip(summary, full) or '(hidden)'}", style="dim italic")
    if kind == "shell_call":
        commands = (entry.get("action") or {}).get("commands") or []
        lines = [f"[bold]$[/bold] {escape(str(command))}{_ms(timings.command(str(command)))}" for command in commands]
        return Text.from_markup(f"[cyan]shell_call[/cyan] {entry.get('call_id', '')}\n" + "\n".join(lines))
    if kind == "shell_call_output":
        parts = []
        for output in entry.get("output") or []:
            outcome = output.get("outcome") or {}
            result = f"exit {outcome.get('exit_code')}" if outcome.get("type") == "exit" else str(outcome.get("type"))
            text = (output.get("stdout") or "") + (output.get("stderr") or "")
            parts.append(f"{_clip(text, full)}\n[{result}]")
        return Panel(escape("\n".join(parts)), title="shell output", title_align="left", border_style="dim")
    if kind == "code_interpreter_call":
        logs = "\n".join(str(output.get("logs", "")) if output.get("type") == "logs" else "[image]"
                         for output in entry.get("outputs") or [])
        duration = timings.containing(f"cell-{entry.get('call_id')}.py") if entry.get("call_id") else None
        return Panel(Group(Syntax(str(entry.get("code") or ""), "python", theme="ansi_dark"),
                           Text(_clip(logs, full), style="dim")),
                     title=f"code_interpreter_call ({entry.get('status')}){_ms(duration)}", title_align="left")
    if kind in ("function_call", "custom_tool_call"):
        arguments = entry.get("arguments", entry.get("input", ""))
        return Text.from_markup(f"[magenta]{kind}[/magenta] [bold]{escape(str(entry.get('name')))}[/bold]"
                                f"({escape(str(arguments))}) {entry.get('call_id', '')}")
    if kind in ("function_call_output", "custom_tool_call_output"):
        output = entry.get("output")
        text = output if isinstance(output, str) else json.dumps(output)
        return Panel(escape(_clip(text, full)), title=f"{kind} {entry.get('call_id', '')}", title_align="left",
                     border_style="dim")
    if kind == "web_search_call":
        action = entry.get("action") or {}
        return Text(f"web_search_call {action.get('type', '')}: {action.get('query') or action.get('url') or ''}",
                    style="yellow")
    if kind == "computer_call":
        actions = entry.get("actions") or ([entry["action"]] if entry.get("action") else [])
        return Text(f"computer_call: {', '.join(str(a.get('type')) for a in actions)}", style="yellow")
    rest = {key: value for key, value in entry.items() if key not in ("type", "id")}
    return Text(f"{kind}: {_clip(json.dumps(rest), full)}", style="dim")


def render_input(inputs: list[dict[str, Any]], full: bool) -> list[RenderableType]:
    """The input items, then the heading of the output that follows them."""
    timings = Timings([])
    return [Text("input", style="bold underline"), *(item(entry, timings, full) for entry in inputs),
            Text("output", style="bold underline")]


def render(response: dict[str, Any], inputs: list[dict[str, Any]], audit: list[dict[str, Any]],
           full: bool) -> list[RenderableType]:
    timings = Timings(audit)
    shown: list[RenderableType] = [header(response), *render_input(inputs, full)]
    shown += [item(entry, timings, full) for entry in response.get("output") or []]
    return shown
