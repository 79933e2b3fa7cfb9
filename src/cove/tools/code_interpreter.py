"""The hosted ``code_interpreter`` tool: a stateful Python session in the response's container.

A small kernel (``python_kernel.py``, run by the image's own python3) keeps one namespace alive
between calls. A cell's printed output becomes a ``logs`` output, each matplotlib figure an
``image`` output (a PNG data URL), and files it writes under /mnt/data are cited in the answer with
``container_file_citation`` annotations. Outputs are always kept on the item (the model reads them next
turn); clients see them only with ``include: ["code_interpreter_call.outputs"]``, as on OpenAI
(``agent/includes.py``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from openai.types.responses.tool_param import CodeInterpreter

from cove.errors import CoveError
from cove.ids import new_id
from cove.sandbox.base import Command
from cove.tools.base import HostedTool, ToolArgumentsError, ToolConfig, ToolRun, parse_arguments
from cove.tools.environment import Container, check_environment, container_auto, container_environment
from cove.tools.workspace import Workspace

KERNEL_DIR = "/root/.cove-kernel"
KERNEL = f"{KERNEL_DIR}/python_kernel.py"
_KERNEL_SOURCE = (Path(__file__).parent / "python_kernel.py").read_bytes()
CELL_TIMEOUT_MS = 120_000
MAX_IMAGE_BYTES = 10 << 20

_DESCRIPTION = (
    "Run Python code in a stateful session (like a Jupyter notebook) in a Linux container: variables, "
    "imports and files persist between calls. numpy, pandas and matplotlib are available; figures you "
    "draw are returned as images. Save files for the user under /mnt/data (the working directory).")


class CodeInterpreterConfig(ToolConfig):
    type: Literal["code_interpreter"]
    container: Container = "auto"
    """``"auto"``, a container id, or ``{"type": "auto", ...}`` with options for a new container."""
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None


class CodeInterpreterTool(HostedTool):
    types = ("code_interpreter",)
    config = CodeInterpreterConfig
    sdk_type: ClassVar[type | None] = CodeInterpreter
    name = "code_interpreter"
    call_type = "code_interpreter_call"
    output_type = "code_interpreter_call"

    def environment(self, config: ToolConfig) -> dict[str, Any] | None:
        assert isinstance(config, CodeInterpreterConfig)
        return container_environment(config.container)

    def check(self, config: ToolConfig, param: str) -> None:
        assert isinstance(config, CodeInterpreterConfig)
        check_environment(container_auto(config.container), f"{param}.container")

    def function(self, config: ToolConfig) -> dict[str, Any]:
        return {"type": "function", "name": self.name, "description": _DESCRIPTION, "parameters": {
            "type": "object", "properties": {"code": {"type": "string", "description": "Python code to run."}},
            "required": ["code"]}}

    async def call_item(self, call_id: str, arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any]:
        code = arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ToolArgumentsError("`code` must be a non-empty string of Python.")
        return {"id": new_id("ci"), "type": self.call_type, "call_id": call_id, "code": code,
                "container_id": await workspace.container_id(), "outputs": None, "status": "in_progress"}

    async def refused(self, call_id: str, arguments: str, message: str,
                      workspace: Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
        """One item holds the call and its result: status ``failed``, the reason in its logs."""
        code = parse_arguments(arguments).get("code")
        call = {"id": new_id("ci"), "type": self.call_type, "call_id": call_id,
                "code": code if isinstance(code, str) else arguments, "container_id": await workspace.container_id(),
                "outputs": [{"type": "logs", "logs": f"Error: {message}"}], "status": "failed"}
        return call, call

    async def emit_call(self, call: dict[str, Any], run: ToolRun) -> None:
        events = run.events
        index = await events.add_item(call)
        base = {"item_id": call["id"], "output_index": index}
        await events.emit({"type": "response.code_interpreter_call.in_progress", **base})
        await events.emit({"type": "response.code_interpreter_call_code.delta", **base, "delta": call["code"]})
        await events.emit({"type": "response.code_interpreter_call_code.done", **base, "code": call["code"]})

    async def run(self, call: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        events, workspace = run.events, run.workspace
        index = events.index_of(call)
        call["status"] = "interpreting"
        await events.emit({"type": "response.code_interpreter_call.interpreting", "item_id": call["id"],
                           "output_index": index})
        before = await _data_files(workspace)
        outputs = await self._run_cell(workspace, call)
        changed = sorted(path for path, stamp in (await _data_files(workspace)).items() if before.get(path) != stamp)
        call["outputs"] = outputs
        call["status"] = "completed"
        if changed:
            await workspace.cite(changed)
        await events.emit({"type": "response.code_interpreter_call.completed", "item_id": call["id"],
                           "output_index": index})
        await events.done_item(call)
        return call

    @staticmethod
    async def _run_cell(workspace: Workspace, call: dict[str, Any]) -> list[dict[str, Any]]:
        current = await workspace.stat(KERNEL)
        if current is None or current.size != len(_KERNEL_SOURCE):
            await workspace.write(KERNEL, _KERNEL_SOURCE)
        cell = f"{KERNEL_DIR}/cell-{call['call_id']}.py"
        await workspace.write(cell, call["code"].encode())
        result = await workspace.run(Command(f"python3 {KERNEL} run {cell}", CELL_TIMEOUT_MS, 5_000_000))
        logs: list[str] = []
        images: list[dict[str, Any]] = []
        for line in result.stdout.splitlines():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("type") == "stream":
                logs.append(str(message.get("text", "")))
            elif message.get("type") == "error":
                logs.append(str(message.get("traceback", "")))
            elif message.get("type") == "image":
                images.append({"type": "image", "url": await _data_url(workspace, str(message.get("path")))})
        if result.outcome.type == "timeout":
            await workspace.run(Command(f"kill -9 $(cat {KERNEL_DIR}/kernel.pid) 2>/dev/null; "
                                        f"rm -f {KERNEL_DIR}/kernel.sock", 10_000, 1000))
            logs.append(f"\nExecution timed out after {CELL_TIMEOUT_MS // 1000} s; the session was restarted "
                        "and its variables are gone.\n")
        elif result.outcome.exit_code != 0:
            logs.append(result.stderr or f"The interpreter exited with code {result.outcome.exit_code}.")
        return [{"type": "logs", "logs": "".join(logs)}, *images]

    def function_arguments(self, call: dict[str, Any]) -> dict[str, Any]:
        return {"code": call.get("code") or ""}

    def output_text(self, output: dict[str, Any]) -> str:
        parts = []
        for entry in output.get("outputs") or []:
            if entry.get("type") == "logs":
                parts.append(entry.get("logs") or "(no output)")
            elif entry.get("type") == "image":
                parts.append("[an image was produced and shown to the user]")
        return "\n".join(parts) or "(no output)"


async def _data_files(workspace: Workspace) -> dict[str, tuple[int, float]]:
    return {entry.path: (entry.size, entry.mtime) for entry in await workspace.walk_files("/mnt/data")}


async def _data_url(workspace: Workspace, path: str) -> str:
    """A figure as a PNG data URL; empty if it cannot be read or is over ``MAX_IMAGE_BYTES``."""
    try:
        content = await workspace.read(path, MAX_IMAGE_BYTES)
    except CoveError:
        return ""
    return "data:image/png;base64," + base64.b64encode(content.data).decode()
