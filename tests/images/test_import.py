"""Importing docker save archives and OCI layouts, including hostile ones."""

from __future__ import annotations

import gzip
import os
import stat
import uuid
from pathlib import Path

import pytest

from cove.errors import ImageError
from cove.sandbox.images.oci import import_archive
from cove.sandbox.images.store import Image, ImageStore
from cove.sandbox.linux.overlay import mounts_under
from tests.images.archives import (
    Archive,
    busybox_layers,
    chardev,
    directory,
    docker_save,
    file,
    hardlink,
    image_config,
    layer_tar,
    oci_layout,
    sha256,
    symlink,
)
from tests.images.conftest import UID_BASE
from tests.images.helpers import mounted, run_in

pytestmark = pytest.mark.root


def check_busybox_tree(root: Path) -> None:
    """What the three busybox layers must add up to."""
    assert not (root / "etc/motd").exists()  # whiteout in layer 2
    assert (root / "etc/added").read_text() == "added in layer 2\n"
    assert sorted(os.listdir(root / "opt/old")) == ["new.txt"]  # opaque dir in layer 2
    assert not os.path.lexists(root / "bin/test") and os.path.islink(root / "bin/ls")  # whiteout of a symlink
    suid = (root / "usr/bin/suid").lstat()
    assert stat.S_IMODE(suid.st_mode) == 0o4755 and (suid.st_uid, suid.st_gid) == (UID_BASE, UID_BASE)
    assert (root / "usr/bin/suid-hard").lstat().st_ino == suid.st_ino
    notes = (root / "home/user/notes").lstat()
    assert (notes.st_uid, notes.st_gid, stat.S_IMODE(notes.st_mode)) == (UID_BASE + 1000, UID_BASE + 1000, 0o600)
    assert stat.S_IMODE((root / "tmp").lstat().st_mode) == 0o1777
    assert os.readlink(root / "etc/abs-link") == "/etc/passwd"  # kept as a link, not resolved on the host
    assert os.readlink(root / "bin/sh") == "busybox"
    third = (root / "etc/third").lstat()
    assert (third.st_gid, stat.S_IMODE(third.st_mode)) == (UID_BASE + 1000, 0o640)
    assert (root.lstat().st_uid, stat.S_IMODE(root.lstat().st_mode)) == (UID_BASE, 0o755)


def test_docker_save_import(store: ImageStore, busybox_image: Image) -> None:
    image = store.get("bb")
    assert image == busybox_image
    assert (image.source, len(image.layers), image.workdir) == ("import", 3, "/")
    assert image.env == ("PATH=/bin:/usr/bin", "GREETING=hi")
    with mounted(store, image) as root:
        check_busybox_tree(root)


def test_oci_layout_with_gzip_layers_and_nested_index(store: ImageStore, tmp_path: Path) -> None:
    tarball = oci_layout(tmp_path / "oci.tar", busybox_layers(), env=["A=1"], workdir="/opt")
    image = import_archive(store, "bb-oci", tarball, lambda line: None)
    assert (image.env, image.workdir, len(image.layers)) == (("A=1",), "/opt", 3)
    # Same uncompressed content as the docker save import: the layers are shared.
    assert image.layers == store.get("bb").layers
    with mounted(store, image) as root:
        check_busybox_tree(root)


def test_busybox_runs_in_the_imported_image(store: ImageStore, data_dir: Path, busybox_image: Image) -> None:
    assert run_in(store, data_dir, busybox_image, "/bin/busybox", "ls", "/opt/old") == ["new.txt"]
    out = run_in(store, data_dir, busybox_image, "/bin/sh", "-c",
                 "id -u; stat -c '%u %a' /home/user/notes /usr/bin/suid; echo $GREETING")
    assert out == ["0", "1000 600", "0 4755", "hi"]


def test_layer_digest_mismatch_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layers = busybox_layers()[:1]
    config = image_config([layer_tar([file("other")])], ["PATH=/bin"], "/")
    with pytest.raises(ImageError, match="Digest mismatch"):
        import_archive(store, "tampered", docker_save(tmp_path / "t.tar", layers, config=config), print)
    assert not store.exists("tampered")
    assert list(store.tmp_dir.iterdir()) == []


def test_compressed_blob_digest_is_checked(store: ImageStore, tmp_path: Path) -> None:
    layer = layer_tar([file("hello", "hi")])
    blob = gzip.compress(layer, mtime=0)
    archive = Archive()
    name = f"blobs/sha256/{'2' * 64}"  # named by a digest that is not the blob's
    archive.files[name] = blob
    config = archive.add_json(f"blobs/sha256/{'3' * 64}", image_config([layer], [], "/"))
    archive.files.pop(f"blobs/sha256/{'3' * 64}")
    archive.files[f"blobs/sha256/{sha256(config)[7:]}"] = config
    archive.add_json("manifest.json", [{"Config": f"blobs/sha256/{sha256(config)[7:]}", "Layers": [name]}])
    with pytest.raises(ImageError, match="Digest mismatch"):
        import_archive(store, "tampered2", archive.write(tmp_path / "t.tar"), print)


def test_busybox_only_image_without_shell(store: ImageStore, data_dir: Path, tmp_path: Path) -> None:
    layer = layer_tar([directory("bin"), file("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)])
    image = import_archive(store, "bare", docker_save(tmp_path / "bare.tar", [layer]), print)
    assert run_in(store, data_dir, image, "/bin/busybox", "echo", "bare works") == ["bare works"]


def test_not_an_image(store: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="Not a docker save archive"):
        import_archive(store, "junk", Archive({"hello.txt": b"hi"}).write(tmp_path / "junk.tar"), print)
    (tmp_path / "garbage.tar").write_bytes(b"\0garbage" * 100)
    with pytest.raises(ImageError):
        import_archive(store, "junk", tmp_path / "garbage.tar", print)


# -- hostile archives -----------------------------------------------------------------------------

OUTSIDE = Path("/var/tmp") / f"cove-outside-{uuid.uuid4().hex[:8]}"


def hostile_cases() -> dict[str, list[object]]:
    rel = "../" * 30 + str(OUTSIDE)[1:]
    return {
        "dotdot": [file(f"{rel}/pwned", "x")],
        "dotdot-inner": [directory("a"), file("a/../../pwned", "x")],
        "absolute": [file(f"{OUTSIDE}/pwned", "x")],
        "symlink-then-file": [symlink("evil", str(OUTSIDE)), file("evil/pwned", "x")],
        "relative-symlink-then-file": [symlink("evil", rel), file("evil/pwned", "x")],
        "symlink-chain": [symlink("a", "b"), symlink("b", str(OUTSIDE)), file("a/pwned", "x")],
        "hardlink-absolute": [hardlink("passwd", "/etc/passwd")],
        "hardlink-dotdot": [hardlink("passwd", "../" * 30 + "etc/passwd")],
        "hardlink-via-symlink": [symlink("sl", "/etc/passwd"), hardlink("hl", "sl")],
        "dir-then-symlink": [directory("d"), symlink("d", str(OUTSIDE))],
        "whiteout-via-symlink": [symlink("w", str(OUTSIDE)), file("w/.wh.victim")],
        "opaque-via-symlink": [symlink("w", str(OUTSIDE)), file("w/.wh..wh..opq")],
        "whiteout-of-dotdot": [directory("a"), file("a/.wh...")],
    }


@pytest.mark.parametrize("case", sorted(hostile_cases()))
def test_hostile_archive_is_refused(store: ImageStore, tmp_path: Path, case: str) -> None:
    OUTSIDE.mkdir(exist_ok=True)
    (OUTSIDE / "victim").write_text("keep me")
    passwd = os.stat("/etc/passwd")
    layers_before = set(store.layers_dir.iterdir())
    try:
        layer = layer_tar(hostile_cases()[case])  # type: ignore[arg-type]
        with pytest.raises(ImageError, match="Refusing"):
            import_archive(store, "evil", docker_save(tmp_path / "evil.tar", [layer]), print)
        assert sorted(os.listdir(OUTSIDE)) == ["victim"]
        assert (OUTSIDE / "victim").read_text() == "keep me"
        assert os.stat(OUTSIDE).st_uid == 0 and os.stat(OUTSIDE / "victim").st_uid == 0
        after = os.stat("/etc/passwd")
        assert (after.st_uid, after.st_mode, after.st_nlink, after.st_mtime_ns) == (
            passwd.st_uid, passwd.st_mode, passwd.st_nlink, passwd.st_mtime_ns)
        assert not store.exists("evil")
        assert set(store.layers_dir.iterdir()) == layers_before
        assert list(store.tmp_dir.iterdir()) == [] and mounts_under(store.root) == []
    finally:
        for entry in OUTSIDE.iterdir():
            entry.unlink()
        OUTSIDE.rmdir()


def test_hostile_entries_that_are_neutralised(store: ImageStore, tmp_path: Path) -> None:
    """Device nodes are dropped, a file replacing a symlink replaces it (never writes through it)."""
    OUTSIDE.mkdir(exist_ok=True)
    try:
        (OUTSIDE / "target").write_text("keep me")
        layer = layer_tar([
            chardev("null", 1, 3), chardev("sda", 8, 0),
            symlink("x", str(OUTSIDE / "target")), file("x", "replaced"),
            file("big-ids", "x", uid=4_000_000, gid=70000),
        ])
        image = import_archive(store, "neutral", docker_save(tmp_path / "n.tar", [layer]), print)
        assert (OUTSIDE / "target").read_text() == "keep me"
        [top] = image.layers
        assert sorted(os.listdir(top)) == ["big-ids", "x"]
        assert (top / "x").read_text() == "replaced" and not (top / "x").is_symlink()
        big = (top / "big-ids").lstat()
        assert (big.st_uid, big.st_gid) == (UID_BASE + 65534, UID_BASE + 65534)  # nobody
    finally:
        (OUTSIDE / "target").unlink()
        OUTSIDE.rmdir()
