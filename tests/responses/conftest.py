"""Responses tests script the session's upstream; each starts with an empty script."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scripted_upstream import ScriptedUpstream


@pytest.fixture(autouse=True)
def fresh_script(upstream: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    upstream.reset()
    yield upstream
    upstream.reset()
