"""Docker's side of ``bench/containers.py``: the same image files, timed through the docker CLI.

The docker CLI is what a user pays for, so its process start-up is part of every sample. Nothing
is ever installed from here: without a daemon or ``dockerd`` the comparison is simply skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_TAG = "cove-bench-default"
LABEL = "cove.bench.layers"
PRIVATE_ROOT = Path("/var/tmp/cove-bench-docker")
"""Kept between runs, so the imported image is reused while the Cove image is unchanged."""
PRIVATE_EXEC_ROOT = Path("/var/tmp/cove-bench-docker-exec")
PRIVATE_SOCKET = Path("/var/tmp/cove-bench-docker.sock")
PRIVATE_PIDFILE = Path("/var/tmp/cove-bench-docker.pid")
PRIVATE_LOG = Path("/var/tmp/cove-bench-docker.log")
ID_RANGE = 65536


@dataclass
class Docker:
    """A reachable docker daemon and how to reach it."""

    env: dict[str, str]
    origin: str
    """``existing daemon`` or ``private dockerd``: said in the report so readers know what ran."""
    version: str = ""
    import_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 120, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=True, stdin=stdin)

    def answers(self) -> bool:
        try:
            self.cli("info", "--format", "{{.ServerVersion}}", timeout=20)
        except (subprocess.SubprocessError, OSError):
            return False
        return True


@contextlib.contextmanager
def docker_daemon() -> Iterator[Docker | None]:
    """A daemon for the run: the machine's own if ``docker info`` works, else a private ``dockerd``
    started here and stopped by its pid on exit, else None."""
    if shutil.which("docker") is None:
        yield None
        return
    docker = Docker(dict(os.environ), "existing daemon")
    if docker.answers():
        yield _versioned(docker)
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        yield None
        return
    private = Docker({**os.environ, "DOCKER_HOST": f"unix://{PRIVATE_SOCKET}"}, "private dockerd")
    if private.answers():  # left running by an earlier, killed bench: use it but do not own it
        private.origin = "private dockerd (already running)"
        yield _versioned(private)
        return
    with _private_dockerd(dockerd, private):
        yield _versioned(private)


def _versioned(docker: Docker) -> Docker:
    docker.version = docker.cli("version", "--format", "{{.Server.Version}}").stdout.strip()
    return docker


@contextlib.contextmanager
def _private_dockerd(dockerd: str, docker: Docker) -> Iterator[None]:
    for directory in (PRIVATE_ROOT, PRIVATE_EXEC_ROOT):
        directory.mkdir(mode=0o711, exist_ok=True)
    PRIVATE_PIDFILE.unlink(missing_ok=True)  # nothing answers on the socket, so the pid is stale
    with PRIVATE_LOG.open("w") as log:
        proc = subprocess.Popen(
            [dockerd, "--iptables=false", "--bridge=none", "--data-root", str(PRIVATE_ROOT),
             "--exec-root", str(PRIVATE_EXEC_ROOT), "-H", f"unix://{PRIVATE_SOCKET}",
             "--pidfile", str(PRIVATE_PIDFILE)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not docker.answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private dockerd did not come up; see {PRIVATE_LOG}")
            time.sleep(0.5)
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def import_image(docker: Docker, images_dir: Path, image: str) -> None:
    """Imports the Cove image's files as ``cove-bench-default``, unless the same layers already are.

    Layers are stored uid-shifted for Cove's user namespace; the tar maps them back to container
    ids so Docker sees the files exactly as a Cove container does.
    """
    manifest = json.loads((images_dir / "manifests" / f"{image}.json").read_text())
    layers = [images_dir / "layers" / key for key in manifest["layers"]]
    digest = hashlib.sha256(",".join(manifest["layers"]).encode()).hexdigest()[:32]
    with contextlib.suppress(subprocess.CalledProcessError):
        current = docker.cli("image", "inspect", IMAGE_TAG, "--format", f'{{{{index .Config.Labels "{LABEL}"}}}}')
        if current.stdout.strip() == digest:
            return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cove-bench-") as tmp, _merged_root(layers, Path(tmp)) as root:
        idmap = Path(tmp) / "idmap"
        base = _shift_base(root)
        idmap.write_text("".join(f"+{base + i} +{i}\n" for i in range(ID_RANGE)))
        tar = subprocess.Popen(["tar", "--numeric-owner", f"--owner-map={idmap}", f"--group-map={idmap}",
                                "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            docker.cli("import", "--change", f"LABEL {LABEL}={digest}", "-", IMAGE_TAG, timeout=900,
                       stdin=tar.stdout.fileno())
        finally:
            tar.stdout.close()
            if tar.wait() != 0:
                raise RuntimeError("tar of the Cove image failed")
    docker.import_s = time.perf_counter() - started


def _shift_base(root: Path) -> int:
    """The host uid that container root has in the layer (the image root directory's owner)."""
    uid = root.stat().st_uid
    return uid if uid >= ID_RANGE else 0


@contextlib.contextmanager
def _merged_root(layers: list[Path], tmp: Path) -> Iterator[Path]:
    """One layer is tarred as it is; several are merged by a read-only overlay so whiteouts apply."""
    if len(layers) == 1:
        yield layers[0]
        return
    target = tmp / "merged"
    target.mkdir()
    lowerdir = ":".join(str(layer) for layer in reversed(layers))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lowerdir}", str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def _timed(docker: Docker, args: list[str], expect: str) -> float:
    started = time.perf_counter()
    result = docker.cli(*args)
    elapsed = (time.perf_counter() - started) * 1000
    if result.stdout != expect:
        raise RuntimeError(f"docker {' '.join(args)} printed {result.stdout!r}, expected {expect!r}")
    return elapsed


def time_run(docker: Docker, n: int, warmup: int) -> list[float]:
    """(a') ``docker run --rm`` of ``echo hi``: container creation to first output, in ms."""
    args = ["run", "--rm", "--network", "none", IMAGE_TAG, "echo", "hi"]
    for _ in range(warmup):
        _timed(docker, args, "hi\n")
    return [_timed(docker, args, "hi\n") for _ in range(n)]


def time_exec(docker: Docker, n: int, warmup: int) -> list[float]:
    """(b') ``docker exec <ctr> true`` in a running container, in ms."""
    container = docker.cli("run", "-d", "--network", "none", IMAGE_TAG, "sleep", "infinity").stdout.strip()
    try:
        args = ["exec", container, "true"]
        for _ in range(warmup):
            _timed(docker, args, "")
        return [_timed(docker, args, "") for _ in range(n)]
    finally:
        docker.cli("rm", "-f", container)
