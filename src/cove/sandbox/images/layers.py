"""Reading an image's layers as the container will see them, without mounting anything.

Layers are overlayfs upper directories, bottom to top: a whiteout (a 0/0 character device) deletes
what is below it, a directory marked opaque hides the lower directories of the same path, and a
non-directory hides a lower tree. Recipes and the container engine use this to look into an image
(find a shell, resolve a working directory) before any container runs.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

OPAQUE_XATTR = "trusted.overlay.opaque"


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def lookup(layers: Sequence[Path], relpath: str) -> os.stat_result | None:
    """``lstat`` of ``relpath`` in the merged view of ``layers`` (bottom→top), without mounting."""
    found = find(layers, relpath)
    return found.lstat() if found else None


def find(layers: Sequence[Path], relpath: str) -> Path | None:
    """The host path of the entry the merged view shows at ``relpath``, if any.

    Honours whiteouts, opaque directories and non-directories hiding lower trees, and never
    follows a symlink (``resolve`` does that, inside the image).
    """
    parts = [p for p in relpath.split("/") if p]
    if not parts:
        return layers[-1] if layers else None
    for layer in reversed(layers):
        node, opaque = layer, False
        for i, part in enumerate(parts):
            node = node / part
            try:
                st = node.lstat()
            except OSError:
                if opaque:
                    return None  # an opaque directory above hides the lower layers
                break
            if is_whiteout(st):
                return None
            if i == len(parts) - 1:
                return node
            if not stat.S_ISDIR(st.st_mode):
                return None
            opaque = opaque or is_opaque(node)
    return None


def resolve(layers: Sequence[Path], path: str) -> str | None:
    """Canonical absolute path of ``path`` inside the image, symlinks followed as the container
    would follow them (``/`` is the image root); None when it does not exist."""
    pending = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in (".", ".."):
            if part == ".." and done:
                done.pop()
            continue
        node = find(layers, "/".join([*done, part]))
        if node is None:
            return None
        if node.is_symlink():
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(node)
            if target.startswith("/"):
                done = []
            pending = [p for p in target.split("/") if p] + pending
            continue
        done.append(part)
    return "/" + "/".join(done)
