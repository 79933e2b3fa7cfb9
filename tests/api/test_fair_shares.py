"""The server survives its tenants: file descriptors, output floods and what one request makes it hold."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Server
from tests.helpers import run
from tests.polling import eventually

pytestmark = pytest.mark.root

KILL_SLEEPS = "pkill -x sleep; true"


@contextlib.contextmanager
def soft_open_file_limit(soft: int) -> Iterator[int]:
    """This process's soft open-file limit, inherited by a server started inside; yields the hard one."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (before, hard))


def server_fds(server: Server) -> list[str]:
    assert server.proc is not None
    fd_dir = Path(f"/proc/{server.proc.pid}/fd")
    links = []
    for entry in fd_dir.iterdir():
        with contextlib.suppress(FileNotFoundError):
            links.append(os.readlink(entry))
    return links


def pipes_held(server: Server) -> int:
    return sum(link.startswith("pipe:") for link in server_fds(server))


def cpu_seconds(stat_line: str) -> float:
    """utime + stime of a /proc/PID/stat line."""
    fields = stat_line.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def restart(server: Server, **env: str) -> None:
    server.stop()
    server.env.update(env)
    server.start()


def test_background_pipes_cannot_exhaust_the_servers_file_descriptors(own_server: Server) -> None:
    # Started with a low soft limit, the server raises it to the hard one.
    own_server.stop()
    own_server.env.update(COVE_BACKGROUND_PIPES="256", COVE_BACKGROUND_PIPES_PER_PROJECT="100000",
                          COVE_NOFILE_LIMIT="256")  # runc cannot give containers more than the server has
    with soft_open_file_limit(256) as hard:
        own_server.start()
    assert own_server.proc is not None
    limits = Path(f"/proc/{own_server.proc.pid}/limits").read_text()
    assert [line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files")] == [
        [str(hard), str(hard)]]
    # Then it gets only 512 (the total of 256 pipes is what half of that would give by default).
    resource.prlimit(own_server.proc.pid, resource.RLIMIT_NOFILE, (512, 512))
    client, http = own_server.client(), own_server.http()
    before = pipes_held(own_server)
    # Each command leaves a sleep holding its stdout and stderr: 128 pipes per container, 640 in all,
    # more than the server's 512 descriptors; the total (256) keeps the server well inside them.
    attackers = [client.containers.create(name=f"fd-{n}").id for n in range(5)]
    for cid in attackers:
        out = run(http, cid, *["sleep 1000 &"] * 64)
        assert {entry["outcome"]["exit_code"] for entry in out} == {0}  # type: ignore[index]
    assert 200 <= pipes_held(own_server) - before <= 256  # the total was reached, and held
    assert len(server_fds(own_server)) < 512
    assert http.get("/healthz").status_code == 200
    fresh = client.containers.create(name="still-served").id
    assert run(http, fresh, "echo ok")[0]["stdout"] == "ok\n"
    assert "Too many open files" not in own_server.log.read_text()
    for cid in attackers:
        client.containers.delete(cid)
    eventually(lambda: pipes_held(own_server) <= before, what="the deleted containers' pipes to be closed")
    http.close()


def _leave_writers(http: httpx.Client, cid: str, count: int) -> None:
    """``count`` background processes, each holding its command's stdout until its sleep is killed,
    then writing to it once; one whose pipe the server closed leaves ``/mnt/data/broken.N``."""
    commands = [f"(trap '' PIPE; sleep 1000; echo alive || touch /mnt/data/broken.{n}; touch /mnt/data/done.{n})"
                " 2>/dev/null &" for n in range(count)]
    assert all(entry["outcome"] == {"type": "exit", "exit_code": 0} for entry in run(http, cid, *commands))


def _broken(http: httpx.Client, cid: str, count: int) -> list[str]:
    """Lets the writers write; the ones that found their pipe closed."""
    run(http, cid, KILL_SLEEPS)
    def names() -> list[str]:
        return str(run(http, cid, "ls /mnt/data")[0]["stdout"]).split()
    listing = eventually(lambda: (found := names()) and sum(n.startswith("done.") for n in found) == count
                         and found, what="every writer to write")
    return sorted(name for name in listing if name.startswith("broken."))


def test_one_projects_background_pipes_leave_anothers_alone(own_server: Server) -> None:
    restart(own_server, COVE_BACKGROUND_PIPES_PER_CONTAINER="6", COVE_BACKGROUND_PIPES_PER_PROJECT="10")
    alpha, beta = own_server.http("alpha"), own_server.http("beta")
    a1 = own_server.client("alpha").containers.create(name="a1").id
    a2 = own_server.client("alpha").containers.create(name="a2").id
    b1 = own_server.client("beta").containers.create(name="b1").id
    _leave_writers(alpha, a1, 8)  # 6 kept (the container's cap)
    _leave_writers(alpha, a2, 8)  # 4 kept: alpha is at its 10
    _leave_writers(beta, b1, 8)  # 6 kept: alpha's cap is not beta's
    assert _broken(alpha, a1, 8) == ["broken.6", "broken.7"]
    assert _broken(alpha, a2, 8) == ["broken.4", "broken.5", "broken.6", "broken.7"]
    assert _broken(beta, b1, 8) == ["broken.6", "broken.7"]
    alpha.close()
    beta.close()


def test_a_background_flood_is_left_blocked_and_costs_the_server_nothing(own_server: Server) -> None:
    restart(own_server, COVE_WARM_POOL="0")  # no pool refill starting containers during the measurement
    client, http = own_server.client(), own_server.http()
    cid = client.containers.create(name="flood").id
    out = run(http, cid, *["yes &"] * 16, "echo done")
    assert str(out[0]["stdout"]).startswith("y\ny\n")
    assert [entry["outcome"] for entry in out] == [{"type": "exit", "exit_code": 0}] * 17
    assert out[16]["stdout"] == "done\n"
    assert own_server.proc is not None
    server_stat = Path(f"/proc/{own_server.proc.pid}/stat")

    def floods() -> list[str]:
        return str(run(http, cid, "for p in $(pidof yes); do cat /proc/$p/stat; done")[0]["stdout"]).splitlines()

    yes_before = floods()
    server_before = cpu_seconds(server_stat.read_text())
    window = 3.0
    time.sleep(window)  # the scenario: the server left alone with sixteen floods pending
    server_used = cpu_seconds(server_stat.read_text()) - server_before
    yes_after = floods()
    # Draining them as fast as the old 2 ms pause allowed took the server about a sixth of a CPU.
    assert server_used < 0.05 * window
    assert len(yes_before) == len(yes_after) == 16  # alive, not killed
    assert sum(map(cpu_seconds, yes_after)) - sum(map(cpu_seconds, yes_before)) < 0.05 * window
    assert run(http, cid, "echo still")[0]["stdout"] == "still\n"
    eventually(lambda: all(line.rsplit(")", 1)[1].split()[0] == "S" for line in floods()),
               what="every yes to wait in write")
    http.close()


def test_an_exec_returns_at_most_its_output_budget(http: httpx.Client, client: openai.OpenAI) -> None:
    cid = client.containers.create(name="budget").id
    six_million = "head -c 6000000 /dev/zero | tr '\\0' y"
    out = run(http, cid, six_million, "echo after", six_million, six_million, max_output_length=10_000_000)
    lengths = [len(str(entry["stdout"])) + len(str(entry["stderr"])) for entry in out]
    # 10M characters in all: a quarter each, and what a command leaves unused goes to the ones after it.
    assert "characters truncated" in str(out[0]["stdout"])
    assert 2_500_000 <= lengths[0] <= 2_500_100
    assert out[1]["stdout"] == "after\n"
    assert 5_000_000 - 100 <= lengths[2] <= 5_000_100
    assert 2_500_000 - 200 <= lengths[3] <= 2_500_100
    assert sum(lengths) <= 10_000_000 + 4 * 100


def _rss(server: Server) -> int:
    assert server.proc is not None
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024


def _blocked_writers() -> list[int]:
    """Container processes (uid 100000 on the host) asleep writing to a full pipe."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if entry.name.isdigit() and entry.stat().st_uid == 100000 and \
                    (entry / "wchan").read_text().strip().endswith("pipe_write"):  # anon_pipe_write on 6.x
                found.append(int(entry.name))
    return found


def test_a_streaming_exec_nobody_reads_waits_in_bounded_memory(own_server: Server) -> None:
    """A client that does not read holds its commands back (they block on their full pipes) in
    bounded server memory; once it reads, every byte arrives, in order, with nothing cut."""
    client, http = own_server.client(), own_server.http()
    cid = client.containers.create(name="unread").id
    size = 12_000_000
    flood = f"head -c {size} /dev/zero | tr '\\0' y; head -c {size} /dev/zero | tr '\\0' e >&2"
    body = {"commands": [flood] * 2, "max_output_length": 10_000_000, "stream": True}
    before = _rss(own_server)
    with own_server.http() as reader, reader.stream("POST", f"/v1/containers/{cid}/exec", json=body) as response:
        assert response.status_code == 200
        # Nothing is read: the command ends up asleep on its full pipe, not finished, not buffered.
        eventually(_blocked_writers, timeout=60, what="the flood to wait for the client")
        assert http.get(f"/v1/containers/{cid}/audit").json()["data"] == []
        held = _rss(own_server) - before
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    assert held < 100 << 20, f"the server holds {held >> 20} MiB for one unread exec"
    streamed: dict[tuple[int, str], list[str]] = {}
    for event in events:
        if event["type"] == "container.exec.output.delta":
            for stream, text in event["delta"].items():
                streamed.setdefault((event["command_index"], stream), []).append(text)
    for index in (0, 1):
        assert "".join(streamed[(index, "stdout")]) == "y" * size
        assert "".join(streamed[(index, "stderr")]) == "e" * size
    done = [event for event in events if event["type"] == "container.exec.command.done"]
    assert len(done) == 2  # the result keeps its cap
    assert len(done[0]["output"]["stdout"]) + len(done[0]["output"]["stderr"]) < 10_000_100
    assert events[-1]["type"] == "container.exec.completed"
    http.close()


def test_a_streaming_client_that_goes_away_releases_its_command(own_server: Server) -> None:
    client, http = own_server.client(), own_server.http()
    cid = client.containers.create(name="gone").id
    body = {"commands": ["head -c 50000000 /dev/zero | tr '\\0' y; echo finished > /tmp/done"], "stream": True}
    with own_server.http() as reader, reader.stream("POST", f"/v1/containers/{cid}/exec", json=body) as response:
        assert response.status_code == 200
        eventually(_blocked_writers, timeout=60, what="the flood to wait for the client")
    # The client closed its connection without reading: the command runs to its end.
    eventually(lambda: run(http, cid, "cat /tmp/done 2>/dev/null")[0]["stdout"] == "finished\n", timeout=60,
               what="the command to finish once its client left")
    http.close()


def test_only_the_upload_route_takes_upload_sized_bodies(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: cove\r\nAuthorization: Bearer test-key-alpha\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 104857600\r\n\r\n")
        answer = b""  # refused on its headers: none of the 100 MB is ever sent
        while not answer.endswith(b"}"):
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"request_too_large" in answer
    with server.http() as http:
        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives, cut at the JSON limit
            for _ in range(100):
                yield b"y" * (1 << 20)
        response = http.post("/v1/responses", content=chunks(),
                              headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413


def test_uploads_spool_in_the_data_dir(server: Server, client: openai.OpenAI) -> None:
    cid = client.containers.create(name="spool").id
    spool = str(server.data_dir / "spool") + "/"
    boundary = "cove-spool-test"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    seen: list[str] = []

    def body() -> Iterator[bytes]:
        yield head + b"z" * (3 << 20)  # past the parser's 1 MiB in memory: it is on disk now
        seen.extend(eventually(lambda: [link for link in server_fds(server) if link.startswith(spool)],
                               what="the upload to spool"))
        seen.extend(link for link in server_fds(server) if link.startswith("/tmp/"))
        yield b"z" * (1 << 20) + f"\r\n--{boundary}--\r\n".encode()

    with server.http() as http:
        response = http.post(f"/v1/containers/{cid}/files", content=body(),
                             headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == 4 << 20
    assert seen and all(link.startswith(spool) for link in seen)
