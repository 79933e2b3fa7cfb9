"""The hosted ``shell`` tool: a call's commands run in order in the response's container.

Output streams as ``response.shell_call_output_content.delta`` events while commands run, and is
cut to ``max_output_length`` characters (head and tail kept) as the shell tool documents.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal

from cove.agent.builder import ResponseBuilder
from cove.ids import new_id
from cove.sandbox.base import Command, Sandbox
from cove.tools.base import HostedTool, ToolArgumentsError, ToolRun, relay
from cove.tools.workspace import Workspace

Stream = Literal["stdout", "stderr"]
DEFAULT_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 600_000
DEFAULT_MAX_OUTPUT = 1_000
MAX_OUTPUT = 1_000_000
MAX_COMMANDS = 32

_DESCRIPTION = (
    "Run shell commands in a persistent Linux container (Debian, root, no network unless allowed). "
    "Commands run in order with bash; files, installed packages and background processes persist "
    "between calls. Returns stdout, stderr and the exit code (or a timeout) of each command; long "
    "output keeps its beginning and end.")


class ShellTool(HostedTool):
    tool_type = "shell"
    function_name = "shell"
    call_type = "shell_call"
    output_type = "shell_call_output"
    native_form: ClassVar[dict[str, Any] | None] = {"type": "shell", "environment": {"type": "local"}}

    def function(self, config: dict[str, Any]) -> dict[str, Any]:
        return {"type": "function", "name": self.function_name, "description": _DESCRIPTION, "parameters": {
            "type": "object",
            "properties": {
                "commands": {"type": "array", "items": {"type": "string"}, "description": "Shell commands, in order."},
                "timeout_ms": {"type": "integer", "description": f"Per command; default {DEFAULT_TIMEOUT_MS}."},
                "max_output_length": {"type": "integer",
                                      "description": f"Characters kept per command; default {DEFAULT_MAX_OUTPUT}."},
            },
            "required": ["commands"]}}

    async def call_item(self, call_id: str, arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any]:
        commands = arguments.get("commands")
        if isinstance(commands, str):
            commands = [commands]
        if not isinstance(commands, list) or not commands or not all(isinstance(c, str) for c in commands):
            raise ToolArgumentsError("`commands` must be a non-empty list of strings.")
        if len(commands) > MAX_COMMANDS:
            raise ToolArgumentsError(f"At most {MAX_COMMANDS} commands per call.")
        action: dict[str, Any] = {"commands": commands, "timeout_ms": _bounded(arguments, "timeout_ms",
                                                                                DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS),
                                  "max_output_length": _bounded(arguments, "max_output_length", DEFAULT_MAX_OUTPUT,
                                                                MAX_OUTPUT)}
        container_id = await workspace.container_id_now()
        return {"id": new_id("sh"), "type": self.call_type, "call_id": call_id, "action": action,
                "environment": {"type": "container_reference", "container_id": container_id},
                "status": "in_progress"}

    async def emit_call(self, call: dict[str, Any], run: ToolRun) -> None:
        """The call with its command events: added, each command (added/delta/done), done."""
        builder = run.builder
        index = await builder.add_item(call)
        for number, command in enumerate(call["action"]["commands"]):
            base = {"output_index": index, "command_index": number}
            await builder.emit({"type": "response.shell_call_command.added", **base, "command": ""})
            await builder.emit({"type": "response.shell_call_command.delta", **base, "delta": command})
            await builder.emit({"type": "response.shell_call_command.done", **base, "command": command})
        call["status"] = "completed"
        await builder.done_item(call)

    async def run(self, call: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        builder = run.builder
        action = call["action"]
        output: dict[str, Any] = {"id": new_id("sho"), "type": self.output_type, "call_id": call["call_id"],
                                  "max_output_length": action["max_output_length"], "output": [],
                                  "status": "in_progress"}
        index = await builder.add_item(output)
        async with run.workspace.sandbox() as sandbox:
            for number, text in enumerate(action["commands"]):
                entry = await self._command(sandbox, number, text, action, output, index, builder)
                output["output"].append(entry)
                await builder.emit({"type": "response.shell_call_output_content.done", "item_id": output["id"],
                                    "output_index": index, "command_index": number, "output": [entry]})
        output["status"] = "completed"
        await builder.done_item(output)
        return output

    @staticmethod
    async def _command(sandbox: Sandbox, number: int, text: str, action: dict[str, Any], output: dict[str, Any],
                       index: int, builder: ResponseBuilder) -> dict[str, Any]:
        """One command, its output streamed as it is produced."""
        queue: asyncio.Queue[tuple[Stream, str]] = asyncio.Queue()

        async def emit_delta(chunk: tuple[Stream, str]) -> None:
            await builder.emit({"type": "response.shell_call_output_content.delta", "item_id": output["id"],
                                "output_index": index, "command_index": number, "delta": {chunk[0]: chunk[1]}})

        command = Command(command=text, timeout_ms=action["timeout_ms"], max_output_length=action["max_output_length"])
        result = await relay(sandbox.exec(command, lambda stream, piece: queue.put_nowait((stream, piece))),
                             queue, emit_delta)
        return result.model_dump()

    def output_text(self, output: dict[str, Any]) -> str:
        parts = []
        for entry in output.get("output") or []:
            outcome = entry.get("outcome", {})
            status = "timed out" if outcome.get("type") == "timeout" else f"exit code {outcome.get('exit_code')}"
            parts.append(f"[{status}]\nstdout:\n{entry.get('stdout', '')}\nstderr:\n{entry.get('stderr', '')}")
        return "\n\n".join(parts)


def _bounded(arguments: dict[str, Any], key: str, default: int, ceiling: int) -> int:
    value = arguments.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ToolArgumentsError(f"`{key}` must be a positive integer.")
    return min(value, ceiling)
