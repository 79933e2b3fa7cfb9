"""A Ray cluster on this machine for the fleet's tests: a head and worker nodes on 127.0.0.2-127.0.0.4.

Never 127.0.0.1: Ray rewrites it to the machine's external address (../shared/reference/
scaleout-measurements.md). Each node is one ``ray start --block`` process of its own temp dir; a node is
killed by the PID of its raylet and the cluster is stopped by the PIDs of everything it started, never
with ``ray stop`` (which stops every cluster on the machine). Health checks are fast (0.5 s period,
three misses) so that a lost node is declared dead in seconds rather than a minute, and Ray's memory
monitor is off, as docs/fleet.md tells operators (it would kill a host to free memory its containers use).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from cove.sandbox.linux import cgroups
from tests.conftest import Server
from tests.polling import eventually

HEAD_IP = "127.0.0.2"
REAL_NODE_IP = "127.0.0.3"
"""The real node of ``tests/fleet/conftest.py``'s ``node``."""
NODE_SITE = "site.fleet.test"
"""A name the real node's egress proxy finds at the node's own address (``COVE_EGRESS_TEST_HOSTS``), where a
test may serve HTTP on port 80: an allowed destination that stays on loopback."""
_RAY = Path(sys.executable).parent / "ray"
RAY_ENV = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
           "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_memory_monitor_refresh_ms": "0"}


def _port(ip: str) -> int:
    """A port free on every address, not only ``ip``: Ray's gRPC servers bind the wildcard address whatever
    ``--node-ip-address`` says, so a port taken on another address (a test server on 127.0.0.1) would
    crash the raylet at its bind."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


_WORKER_PORTS = 11000
"""Where the nodes' worker port ranges start: 100 ports each, below the kernel's ephemeral range (from 32768),
so that no outgoing connection of the busy machine holds one when a worker binds it."""


def descendants(pid: int) -> list[int]:
    """``pid``'s children, grandchildren... from /proc (children before their own children)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _started(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _cpu_seconds(pid: int) -> float:
    """User and system CPU the process used so far (fields 14 and 15 of /proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class RayNode:
    def __init__(self, cluster: RayCluster, ip: str, resources: dict[str, float], head: bool,
                 env: dict[str, str] | None = None) -> None:
        self.cluster, self.ip, self.resources, self.head = cluster, ip, resources, head
        self.env = env or {}
        """The node's own settings (``COVE_DATA_DIR`` for a host on the Linux engine)."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: dict[int, str] = {}
        """Every process this node started, with its start time (so that a PID reused by another
        process since is never killed), for the final kill."""

    def start(self) -> None:
        """Starts the node; again on fresh ports if ``ray start`` exits (a port taken between the probe
        that found it free and Ray's bind: the machine is shared)."""
        for attempt in range(3):
            try:
                self._start()
                return
            except RuntimeError:
                self.stop()
                if attempt == 2:
                    raise
            except BaseException:  # a raylet that never came up: nothing of it may outlive the test
                self.stop()
                raise

    def _start(self) -> None:
        temp = self.cluster.dir / self.ip.replace(".", "_")
        workers = _WORKER_PORTS + _port(self.ip) % 19000
        args = [str(_RAY), "start", "--block", f"--node-ip-address={self.ip}", "--num-cpus=1",
                "--object-store-memory=80000000", f"--temp-dir={temp}", "--disable-usage-stats",
                f"--resources={json.dumps(self.resources)}", f"--node-manager-port={_port(self.ip)}",
                f"--object-manager-port={_port(self.ip)}", f"--dashboard-agent-listen-port={_port(self.ip)}",
                f"--dashboard-agent-grpc-port={_port(self.ip)}", f"--runtime-env-agent-port={_port(self.ip)}",
                f"--metrics-export-port={_port(self.ip)}",
                f"--min-worker-port={workers}", f"--max-worker-port={workers + 100}"]
        if self.head:
            args += ["--head", f"--port={self.cluster.port}", "--include-dashboard=false"]
        else:
            args += [f"--address={self.cluster.address}"]
        with (self.cluster.dir / f"{self.ip}.log").open("ab") as log:
            self.proc = subprocess.Popen(args, env={**os.environ, **RAY_ENV, **self.env}, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        eventually(self.raylet, timeout=120, what=f"the raylet of {self.ip}")

    def raylet(self) -> int | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"ray start on {self.ip} exited: {(self.cluster.dir / f'{self.ip}.log').read_text()}")
        below = descendants(self.proc.pid)
        self._remember(below)
        return next((pid for pid in below if _comm(pid) == "raylet"), None)

    def kill(self) -> None:
        """SIGKILLs the raylet, as a machine's loss looks to the cluster; then the rest of the node."""
        raylet = self.raylet()
        assert raylet is not None
        os.kill(raylet, signal.SIGKILL)
        self.stop()

    def stop(self) -> None:
        if self.proc is None:
            return
        self._remember(descendants(self.proc.pid))
        self.proc.kill()
        for pid, started in self.pids.items():
            if _started(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def _remember(self, pids: list[int]) -> None:
        for pid in pids:
            started = _started(pid)
            if started is not None:
                self.pids.setdefault(pid, started)

    def host_worker(self) -> int:
        """The PID of the Ray worker that runs this node's ``SandboxHost`` (its process title names it)."""
        assert self.proc is not None
        return next(pid for pid in descendants(self.proc.pid) if _comm(pid).startswith("ray::SandboxHos"))

    def alive(self) -> set[int]:
        """The processes this node started that still run (not PIDs reused since)."""
        return {pid for pid, started in self.pids.items() if _started(pid) == started}


class RayCluster:
    def __init__(self) -> None:
        # Short: Ray's socket paths under the temp dir must fit in 107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
        self.port = _port(HEAD_IP)
        self.address = f"{HEAD_IP}:{self.port}"
        self.nodes: list[RayNode] = []

    def add(self, ip: str, resources: dict[str, float] | None = None, head: bool = False,
            env: dict[str, str] | None = None) -> RayNode:
        node = RayNode(self, ip, resources or {}, head, env)
        node.start()
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        """Kills every node by PID, waits for the processes to be gone, then removes the temp dir."""
        for node in reversed(self.nodes):
            node.stop()
        eventually(lambda: not any(node.alive() for node in self.nodes), timeout=30,
                   what="the cluster's processes to exit")
        shutil.rmtree(self.dir, ignore_errors=True)

    def diagnosis(self, lines: int = 12) -> str:
        """What Ray's logs say went wrong: the last warnings and errors of each node's raylet (and the
        head's GCS), the first and last lines of every stderr (a crashed raylet's cause and stack), and
        the CPU seconds its processes used. The
        message a setup wait fails with, so that a failure on another machine says why."""
        said = re.compile(r"^\[\S+ \S+ [WEF] ")  # Ray's own format: [date time LEVEL pid tid]
        parts = []
        for path in sorted(self.dir.glob("*/session_latest/logs/*")):
            if path.name in ("raylet.out", "gcs_server.out"):
                found = [line for line in path.read_text(errors="replace").splitlines() if said.search(line)][-lines:]
            elif path.suffix == ".err" and path.stat().st_size:
                found = [line for line in path.read_text(errors="replace").splitlines() if not line.startswith(":")]
                if len(found) > 2 * lines:  # a crash: its cause first, then where
                    found = [*found[:lines], "...", *found[-lines:]]
            else:
                continue
            if found:
                parts.append(f"--- {path.relative_to(self.dir)}\n" + "\n".join(found))
        for node in self.nodes:
            cpu = {pid: _cpu_seconds(pid) for pid in descendants(node.proc.pid)} if node.proc else {}
            parts.append(f"--- {node.ip}: {len(cpu)} processes, CPU seconds "
                         + ", ".join(f"{_comm(pid)}={seconds:.1f}" for pid, seconds in cpu.items()))
        return "\n".join(parts)

    def all_pids(self) -> set[int]:
        pids: set[int] = set()
        for node in self.nodes:
            if node.proc is not None:
                pids |= {node.proc.pid, *descendants(node.proc.pid)}
        return pids


SIMULATED_NODES = {"n2": "127.0.0.3", "n3": "127.0.0.4"}
"""The container nodes of ``simulated_cluster``, by the name of their ``cove_host`` resource."""
CALL_TIMEOUT = 3.0


def node_resources(node: str) -> dict[str, float]:
    return {f"cove_host:{node}": 1, "cove_slots": 20}


@contextlib.contextmanager
def simulated_cluster() -> Iterator[RayCluster]:
    """A head and the ``SIMULATED_NODES``; their hosts run the engine ``fleet_env`` names."""
    ray = RayCluster()
    try:
        ray.add(HEAD_IP, head=True)
        for node, ip in SIMULATED_NODES.items():
            ray.add(ip, node_resources(node))
        yield ray
    finally:
        ray.stop()


def fleet_env(cluster: RayCluster) -> dict[str, str]:
    """A server's settings for the fleet on ``cluster``'s simulated hosts (``cove.testing.fleet``: the
    cluster, not runc, is what is tested), with a short call deadline and a check every 0.5 s."""
    return {"COVE_RAY_ADDRESS": cluster.address, "COVE_RAY_NODE_IP": HEAD_IP,
            "COVE_FLEET_HOST_ENGINE": "cove.testing.fleet:simulated_host",
            "COVE_FLEET_CALL_TIMEOUT": str(CALL_TIMEOUT), "COVE_FLEET_CHECK_SECONDS": "0.5"}


def hosts_reported(server: Server, cluster: RayCluster, nodes: set[str], timeout: float = 180) -> None:
    """Waits until the server's fleet check recorded every one of ``nodes`` alive. Setup, not a timed
    assertion: Ray starts a worker process for each new host, slow on a loaded machine (over a minute was
    seen once in a full CI run, 15 s alone). On time out, the failure carries the registry's view, the
    server's log and what Ray's logs said."""
    seen: list[dict[str, dict[str, Any]]] = [{}]

    def alive() -> bool:
        for node in cluster.nodes:  # a node that died starting (its log says why) is started again
            if node.proc is not None and node.proc.poll() is not None:
                node.stop()
                node.start()
        seen[0] = fleet_status(server)
        return nodes <= {node for node, row in seen[0].items() if row["alive"]}

    try:
        eventually(alive, timeout=timeout, what=f"the hosts of {sorted(nodes)} to report")
    except AssertionError as error:
        raise AssertionError(f"{error}\nregistry: {seen[0]}\nserver log:\n{server.log.read_text()[-3000:]}\n"
                             f"{cluster.diagnosis()}") from None


def create_container(http: httpx.Client) -> str:
    response = http.post("/v1/containers", json={"name": "fleet"})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def run(http: httpx.Client, cid: str, command: str, timeout_ms: int = 10_000) -> httpx.Response:
    return http.post(f"/v1/containers/{cid}/exec", json={"commands": [command], "timeout_ms": timeout_ms})


def node_of(http: httpx.Client, cid: str) -> str:
    """The simulated node a container is on (its ``hostname``)."""
    response = run(http, cid, "hostname")
    assert response.status_code == 200, response.text
    return str(response.json()["output"][0]["stdout"]).strip()


def streamed(http: httpx.Client, cid: str, command: str) -> str:
    """A streaming exec's stdout, from its delta events."""
    body = {"commands": [command], "stream": True, "timeout_ms": 10_000}
    with http.stream("POST", f"/v1/containers/{cid}/exec", json=body) as response:
        assert response.status_code == 200, response.read()
        events = [json.loads(line[len("data: "):]) for line in response.iter_lines() if line.startswith("data: {")]
    return "".join(event["delta"].get("stdout", "") for event in events if event["type"].endswith("delta"))


def fleet_status(server: Server) -> dict[str, dict[str, Any]]:
    """``cove fleet status --json`` against a server's database, by node."""
    out = subprocess.run([str(Path(sys.executable).parent / "cove"), "fleet", "status", "--json"], env=server.env,
                         capture_output=True, text=True, check=True).stdout
    return {node["node"]: node for node in map(json.loads, out.splitlines())}


def container_init(node_dir: Path, container_id: str) -> int:
    """The PID of a container's init on a real node, whichever runtime started it: the process of the
    container's cgroup that is PID 1 in its own pid namespace."""
    runtime_id = (node_dir / "containers" / container_id).resolve().name  # a pooled one's directory
    procs = Path("/sys/fs/cgroup/cove" if cgroups.is_unified() else "/sys/fs/cgroup/pids/cove") / runtime_id
    for pid in (procs / "cgroup.procs").read_text().split():
        with contextlib.suppress(FileNotFoundError):
            status = Path(f"/proc/{pid}/status").read_text()
            if next(line for line in status.splitlines() if line.startswith("NSpid:")).split()[-1] == "1":
                return int(pid)
    raise LookupError(f"no init in {container_id}'s cgroup")


def _loopback(host: str) -> bool:
    return host.removeprefix("::ffff:").startswith("127.")


def sockets_of(pids: set[int]) -> tuple[list[str], list[str]]:
    """``ss -tanp`` lines of ``pids``: those bound to or talking to an address outside 127.0.0.0/8, and
    listeners on the wildcard address. Ray's gRPC servers (GCS, raylets) bind ``*`` whatever
    ``--node-ip-address`` says; no option of Ray 2.60 changes that (docs/fleet.md)."""
    out = subprocess.run(["ss", "-tanpH"], capture_output=True, text=True, check=True).stdout
    outside, wildcard = [], []
    for line in out.splitlines():
        if not any(f"pid={pid}," in line for pid in pids):
            continue
        local, peer = (address.rsplit(":", 1)[0].strip("[]") for address in line.split()[3:5])
        if line.startswith("LISTEN") and local in ("*", "0.0.0.0", "::"):
            wildcard.append(line)
        elif not _loopback(local) or not (_loopback(peer) or peer in ("*", "0.0.0.0")):
            outside.append(line)
    return outside, wildcard
