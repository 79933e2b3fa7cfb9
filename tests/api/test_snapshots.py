"""Snapshots and forks of containers through the API: files carried over, branches independent,
processes not copied, quotas and projects respected, snapshots outliving their container."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from cove.sandbox.linux import cgroups
from tests.conftest import Server
from tests.helpers import run

pytestmark = pytest.mark.root


def _exec(http: httpx.Client, container_id: str, command: str) -> dict[str, Any]:
    return dict(run(http, container_id, command)[0])


def _create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    created: dict[str, Any] = http.post("/v1/containers", json={"name": "snap-test", **body}).raise_for_status().json()
    return created


def test_snapshot_keeps_files_and_outlives_its_container(server: Server) -> None:
    with server.http() as http:
        cid = _create(http)["id"]
        _exec(http, cid, "mkdir -p /work && echo before > /work/state && head -c 3000000 /dev/urandom > /work/blob"
                         " && md5sum /work/blob > /work/blob.md5")
        snapshot = http.post(f"/v1/containers/{cid}/snapshots", json={"name": "first"}).raise_for_status().json()
        assert snapshot["object"] == "container.snapshot"
        assert snapshot["id"].startswith("snap_") and snapshot["container_id"] == cid
        assert snapshot["name"] == "first" and snapshot["image"] == "default"
        assert snapshot["bytes"] >= 3_000_000
        _exec(http, cid, "echo after > /work/state")  # the snapshot keeps the moment it was taken

        assert http.get(f"/v1/containers/{cid}/snapshots/{snapshot['id']}").json() == snapshot
        assert [s["id"] for s in http.get(f"/v1/containers/{cid}/snapshots").json()["data"]] == [snapshot["id"]]
        assert snapshot["id"] in [s["id"] for s in http.get("/v1/snapshots").json()["data"]]

        http.delete(f"/v1/containers/{cid}").raise_for_status()
        assert http.get(f"/v1/snapshots/{snapshot['id']}").json() == snapshot  # kept after its container

        restored = _create(http, snapshot_id=snapshot["id"])
        assert restored["image"] == "default"
        out = _exec(http, restored["id"], "cat /work/state && md5sum -c /work/blob.md5")
        assert out["stdout"] == "before\n/work/blob: OK\n", out

        # A container made from a snapshot runs on the snapshot's image: another one named is refused.
        wrong = http.post("/v1/containers", json={"name": "x", "snapshot_id": snapshot["id"], "image": "desktop"})
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "image"

        deleted = http.delete(f"/v1/snapshots/{snapshot['id']}").raise_for_status().json()
        assert deleted == {"id": snapshot["id"], "object": "container.snapshot.deleted", "deleted": True}
        assert http.get(f"/v1/snapshots/{snapshot['id']}").status_code == 404
        gone = http.post("/v1/containers", json={"name": "x", "snapshot_id": snapshot["id"]})
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "snapshot_not_found"
        # The container made from it does not depend on the snapshot.
        assert _exec(http, restored["id"], "cat /work/state")["stdout"] == "before\n"
        http.delete(f"/v1/containers/{restored['id']}").raise_for_status()
        assert not list((server.data_dir / "disks" / "snapshots").glob(f"{snapshot['id']}*"))


def test_fork_copies_files_not_processes_and_branches_are_independent(server: Server) -> None:
    with server.http() as http:
        parent = _create(http, memory_limit="4g", cpu_limit=0.5, expires_after={"anchor": "last_active_at",
                                                                              "minutes": 33})
        cid = parent["id"]
        uploaded = http.post(f"/v1/containers/{cid}/files", files={"file": ("notes.txt", b"uploaded\n")})
        uploaded.raise_for_status()
        _exec(http, cid, "echo shared > /tmp/shared; (sleep 600 &) ; sleep 0.1")
        assert "sleep 600" in _exec(http, cid, "ps -eo args")["stdout"]

        forked = http.post(f"/v1/containers/{cid}/fork", json={"count": 3}).raise_for_status().json()
        assert forked["object"] == "list"
        children = [child["id"] for child in forked["data"]]
        assert len(set(children)) == 3 and cid not in children
        for child in forked["data"]:
            assert child["status"] == "running" and child["name"] == parent["name"]
            assert (child["memory_limit"], child["cpu_limit"], child["expires_after"]) == (
                "4g", 0.5, {"anchor": "last_active_at", "minutes": 33})

        for index, child in enumerate(children):
            out = _exec(http, child, f"cat /tmp/shared /mnt/data/notes.txt; echo branch-{index} > /tmp/mine; "
                                     "ps -eo args")
            assert out["stdout"].startswith("shared\nuploaded\n"), out
            assert "sleep 600" not in out["stdout"]  # processes are not copied
            # The upload's record came along: the child lists the file as its own.
            files = http.get(f"/v1/containers/{child}/files").json()["data"]
            assert [f["path"] for f in files] == ["/mnt/data/notes.txt"] and files[0]["container_id"] == child
        for index, child in enumerate(children):
            assert _exec(http, child, "cat /tmp/mine")["stdout"] == f"branch-{index}\n"
        assert _exec(http, cid, "cat /tmp/mine 2>&1; true")["stdout"].endswith("No such file or directory\n")

        audit = http.get(f"/v1/containers/{cid}/audit", params={"limit": 50}).json()["data"]
        forks = [event for event in audit if event["type"] == "fork"]
        assert forks and sorted(forks[0]["containers"]) == sorted(children)
        for container_id in [cid, *children]:
            http.delete(f"/v1/containers/{container_id}").raise_for_status()


def test_bad_requests_and_other_projects(server: Server) -> None:
    with server.http() as http, server.http("beta") as other:
        cid = _create(http)["id"]
        snapshot = http.post(f"/v1/containers/{cid}/snapshots").raise_for_status().json()
        assert snapshot["name"] is None
        for count in (0, 101):
            bad = http.post(f"/v1/containers/{cid}/fork", json={"count": count})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "count"
        assert http.post(f"/v1/containers/{cid}/fork", json={"count": "two"}).status_code == 400
        assert http.post(f"/v1/containers/{cid}/snapshots", json={"label": "x"}).status_code == 400
        assert http.post("/v1/containers/cntr_missing/fork").status_code == 404
        assert http.post("/v1/containers/cntr_missing/snapshots").status_code == 404

        # Another project sees none of it and can use none of it.
        assert other.get(f"/v1/snapshots/{snapshot['id']}").status_code == 404
        assert other.get(f"/v1/containers/{cid}/snapshots/{snapshot['id']}").status_code == 404
        assert other.delete(f"/v1/snapshots/{snapshot['id']}").status_code == 404
        assert other.post(f"/v1/containers/{cid}/fork").status_code == 404
        assert other.post(f"/v1/containers/{cid}/snapshots").status_code == 404
        assert other.get("/v1/snapshots").json()["data"] == []
        assert other.get(f"/v1/containers/{cid}/snapshots").status_code == 404
        assert http.get("/v1/containers/cntr_never/snapshots").status_code == 404
        stolen = other.post("/v1/containers", json={"name": "x", "snapshot_id": snapshot["id"]})
        assert stolen.status_code == 404
        # An id that could walk the snapshot directory is just not found.
        assert http.post("/v1/containers", json={"name": "x", "snapshot_id": "../../containers"}).status_code == 404

        # Deleted from the wrong container's path: not found, and still there.
        other_cid = _create(http)["id"]
        assert http.delete(f"/v1/containers/{other_cid}/snapshots/{snapshot['id']}").status_code == 404
        assert http.get(f"/v1/snapshots/{snapshot['id']}").status_code == 200
        http.delete(f"/v1/snapshots/{snapshot['id']}").raise_for_status()
        for container_id in (cid, other_cid):
            http.delete(f"/v1/containers/{container_id}").raise_for_status()


def test_snapshot_disk_is_clean_while_the_container_writes(server: Server) -> None:
    """The filesystem is frozen for the copy: a snapshot taken in the middle of heavy writes is a
    consistent ext4 (fsck finds nothing to repair) that a new container mounts with its files."""
    with server.http() as http:
        cid = _create(http)["id"]
        _exec(http, cid, "(for i in $(seq 1 400); do head -c 65536 /dev/urandom > /tmp/f$i; sync -f /tmp/f$i;"
                         " done; touch /tmp/done) >/dev/null 2>&1 &")
        snapshot = http.post(f"/v1/containers/{cid}/snapshots").raise_for_status().json()
        image = server.data_dir / "disks" / "snapshots" / f"{snapshot['id']}.img"
        check = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        restored = _create(http, snapshot_id=snapshot["id"])["id"]
        sizes = _exec(http, restored, "for f in /tmp/f*; do [ -e $f ] && stat -c %s $f; done")["stdout"].split()
        # Every file the writer had finished is whole; at most the one it was writing is short.
        assert sum(size != "65536" for size in sizes) <= 1, sizes
        for container_id in (cid, restored):
            http.delete(f"/v1/containers/{container_id}").raise_for_status()
        http.delete(f"/v1/snapshots/{snapshot['id']}").raise_for_status()


def test_snapshots_and_forks_survive_a_crash(own_server: Server) -> None:
    """After SIGKILL the disk pool is still mounted: the next server adopts it, its snapshots are
    there, a container a crash left frozen runs again, and a container not started since can be
    forked (its disk copied unmounted)."""
    with own_server.http() as http:
        cid = _create(http)["id"]
        _exec(http, cid, "echo durable > /root/state")
        snapshot = http.post(f"/v1/containers/{cid}/snapshots").raise_for_status().json()
        frozen = _create(http)["id"]
        _exec(http, frozen, "true")
    # A crash in the middle of a snapshot leaves the container's processes frozen (cgroup freezer).
    cgroups.set_frozen(f"/cove/{(own_server.data_dir / 'containers' / frozen).resolve().name}", True)
    own_server.stop(signal.SIGKILL)
    own_server.start()
    with own_server.http() as http:
        assert _exec(http, frozen, "echo thawed > /root/after && cat /root/after")["stdout"] == "thawed\n"
        restored = _create(http, snapshot_id=snapshot["id"])["id"]
        assert _exec(http, restored, "cat /root/state")["stdout"] == "durable\n"
        child = http.post(f"/v1/containers/{cid}/fork").raise_for_status().json()["data"][0]["id"]
        assert _exec(http, child, "cat /root/state")["stdout"] == "durable\n"
        assert _exec(http, cid, "cat /root/state")["stdout"] == "durable\n"
    own_server.stop()  # a clean stop unmounts the pool it adopted
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(own_server.data_dir) in line]


def test_the_openai_sdk_reaches_snapshots_and_forks_unchanged(server: Server) -> None:
    """As docs/snapshots.md shows: ``client.post`` for the extension routes, ``extra_body`` for a create
    from a snapshot."""
    client = server.client()
    box = client.containers.create(name="sdk")
    client.containers.files.create(box.id, file=("hello.txt", b"hello\n"))
    snap: dict[str, Any] = client.post(f"/containers/{box.id}/snapshots", body={"name": "clean"}, cast_to=object)
    assert snap["object"] == "container.snapshot" and snap["name"] == "clean"
    again = client.containers.create(name="again", extra_body={"snapshot_id": snap["id"]})
    kids: dict[str, Any] = client.post(f"/containers/{box.id}/fork", body={"count": 2}, cast_to=object)
    for container_id in [again.id, *(kid["id"] for kid in kids["data"])]:
        assert [f.path for f in client.containers.files.list(container_id)] == ["/mnt/data/hello.txt"]
        content = client.containers.files.content.retrieve(client.containers.files.list(container_id).data[0].id,
                                                           container_id=container_id)
        assert content.read() == b"hello\n"
        client.containers.delete(container_id)
    client.containers.delete(box.id)
    client.delete(f"/snapshots/{snap['id']}", cast_to=object)


def test_a_disk_made_before_the_pool_keeps_working_and_forks(own_server: Server) -> None:
    """Upgrading: a container whose disk image is still in its own directory (``containers/<id>/disk.img``,
    on the data dir's filesystem) runs on it, and its forks copy it block by block into the pool."""
    with own_server.http() as http:
        cid = _create(http)["id"]
        _exec(http, cid, "echo old > /root/state")
    own_server.stop()
    runtime = (own_server.data_dir / "containers" / cid).resolve()
    pooled = own_server.data_dir / "disks" / "containers" / f"{runtime.name}.img"
    # Move the disk out of the pool (unmounted by the stop), to where an older Cove kept it.
    subprocess.run(["mount", "-o", "loop", str(own_server.data_dir / "disks.xfs"), str(own_server.data_dir / "disks")],
                   check=True)
    try:
        subprocess.run(["cp", "--sparse=always", str(pooled), str(runtime / "disk.img")], check=True)
        pooled.unlink()
    finally:
        subprocess.run(["umount", str(own_server.data_dir / "disks")], check=True)
    own_server.start()
    with own_server.http() as http:
        assert _exec(http, cid, "cat /root/state; echo new >> /root/state")["stdout"] == "old\n"
        forked = http.post(f"/v1/containers/{cid}/fork")
        assert forked.status_code == 200, forked.text
        child = forked.json()["data"][0]["id"]
        assert _exec(http, child, "cat /root/state")["stdout"] == "old\nnew\n"
        http.delete(f"/v1/containers/{cid}").raise_for_status()
    assert not runtime.exists()
