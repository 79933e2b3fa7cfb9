"""Hosted-tool tests script the session's upstream; each starts with an empty script. The pure
tests of the tools' file logic use a plain directory as the container root (``root``, ``fs``, and
``workspace``: the tools' view of it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.sandbox.linux.fs import ContainerFS, HostFiles
from cove.testing import MemorySandbox, MemoryWorkspace
from tests.scripted_upstream import ScriptedUpstream


@pytest.fixture(autouse=True)
def fresh_script(upstream: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "app").mkdir(parents=True)
    return tmp_path / "root"


@pytest.fixture
def fs(root: Path) -> ContainerFS:
    return ContainerFS(str(root), os.getuid(), os.getgid())


@pytest.fixture
def workspace(fs: ContainerFS) -> MemoryWorkspace:
    """Hosted tools' view of the directory, as they see a container's files."""
    return MemoryWorkspace(MemorySandbox(files=HostFiles(fs)))
