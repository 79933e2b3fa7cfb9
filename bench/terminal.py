"""``make bench``: keystroke echo round trip through a container's terminal (target p50 <= 5 ms).

A private server on a fresh data dir; one WebSocket to ``GET /v1/containers/{id}/pty`` running the
image's interactive shell. Each sample types one character and times until the shell's echo of it
comes back: the client's frame, the server's relay, the terminal's master, bash's readline in the
container, and back. Every 40 keys a Ctrl-U clears the line (not timed). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from containers import _terminate_as_exit, cove_server
from percentiles import p50_p95
from rich.console import Console
from rich.table import Table
from websockets.sync.client import connect
from websockets.sync.connection import Connection

TARGET_P50_MS = 5.0
LINE = 40
console = Console(width=None if sys.stdout.isatty() else 110)


def drain_until(ws: Connection, *markers: bytes, timeout: float = 30) -> None:
    """Reads until the markers have shown, in this order."""
    data = b""
    deadline = time.monotonic() + timeout
    while not _in_order(data, markers):
        frame = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(frame, bytes):
            data += frame


def _in_order(data: bytes, markers: tuple[bytes, ...]) -> bool:
    at = 0
    for marker in markers:
        found = data.find(marker, at)
        if found < 0:
            return False
        at = found + len(marker)
    return True


def echo_round_trips(ws: Connection, samples: int) -> list[float]:
    """Milliseconds from sending a key to receiving its echo, one key at a time."""
    times = []
    for index in range(samples):
        if index % LINE == 0:
            ws.send(b"\x15echo ready-$((1+1))\r")  # Ctrl-U, then a marker that proves the line is fresh
            drain_until(ws, b"ready-2", b"# ")
        key = b"abcdefghij"[index % 10:index % 10 + 1]
        started = time.perf_counter()
        ws.send(key)
        got = b""
        while key not in got:
            frame = ws.recv(timeout=10)
            if isinstance(frame, bytes):
                got += frame
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate_as_exit)
    images = Path(os.environ.get("COVE_IMAGES_DIR") or "/var/lib/cove/images")
    with cove_server(images) as bench:
        container_id = bench.create("terminal-bench")
        url = bench.server.url.replace("http://", "ws://") + f"/v1/containers/{container_id}/pty"
        with connect(url, open_timeout=60) as ws:
            drain_until(ws, b"# ")
            echo_round_trips(ws, 40)  # warm-up: readline, the relay, the first frames
            times = echo_round_trips(ws, args.samples)
    p50, p95 = p50_p95(times)
    table = Table(title="terminal keystroke echo (WebSocket round trip)", title_justify="left")
    for column in ("metric", "p50", "p95", "target", "verdict"):
        table.add_column(column)
    table.add_row(f"keystroke echo, {len(times)} keys", f"{p50:.2f} ms", f"{p95:.2f} ms",
                  f"p50 <= {TARGET_P50_MS:.0f} ms", "PASS" if p50 <= TARGET_P50_MS else "MISS")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
