"""``cove shell CONTAINER_ID``: an interactive terminal in a container, from the terminal you are in.

A client of ``GET /v1/containers/{id}/pty`` (``docs/terminals.md``) at ``COVE_BASE_URL`` with
``COVE_API_KEY``, as the ``openai`` CLI reads its own two. The local terminal goes into raw mode, so
every key (Ctrl-C, arrows, Ctrl-D) reaches the program in the container and the remote terminal does
all echoing and editing; a resize of the local window (SIGWINCH) resizes the remote one. Ctrl-D at the
shell's prompt ends the shell, and with it this command, whose exit code is the shell's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import termios
import tty
from urllib.parse import urlencode, urlsplit, urlunsplit

import typer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

_READ_SIZE = 65536


def shell(container_id: str, command: str | None = typer.Option(
        None, "--command", "-c", help="Run this instead of an interactive shell.")) -> None:
    """Open an interactive terminal in a container (COVE_BASE_URL, COVE_API_KEY)."""
    base = os.environ.get("COVE_BASE_URL", "http://127.0.0.1:8080")
    key = os.environ.get("COVE_API_KEY", "")
    cols, rows = shutil.get_terminal_size()
    url = pty_url(base, container_id, cols, rows, command)
    raise typer.Exit(asyncio.run(_session(url, key)))


def pty_url(base: str, container_id: str, cols: int, rows: int, command: str | None) -> str:
    """The WebSocket URL of a container's terminal, from a base URL with or without ``/v1``."""
    parts = urlsplit(base.rstrip("/"))
    scheme = {"https": "wss", "wss": "wss"}.get(parts.scheme, "ws")
    path = parts.path.removesuffix("/v1")
    query = {"cols": cols, "rows": rows, **({"command": command} if command is not None else {})}
    return urlunsplit((scheme, parts.netloc, f"{path}/v1/containers/{container_id}/pty", urlencode(query), ""))


async def _session(url: str, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        websocket = await connect(url, additional_headers=headers, max_size=None)
    except InvalidStatus as exc:
        typer.echo(f"cove shell: {_refusal(exc)}", err=True)
        return 1
    except OSError as exc:
        typer.echo(f"cove shell: cannot connect: {exc}", err=True)
        return 1
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    if saved is not None:
        tty.setraw(stdin)
    try:
        return await _relay(websocket, stdin, sys.stdout.fileno())
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        await websocket.close()


async def _relay(websocket: ClientConnection, stdin: int, stdout: int) -> int:
    """Keys to the socket, bytes from it to the screen, SIGWINCH to resizes, until the exit message."""
    loop = asyncio.get_running_loop()
    # Keys (bytes) and resizes (JSON text) in one queue, so they reach the program in the order they happened.
    keys: asyncio.Queue[bytes | str] = asyncio.Queue()

    def readable() -> None:
        try:
            keys.put_nowait(os.read(stdin, _READ_SIZE))
        except OSError:
            keys.put_nowait(b"")

    def resized() -> None:
        cols, rows = shutil.get_terminal_size()
        keys.put_nowait(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    async def send_keys() -> None:
        while data := await keys.get():
            await websocket.send(data)
        loop.remove_reader(stdin)  # local end of input: the remote program decides when it is done

    loop.add_reader(stdin, readable)
    loop.add_signal_handler(signal.SIGWINCH, resized)
    sender = asyncio.create_task(send_keys())
    try:
        async for message in websocket:
            if isinstance(message, bytes):
                _write_all(stdout, message)
                continue
            control = json.loads(message)
            if isinstance(control, dict) and control.get("type") == "exit":
                return int(control.get("exit_code") or 0)
    except ConnectionClosed:
        pass
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)
        loop.remove_reader(stdin)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await sender
    return 1  # the connection ended without saying how the program did


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue


def _refusal(exc: InvalidStatus) -> str:
    response = exc.response
    try:
        return str(json.loads(response.body or b"")["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"the server refused the terminal (HTTP {response.status_code})"
