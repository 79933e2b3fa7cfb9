"""The code interpreter's kernel: runs INSIDE a container, with the image's own python3.

``serve`` keeps one Python namespace alive (variables survive between calls) behind a Unix socket;
``run FILE`` sends it a cell and prints what happens as JSON lines: ``stream`` (stdout/stderr text),
``result`` (the repr of the last expression's value, unless None), ``image`` (a PNG a matplotlib figure
was saved to), ``error`` (a traceback, the exception's class ``name`` and ``value``), then ``done``.
The code interpreter tool reads streams, errors and images; the SDK's ``run_code`` all of them. It uses
only the standard library (and matplotlib when the image has it), and is written for Python 3.8+
(postponed annotations keep the hints inert there).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import traceback
from typing import Any

HOME = os.path.dirname(os.path.abspath(__file__))
SOCKET = os.path.join(HOME, "kernel.sock")
PID = os.path.join(HOME, "kernel.pid")


class _Tee(io.TextIOBase):
    """A stdout/stderr that sends each write to the client at once."""

    def __init__(self, conn: socket.socket, name: str) -> None:
        self.conn, self.name = conn, name

    def write(self, text: str) -> int:
        if text:
            _send(self.conn, {"type": "stream", "name": self.name, "text": text})
        return len(text)


def _send(conn: socket.socket, message: dict[str, object]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall((json.dumps(message) + "\n").encode())


def _figures(cell_path: str) -> list[str]:
    """Saves and closes every open matplotlib figure; returns the PNG paths."""
    if "matplotlib.pyplot" not in sys.modules:
        return []
    plt: Any = sys.modules["matplotlib.pyplot"]
    paths = []
    for number in plt.get_fignums():
        path = f"{cell_path}-figure-{number}.png"
        plt.figure(number).savefig(path, format="png", bbox_inches="tight")
        paths.append(path)
    plt.close("all")
    return paths


def _compile(source: str) -> tuple[Any, Any]:
    """The cell, and apart from it its last statement when that is an expression: its value is the
    cell's ``result`` (what a notebook shows under the cell, and the SDK's ``Execution.text``)."""
    tree = ast.parse(source, "<cell>", "exec")
    last = tree.body[-1] if tree.body else None
    if not isinstance(last, ast.Expr):
        return compile(tree, "<cell>", "exec"), None
    tree.body.pop()
    return compile(tree, "<cell>", "exec"), compile(ast.Expression(last.value), "<cell>", "eval")


def serve() -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    namespace: dict[str, object] = {"__name__": "__main__"}
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SOCKET)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(SOCKET)
    server.listen(4)
    with open(PID, "w") as handle:
        handle.write(str(os.getpid()))
    os.chdir("/mnt/data" if os.path.isdir("/mnt/data") else "/")
    while True:
        conn, _ = server.accept()
        with conn:
            cell_path = conn.makefile().readline().strip()
            try:
                with open(cell_path) as handle:
                    code, last = _compile(handle.read())
                with contextlib.redirect_stdout(_Tee(conn, "stdout")), contextlib.redirect_stderr(_Tee(conn, "stderr")):
                    exec(code, namespace)  # noqa: S102 - running the model's code is this tool's job
                    value = None if last is None else eval(last, namespace)  # noqa: S307 - the same code
                if value is not None:
                    _send(conn, {"type": "result", "text": repr(value)})
            except BaseException as exc:
                _send(conn, {"type": "error", "traceback": traceback.format_exc(), "name": type(exc).__name__,
                             "value": str(exc)})
            try:
                for path in _figures(cell_path):
                    _send(conn, {"type": "image", "path": path})
            except Exception:
                _send(conn, {"type": "error", "traceback": traceback.format_exc()})
            _send(conn, {"type": "done"})


def _connect() -> socket.socket:
    for attempt in range(2):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(SOCKET)
            return conn
        except OSError:
            conn.close()
            if attempt:
                raise
        subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(200):
            if os.path.exists(SOCKET):
                break
            time.sleep(0.02)
    raise OSError("the kernel did not start")


def run(cell_path: str) -> None:
    conn = _connect()
    conn.sendall((cell_path + "\n").encode())
    with conn.makefile() as lines:
        for line in lines:
            sys.stdout.write(line)
            sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    else:
        run(sys.argv[2])
