"""Fixtures for the search engines: fake engines on 127.0.0.1 (``fakes.py``) and settings that
point at them, with test names that lead to loopback through the egress test mapping."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cove.config import Settings
from tests.search.fakes import FakeEngines


@pytest.fixture(scope="session")
def engines_server() -> Iterator[FakeEngines]:
    fake = FakeEngines().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(engines_server: FakeEngines) -> Iterator[FakeEngines]:
    engines_server.reset()
    yield engines_server
    engines_server.reset()


@pytest.fixture
def settings_for(fake: FakeEngines, tmp_path: Path) -> Any:
    """Settings whose page reads reach the fake's pages as ``pages.test`` and ``other.test``."""
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data", "egress_test_hosts": "pages.test=127.0.0.1,other.test=127.0.0.1",
            "egress_ports": f"80,443,{fake.port}", "brave_base_url": f"{fake.url}/brave/res/v1",
            "tavily_base_url": f"{fake.url}/tavily", "brave_api_key": "brave-secret-key",
            "tavily_api_key": "tvly-secret-key", "web_search_timeout": 5.0, "web_read_timeout": 5.0}
        return Settings(**{**values, **overrides})
    return make
