"""Real containers through the fleet: a head and one node on 127.0.0.2-3 whose ``SandboxHost`` runs the
Linux engine (runc) on a data dir of its own. Commands, streaming output and files reach the container
through Ray; the container does not belong to the Ray worker; a host Ray restarts kills what the dead
one left and fences the old incarnation's containers."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.polling import eventually
from tests.ray_cluster import RayNode, container_init, descendants, fleet_status

pytestmark = pytest.mark.root


def _exec(http: httpx.Client, cid: str, command: str) -> httpx.Response:
    return http.post(f"/v1/containers/{cid}/exec", json={"commands": [command], "timeout_ms": 20_000})


FLOOD = 300 << 20
"""Bytes the flooding command writes: far more than may wait anywhere for a client that stopped reading."""


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) << 10


def _written(marker: str) -> int | None:
    """Bytes written so far by the process whose command line holds ``marker`` (None: there is none)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                io = (entry / "io").read_text().splitlines()
                return int(next(line for line in io if line.startswith("wchar:")).split()[1])
        except (OSError, StopIteration):
            continue
    return None


def test_a_client_that_stops_reading_holds_the_command_back_not_the_hosts_memory(fleet: Server,
                                                                                  node: RayNode) -> None:
    host = node.host_worker()
    before = _rss(host)
    flood = (f"python3 -c \"import sys; c = 'x' * 65536; [sys.stdout.write(c) for _ in range({FLOOD >> 16})]; "
             "m = 'flood-1'\"")
    with fleet.http() as http:
        cid = http.post("/v1/containers", json={"name": "flood"}).json()["id"]
        try:
            body = {"commands": [flood], "stream": True, "timeout_ms": 120_000}
            with http.stream("POST", f"/v1/containers/{cid}/exec", json=body) as response:
                lines = response.iter_lines()  # kept: a generator dropped here would close the stream
                next(line for line in lines if "delta" in line)  # then the client reads no more
                last: list[int | None] = [None]

                def held() -> bool:  # what it wrote stopped growing between two looks: it waits on its pipe
                    now = _written("flood-1")
                    stalled, last[0] = now is not None and now == last[0], now
                    return stalled

                eventually(held, timeout=60, interval=0.5, what="the command to be held back")
                written = last[0]
                assert written is not None and written < FLOOD // 2, written
                assert _rss(host) - before < 100 << 20, (_rss(host) - before) >> 20
        finally:
            http.delete(f"/v1/containers/{cid}")


def test_a_snapshot_on_a_node_makes_containers_there_with_its_files(fleet: Server, node_dir: Path) -> None:
    """Taken by the node's engine on its disk; a create from it and a fork start with the files as they
    were (not what the parent wrote later); deleting it removes its disk from the node."""
    with fleet.http() as http:
        parent = http.post("/v1/containers", json={"name": "parent"}).json()["id"]
        assert _exec(http, parent, "mkdir -p /mnt/data && echo before > /mnt/data/state").status_code == 200
        snapshot = http.post(f"/v1/containers/{parent}/snapshots", json={}).json()["id"]
        disk = node_dir / "disks" / "snapshots" / f"{snapshot}.img"
        assert disk.exists()
        assert _exec(http, parent, "echo after > /mnt/data/state").status_code == 200
        made = http.post("/v1/containers", json={"name": "from snapshot", "snapshot_id": snapshot})
        assert made.status_code == 200, made.text
        forked = http.post(f"/v1/containers/{parent}/fork", json={"count": 1})
        assert forked.status_code == 200, forked.text
        children = {made.json()["id"]: "before\n", forked.json()["data"][0]["id"]: "after\n"}
        for cid, state in children.items():
            answer = _exec(http, cid, "cat /mnt/data/state")
            assert answer.json()["output"][0]["stdout"] == state, answer.text
        assert http.delete(f"/v1/snapshots/{snapshot}").status_code == 200
        assert not disk.exists()
        for cid in [parent, *children]:
            assert http.delete(f"/v1/containers/{cid}").status_code == 200


def test_a_real_container_runs_streams_and_keeps_files_through_the_fleet(fleet: Server, node: RayNode,
                                                                          node_dir: Path) -> None:
    with fleet.http() as http:
        cid = http.post("/v1/containers", json={"name": "real"}).json()["id"]
        answer = _exec(http, cid, "echo $((6*7)) > /tmp/answer; cat /tmp/answer; hostname")
        assert answer.json()["output"][0]["stdout"] == f"42\n{cid}\n", answer.text
        body = {"commands": ["for i in 1 2 3; do echo $i; sleep 0.1; done"], "stream": True, "timeout_ms": 20_000}
        with http.stream("POST", f"/v1/containers/{cid}/exec", json=body) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
        deltas = [event["delta"]["stdout"] for event in events if event["type"].endswith("delta")]
        assert "".join(deltas) == "1\n2\n3\n"
        assert len(deltas) >= 2  # it streamed, not one chunk at the end

        # The container's init is not in the Ray node's process tree (it survives the worker).
        init = container_init(node_dir, cid)
        assert node.proc is not None and init not in descendants(node.proc.pid)

        # The host's worker dies; Ray restarts the host, whose engine kills what the dead one left,
        # and the old incarnation's container is lost.
        os.kill(node.host_worker(), signal.SIGKILL)
        eventually(lambda: not Path(f"/proc/{init}").exists(), timeout=60, what="the restarted host to kill the init")

        def lost() -> bool:
            late = _exec(http, cid, "true")
            return late.status_code == 410 and late.json()["error"]["code"] == "container_lost"

        eventually(lost, timeout=30, what="the container to be lost")
        eventually(lambda: fleet_status(fleet)["real"]["alive"], timeout=60, what="the restarted host to report")
        created = http.post("/v1/containers", json={"name": "after"})
        assert created.status_code == 200, created.text
        fresh = created.json()["id"]
        assert _exec(http, fresh, "echo back").json()["output"][0]["stdout"] == "back\n"
        assert http.delete(f"/v1/containers/{fresh}").status_code == 200
