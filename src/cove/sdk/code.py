"""``sbx.run_code``: stateful Python, like E2B's code interpreter, on Cove's code interpreter kernel.

The kernel is the hosted ``code_interpreter`` tool's own (``cove/tools/python_kernel.py``, read as a
file of this distribution, never imported), installed where the tool installs it: a sandbox's cells
and the model's code interpreter calls in that container share one namespace. Each cell travels in
the exec's environment (small cells) or as an upload (large ones), runs through the streaming exec
route, and its JSON lines become an ``Execution``: logs as they are printed, the last expression's
value as the main result, matplotlib figures as PNGs, an exception as ``error``.
"""

from __future__ import annotations

import base64
import importlib.resources
import json
import secrets
from typing import Any

from cove.sdk.commands import Output, OutputHandler, stream_command
from cove.sdk.connection import Connection
from cove.sdk.errors import SandboxError
from cove.sdk.files import AsyncFiles
from cove.sdk.models import Execution, ExecutionError, Result

KERNEL_DIR = "/root/.cove-kernel"
"""Where the code interpreter tool keeps its kernel (``tools/code_interpreter.py``): the same session."""
KERNEL = f"{KERNEL_DIR}/python_kernel.py"
INLINE_CELL = 64 << 10
"""Cells up to this many bytes ride in the environment (the kernel's limit is 128 KiB per variable)."""
DEFAULT_TIMEOUT = 300.0


def _kernel_source() -> bytes:
    return importlib.resources.files("cove").joinpath("tools/python_kernel.py").read_bytes()


class _Cell:
    """One cell's JSON lines, turned into an ``Execution`` as they arrive.

    Printed text is handed on by lines (``print("hi")`` is one ``"hi\n"``, as a notebook sends it,
    though Python writes it in two pieces); what is left without a newline goes at the end.
    """

    def __init__(self, on_stdout: OutputHandler | None, on_stderr: OutputHandler | None) -> None:
        self.execution = Execution()
        self.images: list[str] = []
        self.handlers = Output(on_stdout, on_stderr)
        self.buffer = ""
        self.partial = {"stdout": "", "stderr": ""}

    async def _print(self, name: str, text: str) -> None:
        (self.execution.logs.stdout if name == "stdout" else self.execution.logs.stderr).append(text)
        await self.handlers.add(name, text)

    async def _stream(self, name: str, text: str) -> None:
        *lines, self.partial[name] = (self.partial[name] + text).split("\n")
        for line in lines:
            await self._print(name, line + "\n")

    async def flush(self) -> None:
        for name, rest in self.partial.items():
            if rest:
                await self._print(name, rest)
        self.partial = {"stdout": "", "stderr": ""}

    async def feed(self, text: str) -> None:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            await self._message(json.loads(line))

    async def _message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "stream":
            await self._stream("stderr" if message.get("name") == "stderr" else "stdout", str(message["text"]))
        elif kind == "result":
            self.execution.results.append(Result(text=str(message["text"]), is_main_result=True))
        elif kind == "image":
            self.images.append(str(message["path"]))
        elif kind == "error":
            self.execution.error = ExecutionError(str(message.get("name", "Error")), str(message.get("value", "")),
                                                  str(message["traceback"]))


async def run_code(connection: Connection, sandbox_id: str, files: AsyncFiles, code: str, *,
                   on_stdout: OutputHandler | None, on_stderr: OutputHandler | None,
                   timeout: float | None) -> Execution:
    kernel = _kernel_source()
    cell_path = f"{KERNEL_DIR}/cell-sdk-{secrets.token_hex(8)}.py"
    envs = {"COVE_KERNEL": base64.b64encode(kernel).decode()}
    if len(code.encode()) <= INLINE_CELL:
        envs["COVE_CELL"] = code
        write_cell = f'printf %s "$COVE_CELL" > {cell_path}'
    else:
        await files.write(cell_path, code)
        write_cell = "true"
    command = (f'if [ "$(wc -c < {KERNEL} 2>/dev/null)" != "{len(kernel)}" ]; then mkdir -p {KERNEL_DIR} && '
               f'printf %s "$COVE_KERNEL" | base64 -d > {KERNEL}; fi && {write_cell} && '
               f"exec env -u COVE_KERNEL -u COVE_CELL python3 {KERNEL} run {cell_path}")
    cell = _Cell(on_stdout, on_stderr)
    lines = Output(cell.feed, None, keep_handled=False)
    exit_code, timed_out = await stream_command(connection, sandbox_id, command, envs=envs, cwd=None,
                                                timeout=DEFAULT_TIMEOUT if timeout is None else timeout, output=lines)
    await cell.flush()
    if timed_out:
        await stream_command(connection, sandbox_id, f"kill -9 $(cat {KERNEL_DIR}/kernel.pid) 2>/dev/null; "
                             f"rm -f {KERNEL_DIR}/kernel.sock", envs=None, cwd=None, timeout=30,
                             output=Output(None, None))
        cell.execution.error = ExecutionError("TimeoutError", "The cell ran out of time; the session was "
                                              "restarted and its variables are gone.", "")
    elif exit_code != 0:
        raise SandboxError(f"The Python kernel could not run (exit code {exit_code}): {lines.text('stderr')[-500:]}")
    for path in cell.images:
        png = base64.b64encode(await files.read(path, format="bytes")).decode()
        cell.execution.results.append(Result(png=png))
    return cell.execution
