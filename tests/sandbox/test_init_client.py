"""cove-init and its asyncio client, for real: the init is compiled and run as a child process on the
host (not in a container), connected to the client by a real socketpair."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cove.errors import SandboxError
from cove.sandbox.linux import initbin
from cove.sandbox.linux.init_client import MAX_MESSAGE, InitClient, Job, SpawnError
from cove.sandbox.linux.initbin import ensure_busybox, ensure_init_binary
from tests.polling import eventually_async

ENV = {"PATH": "/usr/bin:/bin"}
SH = "/bin/sh"


@pytest.fixture(scope="module")
def init_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_init_binary(tmp_path_factory.mktemp("bin"))


# --- helpers ---------------------------------------------------------------------------------------


def start_init(binary: Path) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with child:
        proc = subprocess.Popen([str(binary), str(child.fileno())], pass_fds=[child.fileno()])
    return host, proc


def with_client(binary: Path, body: Callable[[InitClient, subprocess.Popen[bytes]], Awaitable[Any]]) -> Any:
    """Runs ``body`` against a fresh init; afterwards the init must exit cleanly."""

    async def main() -> Any:
        host, proc = start_init(binary)
        client = InitClient(host)
        try:
            return await asyncio.wait_for(body(client, proc), 60)
        finally:
            client.close()
            assert await asyncio.to_thread(proc.wait, 10) == 0

    return asyncio.run(main())


async def read_some(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return os.read(fd, 65536)


async def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := await read_some(fd):
        chunks.append(chunk)
    return b"".join(chunks)


async def read_lines(fd: int, count: int) -> list[bytes]:
    data = b""
    while data.count(b"\n") < count:
        chunk = await asyncio.wait_for(read_some(fd), 10)
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data.splitlines()


class Pipes:
    """stdin from /dev/null, stdout and stderr pipes; the client gets the child ends."""

    def __init__(self) -> None:
        self.stdin = os.open(os.devnull, os.O_RDONLY)
        self.out_r, self.out_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.err_r, self.err_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    async def spawn(self, client: InitClient, argv: list[str], env: dict[str, str] | None = None,
                    cwd: str = "/") -> Job:
        try:
            return await client.spawn(argv, ENV if env is None else env, cwd, self.stdin, self.out_w, self.err_w)
        finally:
            for fd in (self.stdin, self.out_w, self.err_w):
                os.close(fd)

    def close(self) -> None:
        os.close(self.out_r)
        os.close(self.err_r)


async def run(
    client: InitClient, argv: list[str], env: dict[str, str] | None = None, cwd: str = "/"
) -> tuple[int, bytes, bytes]:
    """Runs a command to completion: (exit code as os.waitstatus_to_exitcode gives it, stdout, stderr)."""
    pipes = Pipes()
    try:
        job = await pipes.spawn(client, argv, env, cwd)
        status, out, err = await asyncio.gather(job.wait(), read_all(pipes.out_r), read_all(pipes.err_r))
    finally:
        pipes.close()
    return os.waitstatus_to_exitcode(status), out, err


def proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state, ppid, pgrp, session, ...), or None if there is no such pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def running(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def children_of(pid: int) -> dict[int, str]:
    """The children of ``pid`` and their states (Z: zombie)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) and stat[1] == str(pid):
            found[int(entry.name)] = stat[0]
    return found


# --- building --------------------------------------------------------------------------------------


def test_init_binary_is_static_cached_and_named_by_source_hash(init_binary: Path) -> None:
    assert init_binary.name.startswith("cove-init-") and len(init_binary.name) == len("cove-init-") + 16
    assert init_binary.stat().st_mode & 0o777 == 0o755
    assert initbin._is_static_elf(init_binary)
    mtime = init_binary.stat().st_mtime_ns
    assert ensure_init_binary(init_binary.parent) == init_binary
    assert init_binary.stat().st_mtime_ns == mtime  # not rebuilt


def test_concurrent_builds_agree_and_leave_no_temp_files(tmp_path: Path) -> None:
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_init_binary(tmp_path))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]


def test_compile_error_raises_with_compiler_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken.c"
    broken.write_text("int main(void) { return undeclared_thing; }\n")
    monkeypatch.setattr(initbin, "INIT_SOURCE", broken)
    with pytest.raises(SandboxError, match="undeclared_thing"):
        ensure_init_binary(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_busybox_is_copied_and_dynamic_binaries_are_refused(tmp_path: Path) -> None:
    busybox = ensure_busybox(tmp_path)
    assert busybox == tmp_path / "busybox" and busybox.stat().st_mode & 0o777 == 0o755
    assert busybox.read_bytes() == Path("/bin/busybox").read_bytes()
    assert subprocess.run([busybox, "echo", "hi"], capture_output=True, check=True).stdout == b"hi\n"
    with pytest.raises(SandboxError, match="not a static"):
        ensure_busybox(tmp_path / "other", source=Path("/bin/ls"))
    with pytest.raises(SandboxError, match="missing"):
        ensure_busybox(tmp_path / "other", source=tmp_path / "nope")


def test_init_refuses_a_non_socket_fd(init_binary: Path) -> None:
    proc = subprocess.run([init_binary, "0"], stdin=subprocess.DEVNULL, capture_output=True, check=False)
    assert proc.returncode == 2 and b"usage" in proc.stderr


# --- spawning --------------------------------------------------------------------------------------


def test_output_flows_through_the_pipes(init_binary: Path) -> None:
    async def body(client: InitClient, _: Any) -> None:
        assert await run(client, ["/bin/echo", "hello", "world"]) == (0, b"hello world\n", b"")
        assert await run(client, [SH, "-c", "echo out; echo err >&2"]) == (0, b"out\n", b"err\n")

    with_client(init_binary, body)


def test_exit_codes_and_signal_deaths(init_binary: Path) -> None:
    async def body(client: InitClient, _: Any) -> None:
        assert (await run(client, [SH, "-c", "exit 7"]))[0] == 7
        # Init ignores SIGTERM; a command inheriting that would survive this and exit 0.
        assert (await run(client, [SH, "-c", "kill -TERM $$"]))[0] == -signal.SIGTERM
        assert (await run(client, [SH, "-c", "kill -KILL $$"]))[0] == -signal.SIGKILL

    with_client(init_binary, body)


def test_env_is_exactly_the_given_one_and_cwd_is_applied(init_binary: Path, tmp_path: Path) -> None:
    async def body(client: InitClient, _: Any) -> None:
        assert await run(client, ["/usr/bin/env"], {"A": "1", "B": "two words"}) == (
            0,
            b"A=1\nB=two words\n",
            b"",
        )
        assert await run(client, ["/usr/bin/env"], {}) == (0, b"", b"")
        assert await run(client, ["/bin/pwd"], cwd=str(tmp_path)) == (0, f"{tmp_path}\n".encode(), b"")

    with_client(init_binary, body)


def test_children_get_only_their_three_fds_and_clean_signal_state(init_binary: Path) -> None:
    async def body(client: InitClient, _: Any) -> None:
        # ls opens fd 3 for the directory it lists; anything more leaked from init (e.g. the control socket).
        assert await run(client, ["/bin/ls", "/proc/self/fd"]) == (0, b"0\n1\n2\n3\n", b"")
        code, out, _err = await run(client, ["/bin/grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"])
        assert (code, out) == (0, b"SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n")

    with_client(init_binary, body)


def test_each_job_leads_its_own_session(init_binary: Path) -> None:
    async def body(client: InitClient, _: Any) -> None:
        code, out, _err = await run(client, [SH, "-c", "cat /proc/$$/stat; echo $$"])
        stat_line, pid = out.decode().splitlines()
        fields = stat_line.rsplit(")", 1)[1].split()
        assert code == 0 and fields[2] == pid and fields[3] == pid  # pgrp and session

    with_client(init_binary, body)


def test_oom_score_adj_is_reset_for_commands(init_binary: Path) -> None:
    async def body(client: InitClient, proc: subprocess.Popen[bytes]) -> None:
        # Cove lowers init's score; lowering needs CAP_SYS_RESOURCE (not always there, e.g. in CI
        # sandboxes), so shift it the other way: either way commands must start from 0.
        Path(f"/proc/{proc.pid}/oom_score_adj").write_text("500")
        assert await run(client, ["/bin/cat", "/proc/self/oom_score_adj"]) == (0, b"0\n", b"")
        # The child resets it while still sharing init's memory (CLONE_VM): the kernel must not
        # carry the write over to init, as it does for processes that share memory outside a vfork.
        assert Path(f"/proc/{proc.pid}/oom_score_adj").read_text() == "500\n"

    with_client(init_binary, body)


def test_missing_binary_and_missing_cwd_fail_with_errno(init_binary: Path, tmp_path: Path) -> None:
    async def body(client: InitClient, _: Any) -> None:
        with pytest.raises(SpawnError) as info:
            await run(client, ["/nonexistent/binary"])
        assert info.value.errno == errno.ENOENT and "/nonexistent/binary" in info.value.message
        with pytest.raises(SpawnError) as info:
            await run(client, ["/bin/true"], cwd=str(tmp_path / "missing"))
        assert info.value.errno == errno.ENOENT
        (tmp_path / "script").write_text("#!/bin/sh\n")
        with pytest.raises(SpawnError) as info:
            await run(client, [str(tmp_path / "script")])  # not executable
        assert info.value.errno == errno.EACCES
        with pytest.raises(SpawnError) as info:
            await run(client, [])
        assert info.value.errno == errno.EINVAL
        closed_fd = os.open(os.devnull, os.O_RDONLY)
        os.close(closed_fd)
        with pytest.raises(SpawnError) as info:
            await client.spawn(["/bin/true"], ENV, "/", closed_fd, closed_fd, closed_fd)
        assert info.value.errno == errno.EBADF
        assert await run(client, ["/bin/true"]) == (0, b"", b"")  # and init is fine

    with_client(init_binary, body)


def test_fifty_concurrent_spawns(init_binary: Path) -> None:
    async def body(client: InitClient, _: Any) -> None:
        results = await asyncio.gather(*(run(client, [SH, "-c", "sleep 0.1; echo $0", str(i)]) for i in range(50)))
        assert results == [(0, f"{i}\n".encode(), b"") for i in range(50)]

    with_client(init_binary, body)


def test_long_command_lines_up_to_the_message_cap(init_binary: Path) -> None:
    async def body(client: InitClient, _: Any) -> None:
        # Above the default socket send buffer (208 KiB); a single string may not exceed 128 KiB (execve).
        args = ["a" * 100_000, "b" * 100_000, "c" * 30_000]
        assert await run(client, [SH, "-c", "echo ${#1} ${#2} ${#3}", "sh", *args]) == (
            0,
            b"100000 100000 30000\n",
            b"",
        )
        with pytest.raises(SpawnError) as info:
            await run(client, ["/bin/true", "x" * MAX_MESSAGE])
        assert info.value.errno == errno.E2BIG
        assert await run(client, ["/bin/true"]) == (0, b"", b"")

    with_client(init_binary, body)


def test_spawns_wait_for_room_in_a_full_socket_buffer(init_binary: Path) -> None:
    async def body(client: InitClient, _: Any) -> None:
        # 40 x 100 KB is ten times the send buffer: most sends first hit EAGAIN and must wait their turn.
        big = "z" * 100_000
        runs = (run(client, [SH, "-c", "echo $0 ${#1}", str(i), big]) for i in range(40))
        assert await asyncio.gather(*runs) == [(0, f"{i} 100000\n".encode(), b"") for i in range(40)]

    with_client(init_binary, body)


def test_busybox_runs_under_init(init_binary: Path, tmp_path: Path) -> None:
    async def body(client: InitClient, _: Any) -> None:
        busybox = str(ensure_busybox(tmp_path))
        assert await run(client, [busybox, "sh", "-c", "echo $((6 * 7))"], {}) == (0, b"42\n", b"")

    with_client(init_binary, body)


# --- signals, reaping, shutdown --------------------------------------------------------------------


def test_signal_kills_the_whole_tree_including_other_process_groups(init_binary: Path) -> None:
    async def body(client: InitClient, _: Any) -> None:
        # A background sleep (same process group) and a python that moves to its own process group
        # but stays in the session: a plain kill(-pgid) would miss the latter.
        mover = "import os, time; os.setpgid(0, 0); print(os.getpid(), flush=True); time.sleep(100)"
        pipes = Pipes()
        try:
            job = await pipes.spawn(
                client, [SH, "-c", 'sleep 100 & echo $!; "$0" -c "$1" & sleep 100', sys.executable, mover]
            )
            sleeper, moved = (int(line) for line in await read_lines(pipes.out_r, 2))
            moved_stat = proc_stat(moved)
            assert moved_stat is not None
            assert moved_stat[2] == str(moved) and moved_stat[3] == str(job.pid)  # own group, job's session
            assert running(sleeper)
            await job.signal(signal.SIGTERM)
            assert os.waitstatus_to_exitcode(await asyncio.wait_for(job.wait(), 5)) == -signal.SIGTERM
            # Orphaned on the job's death, they reparent to init, which reaps them: no pid left at all.
            await eventually_async(lambda: proc_stat(sleeper) is None and proc_stat(moved) is None, timeout=5,
                                   what="both processes to be killed")
            await job.signal(signal.SIGTERM)  # finished job: ignored
        finally:
            pipes.close()

    with_client(init_binary, body)


def test_orphans_reparent_to_init_and_are_reaped(init_binary: Path) -> None:
    async def body(client: InitClient, proc: subprocess.Popen[bytes]) -> None:
        pipes = Pipes()
        try:
            job = await pipes.spawn(client, [SH, "-c", "sleep 0.5 & echo $!; exit 0"])
            (orphan,) = (int(line) for line in await read_lines(pipes.out_r, 1))
            assert os.waitstatus_to_exitcode(await asyncio.wait_for(job.wait(), 5)) == 0
            orphan_stat = proc_stat(orphan)
            assert orphan_stat is not None and orphan_stat[1] == str(proc.pid)  # subreaper
            await eventually_async(lambda: proc_stat(orphan) is None and "Z" not in children_of(proc.pid).values(),
                                   timeout=5, what="the orphan to end and be reaped by init")
        finally:
            pipes.close()

    with_client(init_binary, body)


def test_background_process_holding_stdout_does_not_delay_exit(init_binary: Path) -> None:
    async def body(client: InitClient, proc: subprocess.Popen[bytes]) -> int:
        pipes = Pipes()
        try:
            job = await pipes.spawn(client, [SH, "-c", "sleep 100 & echo $!"])
            assert os.waitstatus_to_exitcode(await asyncio.wait_for(job.wait(), 5)) == 0
            (holder,) = (int(line) for line in await read_lines(pipes.out_r, 1))
            assert running(holder)
            return holder
        finally:
            pipes.close()

    holder = with_client(init_binary, body)
    assert not running(holder)  # and shutting init down killed the leftover


def test_closing_the_agent_kills_every_job_and_init_exits(init_binary: Path) -> None:
    async def main() -> None:
        host, proc = start_init(init_binary)
        client = InitClient(host)
        pipes = Pipes()
        try:
            sleeper = await pipes.spawn(client, ["/bin/sleep", "100"])
            pipes2 = Pipes()
            tree = await pipes2.spawn(client, [SH, "-c", "setsid sleep 100 & echo $!; wait"])
            (escaped,) = (int(line) for line in await read_lines(pipes2.out_r, 1))
            pipes2.close()
            assert all(running(pid) for pid in (sleeper.pid, tree.pid, escaped))
            client.close()
            assert client.closed
            await asyncio.wait_for(client.wait_closed(), 1)
            assert await asyncio.to_thread(proc.wait, 5) == 0
            assert not any(running(pid) for pid in (sleeper.pid, tree.pid, escaped))
            with pytest.raises(SandboxError, match="container stopped"):
                await sleeper.wait()
            with pytest.raises(SandboxError, match="container stopped"):
                await run(client, ["/bin/true"])
            await sleeper.signal(signal.SIGKILL)  # no-op once stopped
        finally:
            pipes.close()
            client.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    asyncio.run(main())


def test_init_dying_releases_waiters(init_binary: Path) -> None:
    async def main() -> None:
        host, proc = start_init(init_binary)
        client = InitClient(host)
        pipes = Pipes()
        try:
            job = await pipes.spawn(client, ["/bin/sleep", "100"])
            waiter = asyncio.ensure_future(job.wait())
            proc.kill()
            await asyncio.wait_for(client.wait_closed(), 5)
            assert client.closed
            with pytest.raises(SandboxError, match="container stopped"):
                await waiter
            with pytest.raises(SandboxError, match="container stopped"):
                await run(client, ["/bin/true"])
            os.killpg(job.pid, signal.SIGKILL)  # orphaned by the SIGKILLed init
        finally:
            pipes.close()
            client.close()
            proc.wait()

    asyncio.run(main())


def test_init_survives_termination_signals(init_binary: Path) -> None:
    async def body(client: InitClient, proc: subprocess.Popen[bytes]) -> None:
        assert await run(client, ["/bin/true"]) == (0, b"", b"")  # init is past its setup
        for signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            proc.send_signal(signo)
        # Pending signals are delivered before init next runs, so it has had them once it answers.
        assert await run(client, ["/bin/true"]) == (0, b"", b"")
        assert proc.poll() is None

    with_client(init_binary, body)


def test_cancelled_spawn_does_not_leak_the_process(init_binary: Path, tmp_path: Path) -> None:
    async def body(client: InitClient, _: Any) -> None:
        pid_file = tmp_path / "pid"
        pipes = Pipes()
        try:
            task = asyncio.ensure_future(pipes.spawn(client, [SH, "-c", f"echo $$ > {pid_file}; exec sleep 100"]))
            await asyncio.sleep(0)  # one step of the task: the SPAWN is sent, its STARTED not read yet
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            pipes.close()
        assert await run(client, ["/bin/true"]) == (0, b"", b"")  # init got to the first SPAWN: it started
        await eventually_async(lambda: pid_file.exists() and pid_file.read_text().endswith("\n"), timeout=5,
                               what="the spawned shell to write its pid")
        await eventually_async(lambda: not running(int(pid_file.read_text())), timeout=5,
                               what="the abandoned process to be killed")

    with_client(init_binary, body)


# --- the raw protocol: hostile and malformed messages ----------------------------------------------


def spawn_message(job_id: int, argv: list[bytes], argc: int | None = None) -> bytes:
    strings = b"".join(s + b"\0" for s in [b"/", *argv])
    return struct.pack("<B3xIII", 1, job_id, len(argv) if argc is None else argc, 0) + strings


def truncates_to_valid_spawn() -> bytes:
    message = spawn_message(0, [b"/bin/true"])
    filler = [b"f" * 999] * ((256 * 1024 - len(message)) // 1000)
    filler.append(b"g" * (256 * 1024 - len(message) - 1000 * len(filler) - 1))
    message = spawn_message(0, [b"/bin/true", *filler])
    assert len(message) == 256 * 1024
    return message + b"trailing string beyond the cap\0"


def reply(sock: socket.socket) -> tuple[int, int, int]:
    data = sock.recv(64)
    assert len(data) == 12, data
    return struct.unpack("<B3xIi", data)


def test_malformed_messages_get_einval_and_never_crash_init(init_binary: Path) -> None:
    host, proc = start_init(init_binary)
    host.settimeout(5)
    host.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    null = os.open(os.devnull, os.O_RDWR)
    three = [null, null, null]
    try:
        good = spawn_message(0, [b"/bin/true"])
        socket.send_fds(host, [good], three)
        assert reply(host)[:2] == (1, 0) and reply(host)[:3] == (3, 0, 0)
        fds_before = sorted(os.listdir(f"/proc/{proc.pid}/fd"))
        cases: list[tuple[bytes, list[int], int]] = [
            (good[:16], three, 1),  # no strings at all
            (good[:-1], three, 2),  # last string unterminated
            (good + b"trailing", three, 3),
            (spawn_message(4, [b"/bin/true"], argc=0), three, 4),
            (spawn_message(5, [b"/bin/true"], argc=0xFFFFFFFF), three, 5),
            (spawn_message(6, [b"/bin/true"]), [], 6),  # no fds
            (spawn_message(7, [b"/bin/true"]), [null, null], 7),
            (spawn_message(8, [b"/bin/true"]), [null] * 4, 8),
            (spawn_message(9, [b"/bin/true", b"x" * (300 * 1024)]), three, 9),  # above the 256 KiB cap
            # Above the cap too, but cut at 256 KiB it would parse as a valid SPAWN of /bin/true:
            # only the kernel's MSG_TRUNC flag tells.
            (truncates_to_valid_spawn(), three, 10),
            # A terminal's SPAWN_PTY carries no fds, and its header has rows and cols after the counts.
            (b"\x03" + spawn_message(11, [b"/bin/true"])[1:], three, 11),
            (b"\x03" + spawn_message(12, [b"/bin/true"])[1:16], [], 12),
        ]
        for message, fds, job_id in cases:
            message = message[:4] + struct.pack("<I", job_id) + message[8:]
            socket.send_fds(host, [message], fds)
            assert reply(host) == (2, job_id, errno.EINVAL), job_id
        host.send(b"\x01\x00\x00")  # a SPAWN too short to even carry an id
        assert reply(host) == (2, 0, errno.EINVAL)

        # Garbage with any other op, and malformed SIGNALs, are ignored without a reply.
        for i in range(200):
            junk = os.urandom(1 + i * 7 % 300)
            if junk[0] in (1, 2, 3):
                junk = b"\x00" + junk[1:]
            host.send(junk)
        host.send(struct.pack("<B3xI", 2, 1))  # SIGNAL missing its signo
        host.send(struct.pack("<B3xII", 2, 12345, signal.SIGKILL))  # unknown job

        # A duplicate id while the first job runs; then SIGNAL reaches the first job.
        socket.send_fds(host, [spawn_message(42, [b"/bin/sleep", b"100"])], three)
        op, job_id, pid = reply(host)
        assert (op, job_id) == (1, 42) and running(pid)
        socket.send_fds(host, [spawn_message(42, [b"/bin/true"])], three)
        assert reply(host) == (2, 42, errno.EINVAL)
        host.send(struct.pack("<B3xII", 2, 42, signal.SIGKILL))
        op, job_id, status = reply(host)
        assert (op, job_id, os.waitstatus_to_exitcode(status)) == (3, 42, -signal.SIGKILL)

        assert proc.poll() is None
        assert sorted(os.listdir(f"/proc/{proc.pid}/fd")) == fds_before  # every received fd was closed
        socket.send_fds(host, [spawn_message(43, [b"/bin/true"])], three)
        assert reply(host)[:2] == (1, 43)
        assert reply(host)[:3] == (3, 43, 0)
    finally:
        os.close(null)
        host.close()
        assert proc.wait(5) == 0


def test_agent_ignores_garbled_replies(init_binary: Path) -> None:
    """A confused peer (here: a fake init we drive by hand) must not break the client."""

    async def main() -> None:
        host, fake_init = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        client = InitClient(host)
        pipes = Pipes()
        try:
            task = asyncio.ensure_future(pipes.spawn(client, ["/bin/true"]))
            await eventually_async(lambda: select.select([fake_init], [], [], 0)[0], timeout=5,
                                   what="the client to send its SPAWN")
            data, fds, _flags, _addr = socket.recv_fds(fake_init, 4096, 3)
            for fd in fds:
                os.close(fd)
            job_id = struct.unpack_from("<I", data, 4)[0]
            for junk in (
                b"\x01",
                b"\x09" + bytes(11),
                struct.pack("<B3xIi", 3, 999, 0),
                struct.pack("<B3xIi", 2, 999, 1),
            ):
                fake_init.send(junk)
            fake_init.send(struct.pack("<B3xIi", 1, job_id, 4242))
            job = await asyncio.wait_for(task, 5)
            assert (job.id, job.pid) == (job_id, 4242)
            fake_init.send(struct.pack("<B3xIi", 3, job_id, 3 << 8))
            assert os.waitstatus_to_exitcode(await asyncio.wait_for(job.wait(), 5)) == 3
            assert not client.closed
        finally:
            pipes.close()
            client.close()
            fake_init.close()

    asyncio.run(main())


@pytest.mark.slow
def test_job_table_is_capped_at_4096(init_binary: Path, tmp_path: Path) -> None:
    busybox = str(ensure_busybox(tmp_path))

    async def body(client: InitClient, _: Any) -> None:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            jobs = await asyncio.gather(
                *(client.spawn([busybox, "sleep", "100"], {}, "/", null, null, null) for _ in range(4096))
            )
            with pytest.raises(SpawnError) as info:
                await client.spawn([busybox, "true"], {}, "/", null, null, null)
            assert info.value.errno == errno.EAGAIN
            await jobs[0].signal(signal.SIGKILL)
            await jobs[0].wait()
            job = await client.spawn([busybox, "true"], {}, "/", null, null, null)  # a slot is free again
            assert await job.wait() == 0
        finally:
            os.close(null)

    with_client(init_binary, body)
