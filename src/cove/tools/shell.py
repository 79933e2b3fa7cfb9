"""The hosted ``shell`` tool: a call's commands run in order in the response's container.

Output streams as ``response.shell_call_output_content.delta`` events while commands run, and is
cut to ``max_output_length`` characters (head and tail kept) as the shell tool documents.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal

from openai.types.responses import FunctionShellToolParam
from pydantic import Field

from cove.ids import new_id
from cove.sandbox.base import Command
from cove.tools.base import HostedTool, ToolArgumentsError, ToolConfig, ToolRun, parse_arguments, relay
from cove.tools.environment import (
    ContainerAuto,
    ContainerReference,
    LocalEnvironment,
    SkillNote,
    auto_options,
    check_environment,
)
from cove.tools.events import EventSink
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


class ShellConfig(ToolConfig):
    type: Literal["shell"]
    environment: ContainerAuto | ContainerReference | LocalEnvironment | None = Field(
        default=None, discriminator="type")
    """Where the commands run: a container (by default the chain's, else a new one) or the client."""
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None


class ShellTool(HostedTool):
    types = ("shell",)
    config = ShellConfig
    sdk_type: ClassVar[type | None] = FunctionShellToolParam
    name = "shell"
    call_type = "shell_call"
    output_type = "shell_call_output"
    native_form: ClassVar[dict[str, Any] | None] = {"type": "shell", "environment": {"type": "local"}}

    def hosted(self, config: ToolConfig) -> bool:
        return not isinstance(self._environment(config), LocalEnvironment)

    def environment(self, config: ToolConfig) -> dict[str, Any] | None:
        environment = self._environment(config)
        if isinstance(environment, ContainerAuto):
            return auto_options(environment)
        return environment.model_dump() if environment is not None else None

    @staticmethod
    def _environment(config: ToolConfig) -> ContainerAuto | ContainerReference | LocalEnvironment | None:
        assert isinstance(config, ShellConfig)
        return config.environment

    def check(self, config: ToolConfig, param: str) -> None:
        check_environment(self._environment(config), f"{param}.environment")

    def client_item(self, call_id: str, arguments: str) -> dict[str, Any]:
        args = parse_arguments(arguments)
        return {"id": new_id("sh"), "type": self.call_type, "call_id": call_id, "status": "completed",
                "action": {"commands": args.get("commands") or [], "timeout_ms": args.get("timeout_ms"),
                           "max_output_length": args.get("max_output_length")},
                "environment": {"type": "local"}}

    def skills(self, config: ToolConfig) -> list[SkillNote]:
        """The skills the commands can use: mounted in the container, or on the client's machine."""
        environment = self._environment(config)
        if isinstance(environment, ContainerAuto | ContainerReference):
            return environment.mounted
        if isinstance(environment, LocalEnvironment):
            return [SkillNote(**skill.model_dump()) for skill in environment.skills or []]
        return []

    def model_tools(self, config: ToolConfig, native: bool) -> list[dict[str, Any]]:
        """A Responses upstream is told of the skills as OpenAI's ``local`` environment tells it: each
        skill's name, description and path (here, inside the container the calls run in)."""
        skills = self.skills(config)
        if native and skills:
            return [{"type": "shell", "environment": {"type": "local",
                                                      "skills": [skill.model_dump() for skill in skills]}}]
        return super().model_tools(config, native)

    def function(self, config: ToolConfig) -> dict[str, Any]:
        return {"type": "function", "name": self.name,
                "description": _DESCRIPTION + skills_text(self.skills(config)), "parameters": {
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
        container_id = await workspace.container_id()
        return {"id": new_id("sh"), "type": self.call_type, "call_id": call_id, "action": action,
                "environment": {"type": "container_reference", "container_id": container_id},
                "status": "in_progress"}

    async def refused(self, call_id: str, arguments: str, message: str,
                      workspace: Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
        """The commands as far as they are strings, and one failed entry: exit code 2 (bash's usage
        error), the reason on stderr."""
        given = parse_arguments(arguments).get("commands")
        commands = [given] if isinstance(given, str) else given if isinstance(given, list) else []
        call = {"id": new_id("sh"), "type": self.call_type, "call_id": call_id, "status": "completed",
                "action": {"commands": [c for c in commands if isinstance(c, str)], "timeout_ms": None,
                           "max_output_length": None},
                "environment": {"type": "container_reference", "container_id": await workspace.container_id()}}
        entry = {"stdout": "", "stderr": f"Error: {message}", "outcome": {"type": "exit", "exit_code": 2}}
        output = {"id": new_id("sho"), "type": self.output_type, "call_id": call_id, "max_output_length": None,
                  "output": [entry], "status": "completed"}
        return call, output

    async def emit_call(self, call: dict[str, Any], run: ToolRun) -> None:
        """The call with its command events: added, each command (added/delta/done), done."""
        events = run.events
        index = await events.add_item(call)
        for number, command in enumerate(call["action"]["commands"]):
            base = {"output_index": index, "command_index": number}
            await events.emit({"type": "response.shell_call_command.added", **base, "command": ""})
            await events.emit({"type": "response.shell_call_command.delta", **base, "delta": command})
            await events.emit({"type": "response.shell_call_command.done", **base, "command": command})
        call["status"] = "completed"
        await events.done_item(call)

    async def run(self, call: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        events = run.events
        action = call["action"]
        output: dict[str, Any] = {"id": new_id("sho"), "type": self.output_type, "call_id": call["call_id"],
                                  "max_output_length": action["max_output_length"], "output": [],
                                  "status": "in_progress"}
        index = await events.add_item(output)
        for number, text in enumerate(action["commands"]):
            entry = await self._command(run.workspace, number, text, action, output, index, events)
            output["output"].append(entry)
            await events.emit({"type": "response.shell_call_output_content.done", "item_id": output["id"],
                               "output_index": index, "command_index": number, "output": [entry]})
        output["status"] = "completed"
        await events.done_item(output)
        return output

    @staticmethod
    async def _command(workspace: Workspace, number: int, text: str, action: dict[str, Any], output: dict[str, Any],
                       index: int, events: EventSink) -> dict[str, Any]:
        """One command, its output streamed as it is produced."""
        queue: asyncio.Queue[tuple[Stream, str]] = asyncio.Queue()

        async def emit_delta(chunk: tuple[Stream, str]) -> None:
            await events.emit({"type": "response.shell_call_output_content.delta", "item_id": output["id"],
                               "output_index": index, "command_index": number, "delta": {chunk[0]: chunk[1]}})

        command = Command(command=text, timeout_ms=action["timeout_ms"], max_output_length=action["max_output_length"])
        result = await relay(workspace.run(command, lambda stream, piece: queue.put_nowait((stream, piece))),
                             queue, emit_delta)
        return result.model_dump()

    def output_text(self, output: dict[str, Any]) -> str:
        parts = []
        for entry in output.get("output") or []:
            outcome = entry.get("outcome", {})
            status = "timed out" if outcome.get("type") == "timeout" else f"exit code {outcome.get('exit_code')}"
            stdout, stderr = entry.get("stdout", ""), entry.get("stderr", "")
            parts.append("\n".join([f"[{status}]", *([f"stdout:\n{stdout}"] if stdout or not stderr else []),
                                     *([f"stderr:\n{stderr}"] if stderr else [])]))
        return "\n\n".join(parts)


def skills_text(skills: list[SkillNote]) -> str:
    """The skills as the model reads them in the tool's description: enough to pick one, and where
    its ``SKILL.md`` (the instructions to read before using it) is."""
    if not skills:
        return ""
    lines = [f"- {skill.name} ({skill.path}/SKILL.md): {skill.description}" for skill in skills]
    return ("\n\nSkills are available: folders of instructions and scripts. Before using one, read its "
            "SKILL.md with `cat`, then follow it; run its scripts from where they are (the folder is "
            "read-only).\n" + "\n".join(lines))


def _bounded(arguments: dict[str, Any], key: str, default: int, ceiling: int) -> int:
    value = arguments.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ToolArgumentsError(f"`{key}` must be a positive integer.")
    return min(value, ceiling)
