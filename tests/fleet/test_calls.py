"""The fleet's exec sessions (``sandbox/fleet/calls.py``) on a real relay, without Ray: commands in flight
together and answered out of order, the host's errors raised on the replica as the same Cove errors, a
session that breaks failing its commands as unanswered and opening again, and a connection that speaks
garbage dropped. The commands are real processes (``bash -c``) run by the "host"."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Literal

import pytest

from cove.errors import ContainerLost, CoveError, SandboxError, SandboxUnavailable
from cove.sandbox.base import Command, CommandOutput, ExitOutcome, Limits, OutputCallback
from cove.sandbox.fleet.calls import MAX_FRAME, STREAM_AHEAD, CallsClient, ExecRequest, error_of, serve
from cove.sandbox.fleet.relay import Relay, Ticket
from cove.sandbox.fleet.streams import connect
from tests.polling import eventually_async

IP = "127.0.0.6"
"""The "node's address" of these tests: a loopback address no Ray test uses."""


async def run_command(request: ExecRequest, on_output: OutputCallback | None) -> CommandOutput:
    """The host's exec, on this machine: ``lost`` is refused as a host with another incarnation would, and
    ``boom`` fails as a broken engine would. Output is streamed as the engine does: 64 KiB reads, and no
    next read of a pipe until the future ``on_output`` returned is done. ``read_bytes`` counts what was
    read of the commands' stdout, ``live`` holds those running."""
    if request.incarnation == "lost":
        raise ContainerLost(request.container_id)
    if request.incarnation == "boom":
        raise RuntimeError("the engine broke")
    proc = await asyncio.create_subprocess_exec("bash", "-c", request.command.command, env=request.command.env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                start_new_session=True)

    async def pipe(name: Literal["stdout", "stderr"], stream: asyncio.StreamReader | None) -> str:
        assert stream is not None
        kept: list[str] = []
        while chunk := await stream.read(65536):
            if name == "stdout":
                read_bytes[0] += len(chunk)
            text = chunk.decode()
            if len(kept) < 4:
                kept.append(text)
            if on_output is not None and (pending := on_output(name, text)) is not None:
                await pending
        return "".join(kept)

    live.add(proc)
    try:
        stdout, stderr = await asyncio.gather(pipe("stdout", proc.stdout), pipe("stderr", proc.stderr))
        await proc.wait()
    finally:  # a command still running when the test ends (or cancelled) is killed, its whole process
        if proc.returncode is None:  # group as the engine's would be (else the pipeline keeps the pipes open)
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.communicate()  # to their ends: a pipe paused with a full buffer would never see it
        live.discard(proc)
    assert proc.returncode is not None
    return CommandOutput(stdout=stdout, stderr=stderr, outcome=ExitOutcome(exit_code=proc.returncode))


read_bytes = [0]
live: set[asyncio.subprocess.Process] = set()
"""The commands running on the "host"."""


def request(command: str, incarnation: str = "now", env: dict[str, str] | None = None) -> ExecRequest:
    return ExecRequest(incarnation, "cntr_1", Limits(project="p"), Command(command, 10_000, 1000, env or {}))


def run(test: Callable[[Relay, CallsClient, list[Ticket]], Awaitable[None]]) -> None:
    """Runs ``test`` with a relay serving exec sessions and a client that opens them through it (and the
    tickets it was given, one per session opened)."""

    async def main() -> None:
        relay = Relay(IP)
        tickets: list[Ticket] = []

        async def open_ticket() -> Ticket:
            tickets.append(await relay.offer(partial(serve, run_command)))
            return tickets[-1]

        client = CallsClient(open_ticket)
        try:
            await test(relay, client, tickets)
        finally:
            await client.close()
            await relay.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_commands_share_one_session_and_are_answered_as_they_finish(tmp_path: Path) -> None:
    started = tmp_path / "started"

    async def test(relay: Relay, client: CallsClient, tickets: list[Ticket]) -> None:
        slow = asyncio.create_task(client.exec(request(f"touch {started}; sleep 1; echo slow")))
        await eventually_async(started.exists, what="the slow command to start on the host")
        fast = await client.exec(request('echo "$WHO"; echo err >&2; exit 3', env={"WHO": "fast"}))
        assert (fast.stdout, fast.stderr, fast.outcome) == ("fast\n", "err\n", ExitOutcome(exit_code=3))
        assert not slow.done()  # the fast one was answered while the slow one still ran
        assert (await slow).stdout == "slow\n"
        outputs = await asyncio.gather(*(client.exec(request(f"echo {n}")) for n in range(50)))
        assert [output.stdout for output in outputs] == [f"{n}\n" for n in range(50)]
        assert len(tickets) == 1 and len(relay.streams) == 1  # all of it on one connection

    run(test)


def test_the_hosts_errors_are_the_same_cove_errors_on_the_replica() -> None:
    async def test(relay: Relay, client: CallsClient, tickets: list[Ticket]) -> None:
        with pytest.raises(ContainerLost) as lost:
            await client.exec(request("true", incarnation="lost"))
        expected = ContainerLost("cntr_1")
        assert (lost.value.status_code, lost.value.message, lost.value.code) == (410, expected.message, expected.code)
        with pytest.raises(SandboxError, match="The container's node failed: the engine broke") as broke:
            await client.exec(request("true", incarnation="boom"))
        assert type(broke.value) is SandboxError and broke.value.status_code == 500
        assert (await client.exec(request("echo still"))).stdout == "still\n"  # errors do not end the session
        assert len(tickets) == 1

    run(test)


def test_a_broken_session_fails_its_commands_and_the_next_opens_another(tmp_path: Path) -> None:
    started = tmp_path / "started"

    async def test(relay: Relay, client: CallsClient, tickets: list[Ticket]) -> None:
        assert (await client.exec(request("echo one"))).stdout == "one\n"
        running = asyncio.create_task(client.exec(request(f"touch {started}; sleep 5")))
        await eventually_async(started.exists, what="the command to start on the host")
        await relay.close()  # the node's host was reset (or its process died)
        with pytest.raises(SandboxUnavailable, match="may or may not have run"):
            await running
        await eventually_async(lambda: not live, what="the host to kill the broken session's command")
        assert (await client.exec(request("echo two"))).stdout == "two\n"
        assert len(tickets) == 2

    run(test)


def test_a_connection_that_speaks_garbage_is_dropped() -> None:
    async def test(relay: Relay, client: CallsClient, tickets: list[Ticket]) -> None:
        for garbage in ((MAX_FRAME + 1).to_bytes(4, "big"), b"\x00\x00\x00\x02{]", b"\x00\x00\x00\x02{}"):
            sock = await connect(await relay.offer(partial(serve, run_command)))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(garbage)
            assert await reader.read() == b""  # closed, nothing answered
            writer.close()
        await eventually_async(lambda: not relay.streams, what="the dropped sessions to be freed")
        assert (await client.exec(request("echo fine"))).stdout == "fine\n"

    run(test)


def test_only_cove_errors_cross() -> None:
    """An error type the replica does not know becomes a ``SandboxError``: a name is not code to run."""
    error = error_of({"type": "SystemExit", "message": "m", "param": None, "code": "c"})
    assert type(error) is SandboxError and error.message == "m"
    assert isinstance(error_of({"type": "NotFound", "message": "x"}), CoveError)


def test_streamed_output_comes_in_order_before_the_result() -> None:
    async def test(relay: Relay, client: CallsClient, tickets: list[Ticket]) -> None:
        seen: list[tuple[str, str]] = []

        def output(stream: Literal["stdout", "stderr"], text: str) -> None:
            seen.append((stream, text))

        result = await client.exec(request("for n in 1 2 3; do echo $n; sleep 0.05; done; echo oops >&2"), output)
        assert "".join(text for stream, text in seen if stream == "stdout") == "1\n2\n3\n"
        assert ("stderr", "oops\n") in seen
        assert result.stdout == "1\n2\n3\n" and result.outcome == ExitOutcome(exit_code=0)
        plain = await client.exec(request("echo plain"))  # the same session serves both kinds
        assert plain.stdout == "plain\n" and len(tickets) == 1

    run(test)


def test_a_client_that_stops_reading_holds_the_command_back_and_its_cancel_kills_it(tmp_path: Path) -> None:
    """The client takes one chunk and then waits: the host sends ``STREAM_AHEAD`` chunks (64 KiB reads at
    most) ahead and stops reading the pipe, so the command (writing 200 MB) blocks; once the replica's call
    is cancelled (its caller went away), the host kills the command."""
    finished = tmp_path / "finished"

    async def test(relay: Relay, client: CallsClient, tickets: list[Ticket]) -> None:
        read_bytes[0] = 0
        taken: list[str] = []
        hold: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def output(stream: Literal["stdout", "stderr"], text: str) -> asyncio.Future[None] | None:
            taken.append(text)
            return hold if len(taken) == 1 else None

        flood = asyncio.create_task(client.exec(
            request(f"head -c 200000000 /dev/zero | tr '\\0' a; touch {finished}"), output))
        await eventually_async(lambda: len(taken) == 1, what="the first chunk", timeout=8)
        counts: list[int] = []

        def still() -> bool:
            """The count did not move between two polls: the pipe's reader waits for acknowledgements."""
            counts.append(read_bytes[0])
            return len(counts) >= 2 and counts[-1] == counts[-2]

        await eventually_async(still, what="the flood to be held back", timeout=8)
        held_at = read_bytes[0]
        assert held_at <= (STREAM_AHEAD + 1) * 65536 + 2**20, held_at  # unheld, 200 MB take about a second
        hold.set_result(None)  # the client reads again: the rest comes
        await eventually_async(lambda: read_bytes[0] > held_at + 4 * 2**20, what="the flood to go on", timeout=8)
        flood.cancel()  # the caller goes away before the end: the command is killed on the host
        with contextlib.suppress(asyncio.CancelledError):
            await flood
        await eventually_async(lambda: not live, what="the host to kill the command", timeout=8)
        assert not finished.exists() and read_bytes[0] < 200_000_000
        assert (await client.exec(request("echo after"))).stdout == "after\n"  # the session goes on

    run(test)
