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
    assert pipes_held(own_server) - before <= 256
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
