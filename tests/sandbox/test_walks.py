"""Walks and listings stop after a budget of entries looked at, on disk and in memory alike: a tree of
empty directories holds no files for a file limit to stop at, so the budget counts every entry."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cove.sandbox.base import Entry, Files
from cove.sandbox.linux.fs import ContainerFS, HostFiles
from cove.testing import MemoryFiles

TREE = {"/data/a.txt": "a", "/data/b.txt": "b", **{f"/data/d{i}/f.txt": str(i) for i in range(10)}}
"""12 entries at the top (2 files, 10 directories), each directory holding one file."""


@pytest.fixture(params=["disk", "memory"])
def files(request: pytest.FixtureRequest, tmp_path: Path) -> Files:
    if request.param == "memory":
        return MemoryFiles(dict(TREE))
    for path, text in TREE.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return HostFiles(ContainerFS(str(tmp_path), os.getuid(), os.getgid()))


def paths(entries: list[Entry]) -> set[str]:
    return {entry.path for entry in entries}


def test_a_walk_within_its_budget_finds_every_file(files: Files) -> None:
    assert paths(asyncio.run(files.walk_files("/data", visits=22))) == set(TREE)


def test_a_walk_goes_breadth_first_and_stops_at_its_budget(files: Files) -> None:
    # The top's 12 entries use the whole budget: its two files are found, nothing below is.
    assert paths(asyncio.run(files.walk_files("/data", visits=12))) == {"/data/a.txt", "/data/b.txt"}
    assert len(asyncio.run(files.walk_files("/data", visits=15))) == 2 + 3


def test_a_listing_stops_at_its_budget_with_what_it_saw(files: Files) -> None:
    everything = asyncio.run(files.list_dir("/data", depth=2))
    assert len(everything) == 22
    cut = asyncio.run(files.list_dir("/data", depth=2, visits=5))
    assert len(cut) == 5 and paths(cut) <= paths(everything)
    top = asyncio.run(files.list_dir("/data", depth=2, visits=12))
    assert paths(top) == {path.rsplit("/f.txt", 1)[0] for path in TREE}
