"""Import ``docker save`` archives and OCI image layouts (as a tar) into the store.

The archive is treated as hostile. Each layer is extracted into a fresh directory through a
filter built on ``tarfile.tar_filter`` plus checks of our own (Python's filters had bypasses, and
they do not check hard link targets in ``tar`` mode): no absolute names, no ``..``, never a path
through a symlink, hard links only to regular files inside the layer, no device nodes except
overlayfs whiteouts. OCI whiteouts become overlayfs ones, ids are shifted as they are written, and
every digest the archive states is checked. Extended attributes in layers are not imported (so
file capabilities are dropped): ``tarfile`` does not read them.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import json
import os
import platform
import stat
import tarfile
from pathlib import Path
from typing import IO, Any, cast

from cove.errors import ImageError
from cove.sandbox.images.layers import OPAQUE_XATTR
from cove.sandbox.images.runner import Progress
from cove.sandbox.images.shift import shift_id
from cove.sandbox.images.store import Image, ImageStore, remove_tree, validate_name

_MAX_JSON = 16 << 20
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())

Layer = tuple[str, str | None, str | None]
"""(member name in the archive, blob digest, uncompressed "diff id" digest)."""


def import_archive(store: ImageStore, name: str, tarball: Path, progress: Progress) -> Image:
    validate_name(name)
    with store.building():
        try:
            outer = tarfile.open(tarball, "r:*")  # noqa: SIM115 - closed below
        except (OSError, tarfile.TarError) as exc:
            raise ImageError(f"Cannot read {tarball}: {exc}") from exc
        with outer:
            try:
                layers, config = _read_archive(outer)
                cfg = config.get("config") or {}
                env = [e for e in cfg.get("Env") or [] if isinstance(e, str) and "=" in e]
                workdir = str(cfg.get("WorkingDir") or "/")
            except (KeyError, TypeError, AttributeError, IndexError) as exc:
                raise ImageError(f"Malformed image metadata in {tarball.name}: {exc!r}") from exc
            keys = []
            for i, layer in enumerate(layers, 1):
                progress(f"layer {i}/{len(layers)}: {layer[0]}")
                keys.append(_import_layer(store, outer, layer))
        return store.save(name, keys, env, workdir, "import")


def _read_archive(outer: tarfile.TarFile) -> tuple[list[Layer], dict[str, Any]]:
    names = {n.removeprefix("./") for n in outer.getnames()}
    if "manifest.json" in names:
        manifest = _json(outer, "manifest.json")
        if not isinstance(manifest, list) or not manifest:
            raise ImageError("manifest.json lists no image")
        config = _json(outer, manifest[0]["Config"], _blob_digest(manifest[0]["Config"]))
        blobs = [(n, _blob_digest(n)) for n in manifest[0]["Layers"]]
    elif "index.json" in names:
        desc = _pick(outer, _json(outer, "index.json"))
        image = _json(outer, _blob_name(desc["digest"]), desc["digest"])
        config = _json(outer, _blob_name(image["config"]["digest"]), image["config"]["digest"])
        blobs = [(_blob_name(d["digest"]), d["digest"]) for d in image["layers"]]
    else:
        raise ImageError("Not a docker save archive or an OCI image layout (no manifest.json or "
                         "index.json)")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if diff_ids and len(diff_ids) != len(blobs):
        raise ImageError("Image config and manifest disagree on the number of layers")
    return [(n, d, diff_ids[i] if diff_ids else None) for i, (n, d) in enumerate(blobs)], config


def _pick(outer: tarfile.TarFile, index: dict[str, Any]) -> dict[str, Any]:
    """The image manifest for this machine's architecture, descending nested indexes."""
    for _ in range(8):
        found = [m for m in index.get("manifests") or []
                 if (m.get("platform") or {}).get("os", "linux") != "unknown"]
        if not found:
            raise ImageError("The OCI index lists no image")
        matching = [m for m in found if (m.get("platform") or {}).get("architecture") == _ARCH]
        desc: dict[str, Any] = (matching or found)[0]
        if desc.get("mediaType") not in _INDEX_TYPES:
            return desc
        index = _json(outer, _blob_name(desc["digest"]), desc["digest"])
    raise ImageError("OCI indexes nested too deeply")


def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise ImageError(f"Unsupported digest {digest!r}")
    return f"blobs/sha256/{hexdigest}"


def _blob_digest(name: str) -> str | None:
    """Docker 25+ names blobs by digest; older ``docker save`` archives don't."""
    head, _, tail = name.removeprefix("./").rpartition("/")
    return f"sha256:{tail}" if head == "blobs/sha256" and len(tail) == 64 else None


def _open(outer: tarfile.TarFile, name: str) -> IO[bytes]:
    for candidate in (name, f"./{name}"):
        try:
            f = outer.extractfile(candidate)
        except KeyError:
            continue
        if f is not None:
            return f
    raise ImageError(f"The archive has no file {name!r}")


def _json(outer: tarfile.TarFile, name: str, digest: str | None = None) -> Any:
    data = _open(outer, name).read(_MAX_JSON + 1)
    if len(data) > _MAX_JSON:
        raise ImageError(f"{name} is too large")
    if digest and "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise ImageError(f"Digest mismatch for {name}")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ImageError(f"{name} is not valid JSON") from exc


class _Hashing(io.RawIOBase):
    """Reads through ``src`` while hashing everything read."""

    def __init__(self, src: IO[bytes]) -> None:
        self.src, self.sha = src, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.src.read(len(buffer))
        buffer[: len(data)] = data
        self.sha.update(data)
        return len(data)

    def digest(self) -> str:
        while self.read(1 << 20):  # the hash covers trailing padding too
            pass
        return "sha256:" + self.sha.hexdigest()


def _decompressed(raw: _Hashing) -> IO[bytes]:
    buffered = io.BufferedReader(raw, 1 << 16)
    magic = buffered.peek(4)[:4]
    if magic[:2] == b"\x1f\x8b":
        return cast("IO[bytes]", gzip.GzipFile(fileobj=buffered))
    if magic == b"\x28\xb5\x2f\xfd":
        try:
            zstandard = importlib.import_module("zstandard")
        except ImportError:
            raise ImageError("zstd-compressed layers need the 'zstandard' module") from None
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(buffered)
        return reader
    return buffered


def _layer_key(diff_id: str) -> str:
    return hashlib.sha256(f"import\0{diff_id}".encode()).hexdigest()


def _import_layer(store: ImageStore, outer: tarfile.TarFile, layer: Layer) -> str:
    name, blob_digest, diff_id = layer
    if diff_id and store.has_layer(_layer_key(diff_id)):
        return _layer_key(diff_id)  # the same content was verified when it was first imported
    work = store.new_tmp("import-")
    try:
        dest = store.new_layer_dir(work)
        raw = _Hashing(_open(outer, name))
        plain = _Hashing(_decompressed(raw))
        extractor = _Extractor(dest, store.uid_base)
        try:
            with tarfile.open(fileobj=plain, mode="r|") as tar:
                tar.errorlevel = 2
                tar.extractall(dest, numeric_owner=True, filter=extractor.filter)  # noqa: S202
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ImageError(f"Layer {name} could not be extracted: {exc}") from exc
        extractor.finish()
        actual = plain.digest()
        for stated, got in ((diff_id, actual), (blob_digest, raw.digest())):
            if stated and stated != got:
                raise ImageError(f"Digest mismatch for layer {name}: archive says {stated}, "
                                 f"content is {got}")
        return store.commit_layer(dest, _layer_key(actual)).name
    finally:
        remove_tree(work)


class _Extractor:
    """The tarfile filter for one layer, collecting whiteouts to apply once it is extracted."""

    def __init__(self, dest: Path, uid_base: int) -> None:
        self.dest, self.uid_base = dest, uid_base
        self.whiteouts: list[list[str]] = []
        self.opaque: list[list[str]] = []

    def filter(self, member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo | None:
        parts = self._clean(member.name, member)
        base = parts[-1] if parts else ""
        if base.startswith(".wh."):
            if base == ".wh..wh..opq":
                self.opaque.append(parts[:-1])
            elif base[4:] in ("", ".", ".."):
                raise ImageError(f"Refusing {member.name!r}: whiteout of nothing")
            else:
                self.whiteouts.append([*parts[:-1], base[4:]])
            return None
        if (member.ischr() or member.isblk()) and (member.ischr(), member.devmajor,
                                                   member.devminor) != (True, 0, 0):
            return None  # real device nodes have no place in an image
        if not parts and not member.isdir():
            raise ImageError(f"Refusing {member.name!r}: not a directory")
        self._parents(parts, create=True)
        if member.islnk():
            self._link(parts, member)
            return None
        changes: dict[str, Any] = {"name": "/".join(parts) or ".", "uname": "", "gname": "",
                                   "uid": shift_id(member.uid, self.uid_base),
                                   "gid": shift_id(member.gid, self.uid_base),
                                   "mode": stat.S_IMODE(member.mode)}
        if parts:
            self._clear(self.dest.joinpath(*parts), member)
        checked = tarfile.tar_filter(member.replace(name=changes["name"], deep=False), dest_path)
        return checked.replace(**changes, deep=False)

    def finish(self) -> None:
        """Write whiteouts as overlayfs wants them: a 0/0 char device, or an opaque xattr."""
        for parts in self.opaque:
            self._parents([*parts, "x"], create=True)
            directory = self.dest.joinpath(*parts)
            if not parts or (directory.is_dir() and not directory.is_symlink()):
                os.setxattr(directory, OPAQUE_XATTR, b"y", follow_symlinks=False)
        for parts in self.whiteouts:
            self._parents(parts, create=True)
            path = self.dest.joinpath(*parts)
            if not os.path.lexists(path):  # the layer's own entry wins over its whiteout
                os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
                os.chown(path, self.uid_base, self.uid_base)

    def _link(self, parts: list[str], member: tarfile.TarInfo) -> None:
        """Hard links are made here, not by tarfile: it would re-own the shared inode (and a
        chown clears setuid bits), and it follows a symlink given as the target."""
        link = self._clean(member.linkname, member)
        self._parents(link, create=False)
        try:
            target = os.lstat(self.dest.joinpath(*link))
        except OSError:
            raise ImageError(f"Refusing hard link {member.name!r}: no target in the layer") from None
        if not stat.S_ISREG(target.st_mode):
            raise ImageError(f"Refusing hard link {member.name!r}: target is not a regular file")
        self._clear(self.dest.joinpath(*parts), member)
        os.link(self.dest.joinpath(*link), self.dest.joinpath(*parts), follow_symlinks=False)

    @staticmethod
    def _clean(name: str, member: tarfile.TarInfo) -> list[str]:
        if name.startswith("/"):
            raise ImageError(f"Refusing {member.name!r}: absolute path {name!r}")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ImageError(f"Refusing {member.name!r}: '..' in {name!r}")
        return parts

    def _parents(self, parts: list[str], *, create: bool) -> None:
        """Refuse paths through symlinks or files; create missing parent dirs (shifted root)."""
        path = self.dest
        for part in parts[:-1]:
            path = path / part
            try:
                st = path.lstat()
            except FileNotFoundError:
                if not create:
                    raise ImageError(f"Refusing {'/'.join(parts)!r}: no such directory") from None
                path.mkdir(mode=0o755)
                os.chown(path, self.uid_base, self.uid_base)
                continue
            if not stat.S_ISDIR(st.st_mode):
                kind = "symlink" if stat.S_ISLNK(st.st_mode) else "non-directory"
                raise ImageError(f"Refusing {'/'.join(parts)!r}: goes through a {kind}")

    @staticmethod
    def _clear(path: Path, member: tarfile.TarInfo) -> None:
        """Make room for ``member``: whatever file or symlink is there goes, so that nothing is
        ever written through a symlink; directories are only merged with directories."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if not member.isdir():
                raise ImageError(f"Refusing {member.name!r}: would replace a directory")
            return
        path.unlink()
