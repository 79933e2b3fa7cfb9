"""The offline indexes on disk (``COVE_DATA_DIR/search``): which there are, and removing one.

``NAME`` is a symlink to the current build ``NAME.<id>`` (``cove.search.build``); removing an index
drops the link first, so a server stops answering from it at its next query, then the build.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import tantivy

from cove.errors import NotFound
from cove.search.index import index_root
from cove.search.spec import NAME, check_name


@dataclass(frozen=True)
class IndexInfo:
    name: str
    documents: int
    size_bytes: int
    built_at: float


def list_indexes(data_dir: Path) -> list[IndexInfo]:
    root = index_root(data_dir)
    found: list[IndexInfo] = []
    for link in sorted(root.iterdir()) if root.is_dir() else []:
        if not (link.is_symlink() and NAME.fullmatch(link.name) and link.is_dir()):
            continue
        build = link.resolve()
        files = [path for path in build.iterdir() if path.is_file()]
        documents = tantivy.Index.open(str(build)).searcher().num_docs
        found.append(IndexInfo(link.name, documents, sum(path.stat().st_size for path in files),
                               build.stat().st_mtime))
    return found


def remove_index(data_dir: Path, name: str) -> None:
    link = index_root(data_dir) / check_name(name)
    if not link.is_symlink():
        raise NotFound(f"There is no offline index named {name!r}.")
    build = link.resolve()
    os.unlink(link)
    shutil.rmtree(build, ignore_errors=True)
