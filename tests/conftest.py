"""A real Cove server on 127.0.0.1 for the whole session, driven through HTTP like a user would."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from tests.internet import Internet
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.scripted_upstream import ScriptedUpstream

NEEDS_ROOT = "needs root: containers, mounts, cgroups and network namespaces"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``root`` are skipped, before any of their fixtures start, when not run as root."""
    if os.geteuid() != 0:
        for item in items:
            if item.get_closest_marker("root"):
                item.add_marker(pytest.mark.skip(reason=NEEDS_ROOT))


IMAGES_DIR = Path(os.environ.get("COVE_IMAGES_DIR", "/var/lib/cove/images"))
KEYS = {"alpha": "test-key-alpha", "beta": "test-key-beta"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One ``cove serve`` process; restartable (gracefully or with SIGKILL) on the same data dir."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "COVE_DATA_DIR": str(data_dir), "COVE_IMAGES_DIR": str(IMAGES_DIR),
                    "COVE_API_KEYS": ",".join(f"{key}={project}" for project, key in KEYS.items()),
                    "COVE_EXPIRY_CHECK_SECONDS": "1", **(extra_env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._clients: list[openai.OpenAI] = []
        self.log = data_dir.with_name(data_dir.name + ".log")

    def start(self) -> None:
        cove = Path(sys.executable).parent / "cove"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(cove), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"cove serve exited: {self.log.read_text()[-3000:]}")
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

        eventually(ready, timeout=60, what="cove serve to answer /healthz", ignoring=(httpx.HTTPError,))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        for client in self._clients:
            client.close()  # clients made before a stop are done; ask for new ones after a restart
        self._clients.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        self.proc = None

    def client(self, project: str = "alpha") -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=KEYS[project], max_retries=0, timeout=120)
        self._clients.append(client)
        return client

    def http(self, project: str = "alpha") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEYS[project]}"}, timeout=120)


def data_dir(name: str) -> Path:
    """A fresh data dir, private like the server makes its own (containers reach their roots through
    the engine's gate, ``sandbox/linux/gate.py``)."""
    base = Path("/var/tmp/cove-tests")
    base.mkdir(mode=0o711, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))


@pytest.fixture(scope="session")
def upstream() -> Iterator[ScriptedUpstream]:
    """The model: a scripted OpenAI-compatible server over real HTTP on 127.0.0.1."""
    scripted = ScriptedUpstream().start()
    yield scripted
    scripted.stop()


@pytest.fixture(scope="session")
def internet() -> Iterator[Internet]:
    """The stand-in internet: HTTP and HTTPS test hosts in a network namespace of this session."""
    inet = Internet()
    yield inet
    inet.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer | None]:
    """With ``COVE_TEST_DB=postgres`` every server of the session stores into PostgreSQL."""
    if os.environ.get("COVE_TEST_DB", "sqlite") != "postgres":
        yield None
        return
    pg = PostgresServer().start()
    yield pg
    pg.stop()


def _server_env(upstream: ScriptedUpstream, postgres: PostgresServer | None) -> dict[str, str]:
    env = {"COVE_UPSTREAM_URL": upstream.url}
    if postgres is not None:
        env["COVE_DATABASE_URL"] = postgres.new_database()
    return env


@contextmanager
def running_server(directory: Path, env: dict[str, str]) -> Iterator[Server]:
    """A server started on ``directory`` with ``env``; stopped and its data removed afterwards."""
    srv = Server(directory, env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(srv.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server(upstream: ScriptedUpstream, postgres: PostgresServer | None) -> Iterator[Server]:
    if not (IMAGES_DIR / "manifests" / "default.json").exists():
        pytest.fail(f"the default image is missing in {IMAGES_DIR}: run `make image`")
    with running_server(data_dir("cove-data"), _server_env(upstream, postgres)) as srv:
        yield srv


@pytest.fixture
def own_server(upstream: ScriptedUpstream, postgres: PostgresServer | None) -> Iterator[Server]:
    """A server of the test's own, for restarts and crashes."""
    with running_server(data_dir("cove-own"), _server_env(upstream, postgres)) as srv:
        yield srv


@pytest.fixture(scope="session")
def client(server: Server) -> openai.OpenAI:
    return server.client()


@pytest.fixture(scope="session")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.http() as c:
        yield c
