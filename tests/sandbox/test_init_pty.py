"""cove-init's terminals (SPAWN_PTY), for real: the init runs as a child process on the host, allocates
the terminal from the host's devpts (in a container it is the container's own), and the client drives
the master end through ``LinuxTerminal``."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from cove.sandbox.linux.init_client import InitClient, SpawnError
from cove.sandbox.linux.initbin import ensure_init_binary
from cove.sandbox.linux.terminal import LinuxTerminal
from tests.sandbox.test_init_client import ENV, SH, running, with_client

pytestmark = pytest.mark.root  # /dev/pts/ptmx on the host is mode 000: only root opens it there


@pytest.fixture(scope="module")
def init_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_init_binary(tmp_path_factory.mktemp("bin"))


async def read_until(terminal: LinuxTerminal, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await asyncio.wait_for(terminal.read(), 10)
        assert chunk, f"EOF before {marker!r} in {data!r}"
        data += chunk
    return data


def test_a_command_runs_on_its_own_controlling_terminal_of_the_given_size(init_binary: Path) -> None:
    async def body(client: InitClient, _proc: subprocess.Popen[bytes]) -> None:
        job = await client.spawn_pty([SH, "-c", "stty size; tty; test -t 0 && test -t 1 && test -t 2 && echo ALLTTY"],
                                     ENV, "/", cols=132, rows=43)
        terminal = LinuxTerminal(job)
        try:
            out = await read_until(terminal, b"ALLTTY")
            assert b"43 132" in out
            assert b"/dev/pts/" in out
            assert await terminal.wait() == 0
        finally:
            await terminal.close()

    with_client(init_binary, body)


def test_typed_input_echoes_resize_signals_and_the_exit_code_comes_back(init_binary: Path) -> None:
    async def body(client: InitClient, _proc: subprocess.Popen[bytes]) -> None:
        script = "trap 'stty size' WINCH; read line; echo got=$line; while :; do sleep 0.05; done"
        job = await client.spawn_pty([SH, "-c", script], ENV, "/", cols=80, rows=24)
        terminal = LinuxTerminal(job)
        try:
            await terminal.write(b"hello\r")
            await read_until(terminal, b"got=hello")
            terminal.resize(100, 30)
            await read_until(terminal, b"30 100")
            await terminal.write(b"\x03")  # Ctrl-C: the terminal's line discipline signals the job
            assert await asyncio.wait_for(terminal.wait(), 10) == 130
        finally:
            await terminal.close()

    with_client(init_binary, body)


def test_closing_a_terminal_kills_its_program_and_frees_the_fd(init_binary: Path) -> None:
    async def body(client: InitClient, _proc: subprocess.Popen[bytes]) -> None:
        job = await client.spawn_pty([SH, "-c", "sleep 1000"], ENV, "/", cols=80, rows=24)
        fd = job.terminal
        terminal = LinuxTerminal(job)
        await terminal.close()
        # Hung up (closing the master sends the session SIGHUP) or killed, whichever lands first.
        assert await asyncio.wait_for(terminal.wait(), 10) in (128 + signal.SIGHUP, 128 + signal.SIGKILL)
        assert not running(job.pid)
        with pytest.raises(OSError):
            os.fstat(fd)

    with_client(init_binary, body)


def test_a_failed_terminal_spawn_reports_errno_and_leaks_nothing(init_binary: Path) -> None:
    async def body(client: InitClient, _proc: subprocess.Popen[bytes]) -> None:
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(SpawnError) as failed:
            await client.spawn_pty(["/no/such/binary"], ENV, "/", cols=80, rows=24)
        assert failed.value.errno == 2
        assert len(os.listdir("/proc/self/fd")) == before

    with_client(init_binary, body)


def test_a_subverted_init_cannot_pass_off_another_fd_as_a_terminal() -> None:
    """The container may have replaced its init: a STARTED carrying /dev/zero (which would flood the
    reader) for a terminal is refused, the fd closed and the job killed; nothing leaks."""

    async def main() -> None:
        host, fake_init = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        client = InitClient(host)
        before = len(os.listdir("/proc/self/fd"))
        spawning = asyncio.create_task(client.spawn_pty(["/bin/sh"], ENV, "/", cols=80, rows=24))
        message = await asyncio.to_thread(fake_init.recv, 65536)
        op, job_id = message[0], struct.unpack_from("<I", message, 4)[0]
        assert op == 3  # SPAWN_PTY
        zero = os.open("/dev/zero", os.O_RDONLY)
        socket.send_fds(fake_init, [struct.pack("<B3xIi", 1, job_id, 4242)], [zero])
        os.close(zero)
        with pytest.raises(SpawnError) as refused:
            await asyncio.wait_for(spawning, 10)
        assert refused.value.errno == errno.EPROTO
        kill = await asyncio.to_thread(fake_init.recv, 64)
        assert struct.unpack("<B3xII", kill) == (2, job_id, signal.SIGKILL)
        client.close()
        fake_init.close()
        assert len(os.listdir("/proc/self/fd")) == before - 2  # the two ends of the socketpair, nothing else

    asyncio.run(main())
