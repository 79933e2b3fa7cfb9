"""Builds small image archives in the test: layer tars, ``docker save`` archives, OCI layouts."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
APPLETS = ("sh", "ls", "cat", "echo", "id", "stat", "mkdir", "pwd", "test")


@dataclass
class Entry:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0


def file(name: str, data: bytes | str = b"", mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(name, data=data.encode() if isinstance(data, str) else data, mode=mode, uid=uid, gid=gid)


def directory(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode, uid=uid, gid=gid)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, mode=0o777, linkname=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def chardev(name: str, major: int, minor: int) -> Entry:
    return Entry(name, tarfile.CHRTYPE, mode=0o666, devmajor=major, devminor=minor)


def layer_tar(entries: Iterable[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type, info.mode, info.uid, info.gid = e.type, e.mode, e.uid, e.gid
            info.linkname, info.devmajor, info.devminor = e.linkname, e.devmajor, e.devminor
            info.mtime = 1_700_000_000
            info.size = len(e.data) if e.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(e.data) if e.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def busybox_layers() -> list[bytes]:
    """Three layers: a busybox root; whiteout + opaque dir; a third with a whiteout of a symlink."""
    base = [
        directory("./"), directory("bin"), directory("etc"), directory("opt"), directory("opt/old"),
        directory("usr"), directory("usr/bin"), directory("usr/lib"), directory("tmp", 0o1777),
        directory("home"), directory("home/user", 0o750, 1000, 1000),
        file("bin/busybox", BUSYBOX.read_bytes(), 0o755),
        *(symlink(f"bin/{a}", "busybox") for a in APPLETS),
        symlink("lib", "usr/lib"),
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"),
        file("etc/group", "root:x:0:\nuser:x:1000:\n"),
        file("etc/motd", "base motd\n"),
        file("opt/old/a.txt", "a\n"), file("opt/old/b.txt", "b\n"),
        file("usr/bin/suid", b"#!/bin/sh\necho suid\n", 0o4755),
        hardlink("usr/bin/suid-hard", "usr/bin/suid"),
        file("home/user/notes", "mine\n", 0o600, 1000, 1000),
        symlink("etc/abs-link", "/etc/passwd"),
    ]
    second = [
        directory("etc"), file("etc/.wh.motd"), directory("opt/old"), file("opt/old/.wh..wh..opq"),
        file("opt/old/new.txt", "new\n"), file("etc/added", "added in layer 2\n"),
    ]
    third = [directory("bin"), file("bin/.wh.test"), file("etc/third", "3\n", 0o640, 0, 1000)]
    return [layer_tar(base), layer_tar(second), layer_tar(third)]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Archive:
    files: dict[str, bytes] = field(default_factory=dict)

    def add_json(self, name: str, doc: object) -> bytes:
        data = json.dumps(doc).encode()
        self.files[name] = data
        return data

    def write(self, path: Path) -> Path:
        with tarfile.open(path, "w") as tar:
            for name, data in self.files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path


def image_config(layers: list[bytes], env: list[str], workdir: str) -> dict[str, object]:
    return {"architecture": ARCH, "os": "linux", "config": {"Env": env, "WorkingDir": workdir},
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in layers]}}


def docker_save(path: Path, layers: list[bytes], env: list[str] | None = None, workdir: str = "/",
                config: dict[str, object] | None = None) -> Path:
    """The classic ``docker save`` layout: ``<id>/layer.tar``, ``<sha>.json``, ``manifest.json``."""
    archive = Archive()
    names = []
    for i, layer in enumerate(layers):
        names.append(f"{hashlib.sha256(b'%d' % i + layer).hexdigest()}/layer.tar")
        archive.files[names[-1]] = layer
    cfg = config or image_config(layers, env or ["PATH=/bin"], workdir)
    cfg_data = json.dumps(cfg).encode()
    archive.files[f"{hashlib.sha256(cfg_data).hexdigest()}.json"] = cfg_data
    archive.add_json("manifest.json", [{"Config": f"{hashlib.sha256(cfg_data).hexdigest()}.json",
                                        "RepoTags": ["test:latest"], "Layers": names}])
    return archive.write(path)


def oci_layout(path: Path, layers: list[bytes], env: list[str] | None = None, workdir: str = "/") -> Path:
    """An OCI layout with gzip layers, reached through a nested index that also lists another
    architecture (whose blobs are absent) and an attestation."""
    archive = Archive()

    def blob(data: bytes) -> dict[str, object]:
        archive.files[f"blobs/sha256/{sha256(data)[7:]}"] = data
        return {"digest": sha256(data), "size": len(data)}

    layer_descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    **blob(gzip.compress(layer, mtime=0))} for layer in layers]
    config = json.dumps(image_config(layers, env or ["PATH=/bin"], workdir)).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(config)},
                           "layers": layer_descs}).encode()
    manifest_type = "application/vnd.oci.image.manifest.v1+json"
    other = "arm64" if ARCH != "arm64" else "amd64"
    nested = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": manifest_type, "digest": "sha256:" + "0" * 64, "size": 1,
         "platform": {"architecture": other, "os": "linux"}},
        {"mediaType": manifest_type, "platform": {"architecture": ARCH, "os": "linux"}, **blob(manifest)},
        {"mediaType": manifest_type, "digest": "sha256:" + "1" * 64, "size": 1,
         "platform": {"architecture": "unknown", "os": "unknown"}},
    ]}).encode()
    archive.add_json("oci-layout", {"imageLayoutVersion": "1.0.0"})
    archive.add_json("index.json", {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", **blob(nested)}]})
    return archive.write(path)
