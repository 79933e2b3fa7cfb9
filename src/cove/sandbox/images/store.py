"""The image store: content-addressed layer directories plus one small manifest per image name.

Layout under ``root``::

    layers/<key>/         one overlayfs "upper dir" format tree per layer, uid-shifted
    manifests/<name>.json layer keys bottom→top, env, workdir, source, size
    cache/<step key>      the layer key a recipe step produced (see ``recipe.py``)
    tmp/                  work in progress; emptied whenever a store is opened

Layers and manifests only ever appear by ``os.rename`` from ``tmp/``, so a crash leaves at most
litter in ``tmp/``, never a half layer under a real key. Layers are shared between images, and
deleting an image prunes the layers no image references: a runtime must not keep using the
layers of a deleted image.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cove.errors import ImageError, InvalidRequest, NotFound
from cove.sandbox.linux.overlay import mounts_under, unmount

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
KEY_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Image:
    name: str
    layers: tuple[Path, ...]
    """Layer directories, bottom→top (reverse them for overlayfs ``lowerdir``)."""
    env: tuple[str, ...]
    """``K=V`` entries for every process started in the image."""
    workdir: str
    created_at: int
    source: str
    """``debian``, ``recipe`` or ``import``."""
    size_bytes: int


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidRequest(f"Invalid image name {name!r}: use 1-64 of a-z 0-9 . _ - (not first)",
                             param="image", code="invalid_image_name")
    return name


def tree_size(path: Path) -> int:
    """Bytes on disk, each inode counted once."""
    seen: set[int] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in (*dirnames, *filenames, ""):
            st = os.lstat(os.path.join(dirpath, entry)) if entry else os.lstat(dirpath)
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


class ImageStore:
    def __init__(self, root: Path, uid_base: int) -> None:
        self.root = root
        self.uid_base = uid_base
        self.layers_dir = root / "layers"
        self.manifests_dir = root / "manifests"
        self.tmp_dir = root / "tmp"
        self.cache_dir = root / "cache"
        self.pins_dir = root / "pins"
        for directory in (self.layers_dir, self.manifests_dir, self.tmp_dir, self.cache_dir, self.pins_dir):
            directory.mkdir(parents=True, exist_ok=True)
        with self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB) as locked:
            if locked:  # no build is running in another process: everything in tmp/ is stale
                for entry in self.tmp_dir.iterdir():
                    _remove(entry)

    # -- images ---------------------------------------------------------------------------------

    def get(self, name: str) -> Image:
        try:
            data = json.loads((self.manifests_dir / f"{validate_name(name)}.json").read_text())
        except FileNotFoundError:
            raise NotFound(f"No image named {name!r}", param="image", code="image_not_found") from None
        return self._image(name, data)

    def _image(self, name: str, data: dict[str, Any]) -> Image:
        return Image(name=name, layers=tuple(self.layer_path(k) for k in data["layers"]),
                     env=tuple(data["env"]), workdir=data["workdir"], created_at=data["created_at"],
                     source=data["source"], size_bytes=data["size_bytes"])

    # -- pins: what a container was created from, kept whatever happens to the image name ----------

    def pin(self, owner: str, image: Image) -> None:
        """Records ``image`` for ``owner`` (a container id); its layers survive rebuilds and deletes."""
        doc = {"name": image.name, "layers": [layer.name for layer in image.layers], "env": list(image.env),
               "workdir": image.workdir, "created_at": image.created_at, "source": image.source,
               "size_bytes": image.size_bytes}
        self._write(self.pins_dir / f"{owner}.json", json.dumps(doc))

    def pinned(self, owner: str) -> Image:
        try:
            data = json.loads((self.pins_dir / f"{owner}.json").read_text())
        except FileNotFoundError:
            raise NotFound(f"No image is recorded for {owner}.", code="image_not_found") from None
        return self._image(data["name"], data)

    def unpin(self, owner: str) -> None:
        (self.pins_dir / f"{owner}.json").unlink(missing_ok=True)

    def list(self) -> builtins.list[Image]:
        return [self.get(p.stem) for p in sorted(self.manifests_dir.glob("*.json"))
                if NAME_RE.match(p.stem)]

    def exists(self, name: str) -> bool:
        return (self.manifests_dir / f"{validate_name(name)}.json").exists()

    def save(self, name: str, layers: Sequence[str], env: Sequence[str], workdir: str,
             source: str) -> Image:
        """Point ``name`` at committed layers (keys, bottom→top), replacing any earlier image."""
        validate_name(name)
        missing = [k for k in layers if not self.has_layer(k)]
        if missing or not layers:
            raise ImageError(f"Image {name!r} needs layers that are not in the store: {missing}")
        doc: dict[str, Any] = {
            "layers": list(layers), "env": list(env), "workdir": workdir or "/",
            "created_at": int(time.time()), "source": source,
            "size_bytes": sum(tree_size(self.layer_path(k)) for k in dict.fromkeys(layers)),
        }
        self._write(self.manifests_dir / f"{name}.json", json.dumps(doc, indent=1))
        return self.get(name)

    def delete(self, name: str) -> None:
        """Remove the image, then the layers no image uses (unless a build is running)."""
        try:
            (self.manifests_dir / f"{validate_name(name)}.json").unlink()
        except FileNotFoundError:
            raise NotFound(f"No image named {name!r}", param="image", code="image_not_found") from None
        self.prune()

    def prune(self) -> int:
        """Delete unreferenced layers (recipe cache included); skipped while any build runs."""
        with self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB) as locked:
            if not locked:
                return 0
            used = {k for img in self.list() for k in (p.name for p in img.layers)}
            for pin in self.pins_dir.glob("*.json"):
                used.update(json.loads(pin.read_text())["layers"])
            unused = [p for p in self.layers_dir.iterdir() if p.name not in used]
            for layer in unused:
                _remove(layer, via=self.tmp_dir)
            for entry in self.cache_dir.iterdir():
                if entry.read_text().strip() not in used:
                    entry.unlink()
            return len(unused)

    # -- layers ---------------------------------------------------------------------------------

    def layer_path(self, key: str) -> Path:
        if not KEY_RE.match(key):
            raise ImageError(f"Invalid layer key {key!r}")
        return self.layers_dir / key

    def has_layer(self, key: str) -> bool:
        return self.layer_path(key).is_dir()

    def cached_layer(self, step_key: str) -> str | None:
        """The layer a build step with this cache key made, if it is still in the store."""
        try:
            key = (self.cache_dir / self.layer_path(step_key).name).read_text().strip()
        except FileNotFoundError:
            return None
        return key if KEY_RE.match(key) and self.has_layer(key) else None

    def cache_layer(self, step_key: str, layer_key: str) -> None:
        self._write(self.cache_dir / self.layer_path(step_key).name, layer_key)

    def _write(self, dest: Path, text: str) -> None:
        """Atomically, via tmp/ (under the build lock, so that no store opening clears it)."""
        with self.building():
            fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="write-")
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, dest)

    def new_tmp(self, prefix: str) -> Path:
        """A fresh directory under ``tmp/`` (same filesystem as the layers), 0700: a build step's
        runc reaches it through a gate (``sandbox/linux/gate.py``), nobody else reaches it at all."""
        return Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix=prefix))

    def new_layer_dir(self, parent: Path) -> Path:
        """An empty layer root under ``parent``: 0755 and owned by container root, because the
        topmost layer's root directory becomes the container's ``/``."""
        path = parent / "layer"
        path.mkdir(mode=0o755)
        os.chown(path, self.uid_base, self.uid_base)
        return path

    def commit_layer(self, src: Path, key: str) -> Path:
        """Move a finished tree from ``tmp/`` to ``layers/<key>``; if another build got there
        first, keep theirs (same key, same content) and drop ours."""
        dest = self.layer_path(key)
        try:
            os.rename(src, dest)
        except OSError:
            if not dest.is_dir():
                raise
            _remove(src)
        return dest

    @contextlib.contextmanager
    def building(self) -> Iterator[None]:
        """Held by every build so that ``prune`` and tmp cleanup leave its work alone."""
        with self._lock(fcntl.LOCK_SH) as locked:
            assert locked
            yield

    @contextlib.contextmanager
    def _lock(self, flags: int) -> Iterator[bool]:
        with open(self.root / ".lock", "a") as f:
            try:
                fcntl.flock(f, flags)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def remove_tree(path: Path) -> None:
    """Delete a file or tree, first detaching anything mounted below it (a crashed build may
    leave an overlay or mmdebstrap's /proc there; rmtree must never descend into those)."""
    for target in mounts_under(path):
        unmount(target)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _remove(path: Path, via: Path | None = None) -> None:
    """``remove_tree``; with ``via``, first rename the tree there so that a crash never leaves
    it half gone under its real name."""
    if via is not None:
        moved = Path(tempfile.mkdtemp(dir=via, prefix="rm-")) / "x"
        os.rename(path, moved)
        path = moved.parent
    remove_tree(path)
