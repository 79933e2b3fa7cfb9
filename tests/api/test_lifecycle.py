"""Persistence across calls and restarts, crash recovery, and idle expiry."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import openai
import pytest

from tests.conftest import Server, _server_env, data_dir, running_server
from tests.helpers import make_wheel, run
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.scripted_upstream import ScriptedUpstream

pytestmark = pytest.mark.root


def test_packages_and_files_survive_calls_and_restarts(own_server: Server) -> None:
    client = own_server.client()
    cid = client.containers.create(name="persist").id
    filename, wheel = make_wheel("covepkg", "1.2.3")
    client.containers.files.create(cid, file=(filename, wheel))
    with own_server.http() as http:
        out = run(http, cid, f"pip install --no-index /mnt/data/{filename}", timeout_ms=120_000)[0]
        assert out["outcome"] == {"type": "exit", "exit_code": 0}, out
        assert run(http, cid, "python3 -c 'import covepkg; print(covepkg.VALUE)'")[0]["stdout"] == "1.2.3\n"
    own_server.stop()
    own_server.start()
    with own_server.http() as http:
        assert run(http, cid, "python3 -c 'import covepkg; print(covepkg.VALUE)'")[0]["stdout"] == "1.2.3\n"
    assert own_server.client().containers.retrieve(cid).status == "running"


def test_crash_leaves_nothing_behind(own_server: Server) -> None:
    client = own_server.client()
    cid = client.containers.create(name="crash").id
    with own_server.http() as http:
        run(http, cid, "echo kept > /root/state; sleep 777777 > /dev/null 2>&1 &")
    own_server.stop(signal.SIGKILL)
    eventually(lambda: "sleep 777777" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                                                             check=True).stdout,
               timeout=10, what="the processes of a crashed server's containers to end")
    runtime_dir = (own_server.data_dir / "containers" / cid).resolve()
    own_server.start()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"{runtime_dir}/rootfs" not in mounts, "a crash's mounts are cleaned at start"
    with own_server.http() as http:
        out = run(http, cid, "cat /root/state; ps -eo args | grep -c '^sleep 777777' || true")[0]
        assert out["stdout"] == "kept\n0\n"


@pytest.mark.slow  # the shortest expiry is a minute
def test_idle_containers_expire(own_server: Server) -> None:
    client = own_server.client()
    container = client.containers.create(name="expire", expires_after={"anchor": "last_active_at", "minutes": 1})
    keep = client.containers.create(name="keep")
    upper = own_server.data_dir / "containers" / container.id
    assert upper.exists()
    eventually(lambda: client.containers.retrieve(container.id).status == "expired", timeout=100, interval=0.5,
               what="the idle container to expire")
    assert not upper.exists()
    with own_server.http() as http:
        response = http.post(f"/v1/containers/{container.id}/exec", json={"commands": ["true"]})
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "container_expired"
    assert client.containers.retrieve(keep.id).status == "running"
    with pytest.raises(openai.NotFoundError):
        client.containers.files.content.retrieve("cfile_x", container_id=container.id)


def test_idle_containers_stop_and_start_again_with_their_files(upstream: ScriptedUpstream,
                                                                postgres: PostgresServer | None) -> None:
    """``COVE_IDLE_ACTION=stop``: an idle container's processes end and its files stay; its next
    command starts it again."""
    env = {**_server_env(upstream, postgres), "COVE_IDLE_ACTION": "stop"}
    with running_server(data_dir("cove-stop"), env) as server, server.http() as http:
        cid = http.post("/v1/containers", json={"name": "sleepy", "expires_after": {
            "anchor": "last_active_at", "minutes": 1}}).raise_for_status().json()["id"]
        run(http, cid, "echo kept > /root/state; (sleep 3600 &)")
        assert run(http, cid, "ps -eo comm | grep -c '^sleep$'")[0]["stdout"] == "1\n"
        eventually(lambda: http.get(f"/v1/containers/{cid}").json()["status"] == "stopped", timeout=100,
                   interval=0.5, what="the idle container to stop")
        runtime = (server.data_dir / "containers" / cid).resolve()
        assert (runtime / "disk").is_dir() and not os.path.ismount(runtime / "rootfs")  # mounts released
        out = run(http, cid, "cat /root/state; ps -eo comm | grep -c '^sleep$' || true")[0]
        assert out["stdout"] == "kept\n0\n", out  # files kept, processes not
        assert http.get(f"/v1/containers/{cid}").json()["status"] == "running"
        http.delete(f"/v1/containers/{cid}").raise_for_status()
