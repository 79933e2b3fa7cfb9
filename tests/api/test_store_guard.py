"""The store and the containers are the server's alone: a local user (no root) can neither read the
database nor list, read or plant into any container, and containers still start (with runc, through
the gate, ``sandbox/linux/gate.py``; Cove's launcher needs none), survive a restart and come from the
warm pool."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from cove.sandbox.linux.launch import resolve_runtime
from tests.conftest import Server
from tests.helpers import run
from tests.polling import eventually

pytestmark = pytest.mark.root

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, *argv], capture_output=True, text=True, timeout=30, check=False)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_local_user_reads_nothing_and_plants_nothing(own_server: Server) -> None:
    data_dir = own_server.data_dir
    gate = Path("/run/cove") / hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    with own_server.http() as http:
        container_id = http.post("/v1/containers", json={"name": "kept"}).json()["id"]
        out = run(http, container_id, "echo mine > /mnt/data/note && stat -c '%a %u %g' /mnt/data /mnt")
    assert out[0]["stdout"] == "755 0 0\n755 0 0\n", out  # /mnt/data is container root's, not everyone's

    assert _mode(data_dir) == 0o700
    databases = sorted(data_dir.glob("cove.db*"))
    if os.environ.get("COVE_TEST_DB", "sqlite") == "sqlite":
        assert {path.name for path in databases} >= {"cove.db", "cove.db-wal", "cove.db-shm"}
    for path in databases:
        assert _mode(path) == 0o600, path
    # runc starts containers as container root, through the gate; Cove's launcher opens host paths as
    # host root and exposes nothing (there is no gate at all).
    through_gate = resolve_runtime(os.environ.get("COVE_RUNTIME", "auto")) == "runc"
    assert gate.exists() == through_gate
    assert not through_gate or (_mode(gate) == 0o710 and gate.stat().st_gid == 100000)

    directory = data_dir / "containers" / container_id
    paths = [*databases, data_dir / "secrets.key", data_dir / "containers", directory,
             directory / "disk" / "upper" / "mnt" / "data" / "note", *([gate, gate / "libexec"] * through_gate)]
    for path in paths:
        seen = as_nobody("ls", "-la", str(path))
        assert seen.returncode != 0 and "Permission denied" in seen.stderr, (path, seen)
    for path in databases:
        assert as_nobody("cat", str(path)).returncode != 0
    for target in (directory / "rootfs" / "mnt" / "data" / "planted",
                   directory / "disk" / "upper" / "mnt" / "data" / "planted",
                   gate / container_id / "rootfs" / "mnt" / "data" / "planted"):
        planted = as_nobody("sh", "-c", f"echo x > {target}")
        assert planted.returncode != 0, target

    # Containers survive a restart and a crash and start again through the gate; the warm pool serves creates.
    own_server.stop()
    assert not gate.exists()  # the gate (runc's) goes with the server
    own_server.start()
    with own_server.http() as http:
        assert run(http, container_id, "cat /mnt/data/note")[0]["stdout"] == "mine\n"
    own_server.stop(signal.SIGKILL)
    assert gate.is_dir() == through_gate  # a crash leaves it; the next start takes it over
    own_server.start()
    with own_server.http() as http:
        def pooled() -> bool:
            made = http.post("/v1/containers", json={"name": "from-pool"}).json()["id"]
            return (data_dir / "containers" / made).is_symlink()
        eventually(pooled, timeout=60, what="a create to take a container from the warm pool")
        assert run(http, container_id, "cat /mnt/data/note")[0]["stdout"] == "mine\n"
    own_server.stop()
    assert not gate.exists() and str(gate) not in Path("/proc/self/mountinfo").read_text()


def test_vsock_is_refused_in_containers(http: httpx.Client) -> None:
    container_id = http.post("/v1/containers", json={"name": "vsock"}).json()["id"]
    out = run(http, container_id,
              "python3 -c 'import socket; socket.socket(40, socket.SOCK_STREAM)' 2>&1; echo exit=$?")[0]
    assert "Address family not supported" in str(out["stdout"]) and "exit=1" in str(out["stdout"]), out


def test_containers_a_crashed_runc_left_are_removed_by_the_launcher(own_server: Server) -> None:
    """Upgrading to the launcher (or changing ``COVE_RUNTIME``) after a crash leaves nothing of what runc
    started: its processes, its state and its gate go, and the container starts again under the launcher."""
    if resolve_runtime("auto") != "cove":
        pytest.skip("the launcher does not run on this host (cgroup v2)")
    own_server.stop()
    own_server.env["COVE_RUNTIME"] = "runc"
    own_server.start()
    with own_server.http() as http:
        container_id = http.post("/v1/containers", json={"name": "from-runc"}).json()["id"]
        assert run(http, container_id, "echo kept > /root/kept")[0]["outcome"] == {"type": "exit", "exit_code": 0}
    runtime_id = (own_server.data_dir / "containers" / container_id).resolve().name
    old = {int(pid) for pid in Path(f"/sys/fs/cgroup/pids/cove/{runtime_id}/cgroup.procs").read_text().split()}
    assert old
    own_server.stop(signal.SIGKILL)
    gate = Path("/run/cove") / hashlib.sha256(str(own_server.data_dir).encode()).hexdigest()[:16]
    assert (own_server.data_dir / "runc" / runtime_id).is_dir() and gate.is_dir()  # what the crash left
    own_server.env["COVE_RUNTIME"] = "cove"
    own_server.start()
    assert not (own_server.data_dir / "runc" / runtime_id).exists() and not gate.exists()
    assert not any(Path(f"/proc/{pid}").exists() for pid in old)
    with own_server.http() as http:
        assert run(http, container_id, "cat /root/kept")[0]["stdout"] == "kept\n"
