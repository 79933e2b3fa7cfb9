"""Keeping known secret values out of what a command prints.

A container holds only placeholders for its domain secrets, but a server it is allowed to call may
echo a secret back (an API that reflects headers, a debug endpoint). Output goes to the model, the
stored response and the client, so every literal occurrence of a value is replaced with its
placeholder before it leaves the sandbox, in streamed chunks (a value split across chunks included)
and in the final result; a terminal's bytes likewise (``RedactedTerminal``). Encoded or transformed
copies cannot be caught: the server a secret is for is trusted with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Literal

from cove.sandbox.base import CommandOutput, OutputCallback, Terminal

Stream = Literal["stdout", "stderr"]


class Redactor:
    """Replaces each value in ``replacements`` (value -> placeholder) in text, whole or streamed."""

    def __init__(self, replacements: Mapping[str, str]) -> None:
        self._replacements = {value: placeholder for value, placeholder in replacements.items() if value}
        self._hold = max((len(value) for value in self._replacements), default=1) - 1
        self._pending: dict[Stream, str] = {"stdout": "", "stderr": ""}

    def text(self, text: str) -> str:
        for value, placeholder in self._replacements.items():
            text = text.replace(value, placeholder)
        return text

    def output(self, output: CommandOutput) -> CommandOutput:
        return output.model_copy(update={"stdout": self.text(output.stdout), "stderr": self.text(output.stderr)})

    def stream(self, on_output: OutputCallback) -> OutputCallback:
        """A callback that redacts before calling ``on_output``; it holds back the last few characters
        (which may begin a value) until more arrive or ``flush`` is called."""
        def redacted(stream: Stream, chunk: str) -> asyncio.Future[None] | None:
            text = self.text(self._pending[stream] + chunk)
            cut = max(len(text) - self._hold, 0)
            self._pending[stream] = text[cut:]
            return on_output(stream, text[:cut]) if cut else None  # the consumer's hold passes through
        return redacted

    def flush(self, on_output: OutputCallback) -> None:
        for stream, text in self._pending.items():
            if text:
                on_output(stream, text)
            self._pending[stream] = ""


class RedactedTerminal(Terminal):
    """A terminal whose output has each value in ``replacements`` (value -> placeholder) replaced.

    A terminal is interactive, so unlike ``Redactor.stream`` this holds back only a tail that could
    begin a value (a prompt is not kept waiting for more output); that tail goes out with the next
    bytes, or when the terminal's output ends."""

    def __init__(self, inner: Terminal, replacements: Mapping[str, str]) -> None:
        self._inner = inner
        self._replacements = {value.encode(): placeholder.encode()
                              for value, placeholder in replacements.items() if value}
        self._pending = b""

    async def read(self) -> bytes:
        while True:
            chunk = await self._inner.read()
            if not chunk:
                held, self._pending = self._pending, b""
                return held
            data = self._pending + chunk
            for value, placeholder in self._replacements.items():
                data = data.replace(value, placeholder)
            hold = self._partial(data)
            self._pending = data[len(data) - hold:] if hold else b""
            if hold < len(data):
                return data[:len(data) - hold]

    def _partial(self, data: bytes) -> int:
        """The length of the longest tail of ``data`` that is a value's beginning (0 if none)."""
        longest = min(len(data), max((len(value) for value in self._replacements), default=1) - 1)
        for size in range(longest, 0, -1):
            tail = data[-size:]
            if any(value.startswith(tail) for value in self._replacements):
                return size
        return 0

    async def write(self, data: bytes) -> None:
        await self._inner.write(data)

    def resize(self, cols: int, rows: int) -> None:
        self._inner.resize(cols, rows)

    async def wait(self) -> int:
        return await self._inner.wait()

    async def close(self) -> None:
        await self._inner.close()
