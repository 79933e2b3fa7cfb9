"""``cove shell CONTAINER_ID`` for real: the command runs on a pseudo-terminal this test holds (as a
person's terminal emulator would), against the test server and a real container; typed keys reach the
container's shell, a window resize reaches ``stty size``, Ctrl-D leaves with the shell's exit code."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cove.cli.shell import pty_url
from tests.conftest import KEYS, Server
from tests.polling import eventually

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def box(http: httpx.Client) -> Iterator[str]:
    created = http.post("/v1/containers", json={"name": "cove-shell"})
    assert created.status_code == 200, created.text
    yield created.json()["id"]
    http.delete(f"/v1/containers/{created.json()['id']}")


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal() -> None:
    """In the child: its own session, with the test's terminal as the controlling one (for SIGWINCH)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A terminal emulator in miniature: the master end of a pty running ``cove shell``."""

    def __init__(self, server: Server, container_id: str, key: str = KEYS["alpha"]) -> None:
        self.master, slave = os.openpty()
        set_size(slave, 90, 25)
        env = {**os.environ, "COVE_BASE_URL": server.url + "/v1", "COVE_API_KEY": key}
        env.pop("COLUMNS", None)
        env.pop("LINES", None)
        cove = Path(sys.executable).parent / "cove"
        self.proc = subprocess.Popen([str(cove), "shell", container_id], stdin=slave, stdout=slave, stderr=slave,
                                     env=env, start_new_session=True, preexec_fn=_take_terminal)
        os.close(slave)
        self.seen = b""

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, marker: bytes, timeout: float = 30, after: bytes = b"") -> None:
        """Reads until ``marker`` shows (after the last ``after``, if given)."""
        deadline = time.monotonic() + timeout

        def start() -> int:
            if not after:
                return 0
            found = self.seen.rfind(after)
            return len(self.seen) if found < 0 else found + len(after)

        while marker not in self.seen[start():]:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} in {self.seen[-500:]!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # EIO: the command ended and closed the terminal
                    assert marker in self.seen, f"ended without {marker!r}: {self.seen[-500:]!r}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.master)


def test_urls_accept_a_base_with_or_without_v1() -> None:
    assert pty_url("http://h:1/v1", "cntr_x", 80, 24, None) == "ws://h:1/v1/containers/cntr_x/pty?cols=80&rows=24"
    assert pty_url("https://h/", "cntr_x", 80, 24, "ls -l") == (
        "wss://h/v1/containers/cntr_x/pty?cols=80&rows=24&command=ls+-l")


def test_typing_resizing_and_ctrl_d_through_cove_shell(server: Server, box: str) -> None:
    terminal = Terminal(server, box)
    try:
        terminal.expect(b"# ")  # the remote root prompt: `cove shell` is connected and in raw mode
        terminal.type(b"stty size; echo hi-$((40+2))\r")
        terminal.expect(b"hi-42")
        assert b"25 90" in terminal.seen  # the remote terminal started at the local window's size
        set_size(terminal.master, 120, 40)  # the kernel sends `cove shell` SIGWINCH

        def resized() -> bool:
            """The resize travels beside the keys: once a `stty size` shows it, it has arrived."""
            terminal.seen = b""
            terminal.type(b"stty size; echo done-$((1+1))\r")
            terminal.expect(b"done-2")
            return b"40 120" in terminal.seen

        eventually(resized, what="the remote terminal to take the window's new size")
        terminal.type(b"(exit 5); echo $?-x\r")
        terminal.expect(b"# ", after=b"5-x")  # the prompt: readline reads again (a Ctrl-D before could be lost)
        terminal.type(b"\x04")  # Ctrl-D at the prompt ends the shell and `cove shell` with it
        assert terminal.proc.wait(30) == 0
    finally:
        terminal.close()


def test_a_refusal_is_a_message_and_exit_code_1(server: Server, box: str) -> None:
    terminal = Terminal(server, box, key=KEYS["beta"])  # another project's container
    try:
        terminal.expect(b"cove shell: No container found")
        assert terminal.proc.wait(30) == 1
    finally:
        terminal.close()
