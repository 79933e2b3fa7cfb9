"""The fuzzed server: a ``cove serve`` of the fuzz run's own, with its own scripted model, so that
whatever the fuzzer leaves running (background responses, containers) never reaches another test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import IMAGES_DIR, Server, data_dir
from tests.postgres import PostgresServer
from tests.scripted_upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def fuzz_server(postgres: PostgresServer | None) -> Iterator[Server]:
    """On SQLite, or with ``COVE_TEST_DB=postgres`` on the session's PostgreSQL."""
    if not (IMAGES_DIR / "manifests" / "default.json").exists():
        pytest.fail(f"the default image is missing in {IMAGES_DIR}: run `make image`")
    model = ScriptedUpstream().start()  # unscripted: every model call answers "echo: <input>"
    env = {"COVE_UPSTREAM_URL": model.url}
    if postgres is not None:
        env["COVE_DATABASE_URL"] = postgres.new_database()
    srv = Server(data_dir("cove-fuzz"), env)
    srv.start()
    yield srv
    srv.stop()
    model.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)
