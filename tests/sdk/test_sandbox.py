"""The sandbox SDK (``from cove import Sandbox``) against a real server and real containers."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from cove import AsyncSandbox, Sandbox
from cove.sdk import (
    CommandExitError,
    FilesystemEventType,
    FileType,
    InvalidRequestError,
    NotFoundError,
    PtySize,
    SandboxError,
)
from cove.sdk.connection import Connection, ConnectionConfig
from cove.sdk.pty import AsyncPty
from tests.conftest import KEYS, Server
from tests.polling import eventually

pytestmark = pytest.mark.root


@pytest.fixture
def env(server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The SDK finds the server the way users point it there: COVE_BASE_URL (here with /v1) and COVE_API_KEY."""
    monkeypatch.setenv("COVE_BASE_URL", f"{server.url}/v1")
    monkeypatch.setenv("COVE_API_KEY", KEYS["alpha"])
    return server


@pytest.fixture
def sbx(env: Server) -> Sandbox:
    with Sandbox(name="sdk-test") as sandbox:
        yield sandbox


def test_base_url_with_or_without_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"):
        monkeypatch.setenv("COVE_BASE_URL", url)
        assert ConnectionConfig.of().base_url == "http://h:1"
    assert ConnectionConfig.of("https://x/v1").ws_url("/containers/c/pty") == "wss://x/v1/containers/c/pty"


def test_context_manager_kills(env: Server) -> None:
    with Sandbox(name="sdk-ctx") as sandbox:
        assert sandbox.is_running()
        sandbox_id = sandbox.sandbox_id
    with env.http() as http:
        assert http.get(f"/v1/containers/{sandbox_id}").status_code == 404


def test_commands_stream_and_exit_codes(sbx: Sandbox) -> None:
    seen: list[str] = []
    result = sbx.commands.run("for i in 1 2 3; do echo line $i; done; echo oops >&2", on_stdout=seen.append,
                              envs={"X": "y"})
    assert result.stdout == "line 1\nline 2\nline 3\n" and result.stderr == "oops\n" and result.exit_code == 0
    assert "".join(seen) == result.stdout
    assert sbx.commands.run("echo $X; pwd", envs={"X": "from-env"}, cwd="/tmp").stdout == "from-env\n/tmp\n"
    with pytest.raises(CommandExitError) as failed:
        sbx.commands.run("echo partial; exit 7")
    assert failed.value.exit_code == 7 and failed.value.stdout == "partial\n"
    with pytest.raises(CommandExitError) as slow:
        sbx.commands.run("sleep 30", timeout=1)
    assert slow.value.timed_out and slow.value.exit_code is None


def test_background_command_wait_and_kill(sbx: Sandbox) -> None:
    lines: list[str] = []
    handle = sbx.commands.run("echo started; sleep 0.5; echo finished", background=True, on_stdout=lines.append)
    assert handle.wait().stdout == "started\nfinished\n"
    assert "".join(lines) == "started\nfinished\n"
    looping = sbx.commands.run("while true; do echo tick; sleep 0.2; done", background=True, timeout=600)
    eventually(lambda: "tick" in looping.stdout, what="the background loop to print")
    assert looping.kill()
    with pytest.raises(CommandExitError) as killed:
        looping.wait()
    assert killed.value.exit_code == 137
    tree = sbx.commands.run("sh -c 'sleep 321' & sh -c 'sleep 322' & echo up; wait", background=True)
    eventually(lambda: "up" in tree.stdout, what="the tree to start")
    assert tree.kill()
    assert "sleep 32" not in sbx.commands.run("ps -eo args").stdout  # grandchildren too
    assert sbx.files.list("/tmp/.cove-sdk") == []  # no pid file left behind


def test_files_write_read_list_remove(sbx: Sandbox) -> None:
    blob = bytes(range(256)) * 1000
    info = sbx.files.write("/srv/data/blob.bin", blob)
    assert info.path == "/srv/data/blob.bin" and info.size == len(blob) and info.id.startswith("cfile")
    assert sbx.files.read("/srv/data/blob.bin", format="bytes") == blob
    sbx.files.write("/srv/data/hello.txt", "héllo\n")
    assert sbx.files.read("/srv/data/hello.txt") == "héllo\n"
    sbx.files.make_dir("/srv/data/sub")
    entries = sbx.files.list("/srv/data")
    assert [(e.name, e.type) for e in entries] == [("blob.bin", FileType.FILE), ("hello.txt", FileType.FILE),
                                                   ("sub", FileType.DIR)]
    assert entries[0].size == len(blob)
    sbx.files.remove("/srv/data/hello.txt")
    assert not sbx.files.exists("/srv/data/hello.txt") and sbx.files.exists("/srv/data/blob.bin")
    with pytest.raises(NotFoundError):
        sbx.files.read("/srv/data/hello.txt")
    with pytest.raises(NotFoundError):
        sbx.files.list("/nowhere")


def test_watch_dir(sbx: Sandbox) -> None:
    sbx.files.make_dir("/srv/watched")
    handle = sbx.files.watch_dir("/srv/watched")
    try:
        sbx.files.write("/srv/watched/a.txt", "one")
        events: list[tuple[str, FilesystemEventType]] = []

        def saw(name: str, kind: FilesystemEventType) -> bool:
            events.extend((e.name, e.type) for e in handle.get_new_events())
            return (name, kind) in events

        eventually(lambda: saw("a.txt", FilesystemEventType.CREATE), what="the create event")
        sbx.commands.run("echo more >> /srv/watched/a.txt")
        eventually(lambda: saw("a.txt", FilesystemEventType.WRITE), what="the write event")
        sbx.files.remove("/srv/watched/a.txt")
        eventually(lambda: saw("a.txt", FilesystemEventType.REMOVE), what="the remove event")
    finally:
        handle.stop()
    assert "python3 -c" not in sbx.commands.run("ps -eo args").stdout  # the watcher is gone
    with pytest.raises(NotFoundError):
        sbx.files.watch_dir("/nowhere")


def test_run_code_is_stateful_like_e2b(sbx: Sandbox) -> None:
    printed: list[str] = []
    first = sbx.run_code("x = 41\nprint('hi')\nprint('a', end='')\nprint('b')\nx + 1", on_stdout=printed.append)
    assert first.text == "42" and first.logs.stdout == ["hi\n", "ab\n"] and first.error is None
    assert printed == ["hi\n", "ab\n"]
    assert sbx.run_code("import sys\nsys.stderr.write('no newline')").logs.stderr == ["no newline"]
    assert sbx.run_code("x * 2").text == "82"  # variables survive between cells
    failed = sbx.run_code("1 / 0")
    assert failed.error is not None and failed.error.name == "ZeroDivisionError"
    assert failed.error.value == "division by zero" and "ZeroDivisionError" in failed.error.traceback
    assert sbx.run_code("y = 3").text is None
    big = sbx.run_code("s = '" + "a" * 100_000 + "'\nlen(s)")  # past the inline limit: uploaded
    assert big.text == "100000"


def test_run_code_figure(sbx: Sandbox) -> None:
    if sbx.commands.run("python3 -c 'import matplotlib' 2>/dev/null; echo $?").stdout.strip() != "0":
        pytest.skip("the default image has no matplotlib")
    figure = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nNone")
    pngs = [r.png for r in figure.results if r.png]
    assert len(pngs) == 1 and base64.b64decode(pngs[0]).startswith(b"\x89PNG")


def test_snapshot_and_fork(sbx: Sandbox) -> None:
    sbx.files.write("/mnt/data/state.txt", "v1")
    snapshot = sbx.snapshot("sdk-snap")
    assert snapshot.sandbox_id == sbx.sandbox_id and snapshot.name == "sdk-snap"
    (forked,) = sbx.fork()
    with forked:
        assert forked.files.read("/mnt/data/state.txt") == "v1"
        forked.files.write("/mnt/data/state.txt", "forked")
        assert sbx.files.read("/mnt/data/state.txt") == "v1"
    with Sandbox(snapshot_id=snapshot.snapshot_id) as restored:
        assert restored.files.read("/mnt/data/state.txt") == "v1"


def test_errors_and_connect(env: Server) -> None:
    with pytest.raises(NotFoundError) as missing:
        Sandbox.connect("cntr_nope")
    assert missing.value.status == 404
    with Sandbox(name="sdk-connect") as sandbox:
        other = Sandbox.connect(sandbox.sandbox_id)
        assert other.commands.run("echo shared").stdout == "shared\n"
        assert sandbox.sandbox_id in {info.sandbox_id for info in Sandbox.list()}
        other.close()
        with pytest.raises(NotFoundError):  # another project's key sees nothing
            Sandbox.connect(sandbox.sandbox_id, api_key=KEYS["beta"])


def test_async_twin(env: Server) -> None:
    async def main() -> None:
        async with await AsyncSandbox.create(name="sdk-async") as sandbox:
            chunks: list[str] = []

            async def collect(text: str) -> None:
                chunks.append(text)

            results = await asyncio.gather(*(sandbox.commands.run(f"echo {i}", on_stdout=collect) for i in range(4)))
            assert sorted(r.stdout for r in results) == ["0\n", "1\n", "2\n", "3\n"]
            assert sorted(chunks) == ["0\n", "1\n", "2\n", "3\n"]
            assert (await sandbox.run_code("2 ** 10")).text == "1024"
            await sandbox.files.write("/tmp/async.txt", b"bytes")
            assert await sandbox.files.read("/tmp/async.txt") == "bytes"

    asyncio.run(main())


def test_sync_calls_from_threads(sbx: Sandbox) -> None:
    outputs: list[str] = []

    def worker(i: int) -> None:
        outputs.append(sbx.commands.run(f"echo {i}").stdout)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outputs) == ["0\n", "1\n", "2\n", "3\n"]


def test_the_e2b_example_ported(env: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """The program docs/sdk.md shows, run as it is written there."""
    text = (Path(__file__).parents[2] / "docs" / "sdk.md").read_text()
    program = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert program.startswith("from cove import Sandbox\n") and "sbx.run_code(" in program
    exec(compile(program, "docs/sdk.md", "exec"), {})
    assert capsys.readouterr().out == "2\n"


def test_pty(sbx: Sandbox) -> None:
    """``sbx.pty`` on the PTY WebSocket (docs/terminals.md): typing, resize, exit code, hang-up, errors."""
    terminal = sbx.pty.create(PtySize(rows=30, cols=100), command="/bin/sh")
    terminal.send_stdin("echo hi-$((6*7))\n")
    eventually(lambda: b"hi-42" in terminal.output, what="the echo back")
    terminal.send_stdin("stty size\n")
    eventually(lambda: b"30 100" in terminal.output, what="the first size")
    terminal.resize(PtySize(rows=40, cols=120))
    terminal.send_stdin("stty size\n")
    eventually(lambda: b"40 120" in terminal.output, what="the new size")
    terminal.send_stdin("exit 5\n")
    assert terminal.wait() == 5
    received: list[bytes] = []
    waiting = sbx.pty.create(command="sleep 600", on_data=received.append)
    eventually(lambda: "sleep 600" in sbx.commands.run("ps -eo args").stdout, what="the terminal's program")
    waiting.kill()  # hanging up ends it
    eventually(lambda: "sleep 600" not in sbx.commands.run("ps -eo args").stdout, what="the program to end")
    assert waiting.wait() is None and bytes(waiting.output) == b"".join(received)

    async def refused(sandbox_id: str, api_key: str) -> None:
        connection = Connection(ConnectionConfig.of(api_key=api_key))
        try:
            with pytest.raises(NotFoundError):  # the server's JSON error before the upgrade, as an APIError
                await AsyncPty(connection, sandbox_id).create()
        finally:
            await connection.close()

    done = subprocess.run([str(Path(sys.executable).parent / "cove"), "containers", "logs", sbx.sandbox_id],
                          capture_output=True, text=True, timeout=120, check=True)  # the terminals, audited
    assert "terminal /bin/sh 100x30  [exit 5," in done.stdout
    asyncio.run(refused("cntr_nope", KEYS["alpha"]))
    asyncio.run(refused(sbx.sandbox_id, KEYS["beta"]))  # another project's container


def test_create_options(env: Server) -> None:
    with Sandbox(name="sdk-opts", network=["example.com"], timeout=90, memory_limit="4g", cpu_limit=1.5) as sandbox:
        raw = sandbox.get_info().raw
        assert raw["network_policy"] == {"type": "allowlist", "allowed_domains": ["example.com"]}
        assert raw["expires_after"] == {"anchor": "last_active_at", "minutes": 2}  # idle seconds, rounded up
        assert (raw["memory_limit"], raw["cpu_limit"], raw["name"]) == ("4g", 1.5, "sdk-opts")
    with pytest.raises(InvalidRequestError) as bad:
        Sandbox(memory_limit="3g")
    assert bad.value.param is not None and "memory_limit" in bad.value.param


def test_pause_and_resume(sbx: Sandbox) -> None:
    counter = sbx.commands.run("while true; do echo x >> /tmp/count; sleep 0.05; done", background=True, timeout=600)
    eventually(lambda: sbx.files.exists("/tmp/count"), what="the counter to start")
    assert sbx.pause().status == "paused"
    assert sbx.get_info().status == "paused"
    assert sbx.resume().status == "running"
    before = sbx.files.read("/tmp/count").count("x")
    eventually(lambda: sbx.files.read("/tmp/count").count("x") > before, what="the counter to go on after resume")
    assert counter.kill()


def test_sync_callbacks_cannot_call_the_sync_sdk(sbx: Sandbox) -> None:
    """They run on the SDK's own thread, which would wait on itself: refused, not a hang."""
    with pytest.raises(SandboxError, match="callbacks"):
        sbx.commands.run("echo x", on_stdout=lambda _text: sbx.files.exists("/"))
    assert sbx.commands.run("echo still fine").stdout == "still fine\n"


def test_get_host_is_a_signed_preview_url(sbx: Sandbox, env: Server) -> None:
    """E2B's ``get_host(port)``: here a whole URL on Cove's address that opens the app without the key."""
    sbx.files.write("/srv/site/hello.txt", "hello from the sandbox\n")
    sbx.commands.run("cd /srv/site && python3 -m http.server 8000 --bind 127.0.0.1", background=True)
    url = sbx.get_host(8000, expires_in=600)
    assert url.startswith(f"{env.url}/v1/containers/{sbx.sandbox_id}/ports/8000/~") and url.endswith("/")
    assert KEYS["alpha"] not in url
    with httpx.Client() as browser:  # no key
        page = eventually(lambda: (answer := browser.get(url + "hello.txt")).status_code == 200 and answer,
                          what="the app to answer through the preview URL")
        assert page.text == "hello from the sandbox\n"
        other_port = url.replace("/ports/8000/", "/ports/8001/")
        assert browser.get(other_port).status_code == 401
    with pytest.raises(InvalidRequestError):
        sbx.get_host(8000, expires_in=0)
