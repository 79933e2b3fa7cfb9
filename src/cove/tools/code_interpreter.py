"""The hosted ``code_interpreter`` tool: a stateful Python session in the response's container.

A small kernel (``python_kernel.py``, run by the image's own python3) keeps one namespace alive
between calls. A cell's printed output becomes a ``logs`` output, each matplotlib figure an
``image`` output (a PNG data URL), and files it writes under /mnt/data are cited in the answer with
``container_file_citation`` annotations. Outputs are always kept on the item (the SDK types them as
optional; clients that did not ask for ``code_interpreter_call.outputs`` can ignore them).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from cove.ids import new_id
from cove.sandbox.base import Command, Sandbox
from cove.sandbox.fs import ContainerFS
from cove.tools.base import HostedTool, ToolArgumentsError, ToolRun
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


class CodeInterpreterTool(HostedTool):
    tool_type = "code_interpreter"
    function_name = "code_interpreter"
    call_type = "code_interpreter_call"
    output_type = "code_interpreter_call"

    def function(self, config: dict[str, Any]) -> dict[str, Any]:
        return {"type": "function", "name": self.function_name, "description": _DESCRIPTION, "parameters": {
            "type": "object", "properties": {"code": {"type": "string", "description": "Python code to run."}},
            "required": ["code"]}}

    async def call_item(self, call_id: str, arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any]:
        code = arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ToolArgumentsError("`code` must be a non-empty string of Python.")
        return {"id": new_id("ci"), "type": self.call_type, "call_id": call_id, "code": code,
                "container_id": await workspace.container_id_now(), "outputs": None, "status": "in_progress"}

    async def emit_call(self, call: dict[str, Any], run: ToolRun) -> None:
        builder = run.builder
        index = await builder.add_item(call)
        base = {"item_id": call["id"], "output_index": index}
        await builder.emit({"type": "response.code_interpreter_call.in_progress", **base})
        await builder.emit({"type": "response.code_interpreter_call_code.delta", **base, "delta": call["code"]})
        await builder.emit({"type": "response.code_interpreter_call_code.done", **base, "code": call["code"]})

    async def run(self, call: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        builder = run.builder
        index = builder.output.index(call)
        call["status"] = "interpreting"
        await builder.emit({"type": "response.code_interpreter_call.interpreting", "item_id": call["id"],
                            "output_index": index})
        async with run.workspace.sandbox() as sandbox:
            fs = await sandbox.files()
            before = _data_files(fs)
            outputs = await self._run_cell(sandbox, fs, call)
            changed = sorted(path for path, stamp in _data_files(fs).items() if before.get(path) != stamp)
        call["outputs"] = outputs
        call["status"] = "completed"
        if changed:
            await run.workspace.cite(changed)
        await builder.emit({"type": "response.code_interpreter_call.completed", "item_id": call["id"],
                            "output_index": index})
        await builder.done_item(call)
        return call

    @staticmethod
    async def _run_cell(sandbox: Sandbox, fs: ContainerFS, call: dict[str, Any]) -> list[dict[str, Any]]:
        current = fs.stat(KERNEL)
        if current is None or current.size != len(_KERNEL_SOURCE):
            fs.write(KERNEL, iter([_KERNEL_SOURCE]))
        cell = f"{KERNEL_DIR}/cell-{call['call_id']}.py"
        fs.write(cell, iter([call["code"].encode()]))
        result = await sandbox.exec(Command(f"python3 {KERNEL} run {cell}", CELL_TIMEOUT_MS, 5_000_000))
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
                images.append({"type": "image", "url": _data_url(fs, str(message.get("path")))})
        if result.outcome.type == "timeout":
            await sandbox.exec(Command(f"kill -9 $(cat {KERNEL_DIR}/kernel.pid) 2>/dev/null; "
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


def _data_files(fs: ContainerFS) -> dict[str, tuple[int, float]]:
    return {entry.path: (entry.size, entry.mtime) for entry in fs.walk_files("/mnt/data")}


def _data_url(fs: ContainerFS, path: str) -> str:
    with fs.open_read(path) as (fd, size):
        if size > MAX_IMAGE_BYTES:
            return ""
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    return "data:image/png;base64," + base64.b64encode(data).decode()
