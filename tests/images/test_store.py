"""The store's bookkeeping, id shifting, and the CLI over both."""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cove.cli import app
from cove.errors import InvalidRequest, NotFound
from cove.sandbox.images.layers import OPAQUE_XATTR, lookup, resolve
from cove.sandbox.images.shift import CAP_XATTR, shift_tree
from cove.sandbox.images.store import ImageStore
from tests.images.archives import busybox_layers, docker_save
from tests.images.conftest import UID_BASE

pytestmark = pytest.mark.root


def test_names_and_missing_images(store: ImageStore) -> None:
    for bad in ("", "UPPER", "-dash", "a/b", "../x", "x" * 65):
        with pytest.raises(InvalidRequest) as info:
            store.get(bad)
        assert info.value.param == "image"
    with pytest.raises(NotFound) as missing:
        store.get("nope")
    assert (missing.value.code, missing.value.param) == ("image_not_found", "image")
    with pytest.raises(NotFound):
        store.delete("nope")


def test_stale_tmp_is_cleared_and_unused_layers_pruned(tmp_path: Path) -> None:
    root = tmp_path / "images"
    store = ImageStore(root, UID_BASE)
    (store.new_tmp("crashed-") / "half-a-layer").mkdir()
    store = ImageStore(root, UID_BASE)
    assert list(store.tmp_dir.iterdir()) == []
    keys = []
    for i in range(3):
        work = store.new_tmp("l-")
        layer = store.new_layer_dir(work)
        (layer / f"f{i}").write_text("x")
        keys.append(f"{i}" * 64)
        store.commit_layer(layer, keys[-1])
    store.save("one", keys[:2], ["A=1"], "/", "import")
    store.save("two", keys[1:], [], "", "import")
    assert [i.name for i in store.list()] == ["one", "two"]
    assert json.loads((root / "manifests/one.json").read_text())["layers"] == keys[:2]
    store.delete("one")
    assert sorted(p.name for p in store.layers_dir.iterdir()) == keys[1:]  # the shared layer stays
    assert store.get("two").workdir == "/"


def test_lookup_and_resolve_follow_overlay_rules(tmp_path: Path) -> None:
    low, mid, top = (tmp_path / n for n in ("low", "mid", "top"))
    for d in (low / "etc/sub", low / "usr/bin", mid / "etc/sub", top / "etc"):
        d.mkdir(parents=True)
    (low / "etc/a").write_text("a")
    (low / "etc/sub/old").write_text("old")
    (low / "usr/bin/sh").write_text("sh")
    (low / "bin").symlink_to("usr/bin")
    (low / "loop").symlink_to("loop")
    os.setxattr(mid / "etc/sub", OPAQUE_XATTR, b"y")
    (mid / "etc/sub/new").write_text("new")
    os.mknod(top / "etc/a", stat.S_IFCHR, os.makedev(0, 0))
    layers = [low, mid, top]
    assert lookup(layers, "etc/a") is None  # whited out
    assert lookup(layers, "etc/sub/old") is None  # hidden by the opaque dir
    assert lookup(layers, "etc/sub/new") is not None and lookup(layers, "usr/bin/sh") is not None
    assert resolve(layers, "/bin/sh") == "/usr/bin/sh"
    assert resolve(layers, "/bin/../bin/sh") == "/usr/bin/sh"  # '..' applies to the link's target
    assert resolve(layers, "/bin/../../etc/sub/new") == "/etc/sub/new"
    assert resolve(layers, "/loop") is None and resolve(layers, "/missing") is None


def test_shift_keeps_setuid_and_namespaces_file_caps(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "suid").write_text("x")
    (tree / "suid").chmod(0o4755)
    (tree / "capped").write_text("x")
    os.chown(tree / "capped", 1000, 1000)
    os.setxattr(tree / "capped", CAP_XATTR, struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0))
    (tree / "huge").write_text("x")
    os.chown(tree / "huge", 3_000_000, 0)
    outside = tmp_path / "outside"
    outside.write_text("x")
    (tree / "link").symlink_to(outside)
    shift_tree(tree, UID_BASE)
    shift_tree(tree, UID_BASE)  # idempotent
    st = (tree / "suid").lstat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (UID_BASE, 0o4755)
    assert (tree / "capped").lstat().st_uid == UID_BASE + 1000
    magic, permitted, _, _, _, rootid = struct.unpack("<IIIIII", os.getxattr(tree / "capped", CAP_XATTR))
    assert (magic, permitted, rootid) == (0x03000001, 1 << 13, UID_BASE)
    assert (tree / "huge").lstat().st_uid == UID_BASE + 65534
    assert (tree / "link").lstat().st_uid == UID_BASE and outside.stat().st_uid == 0


def test_cli_import_ls_rm(data_dir: Path, tmp_path: Path) -> None:
    images = data_dir / "cli-images"  # not under tmp_path: runc's init must traverse its parents
    env = {"COVE_DATA_DIR": str(data_dir), "COVE_IMAGES_DIR": str(images)}
    tarball = docker_save(tmp_path / "bb.tar", busybox_layers())
    runner = CliRunner()
    result = runner.invoke(app, ["image", "import", "clibb", str(tarball)], env=env)
    assert result.exit_code == 0, result.output
    assert "layer 3/3" in result.output
    result = runner.invoke(app, ["image", "ls"], env=env)
    assert "clibb" in result.output and "import" in result.output
    (tmp_path / "r.toml").write_text('from = "clibb"\n[[step]]\nrun = "echo from-cli-step"\n')
    result = runner.invoke(app, ["image", "build", "clibuilt", "--from", str(tmp_path / "r.toml")], env=env)
    assert result.exit_code == 0 and "from-cli-step" in result.output, result.output
    result = runner.invoke(app, ["image", "rm", "clibb"], env=env)
    assert result.exit_code == 0
    result = runner.invoke(app, ["image", "rm", "clibb"], env=env)
    assert result.exit_code == 1 and "No image named 'clibb'" in result.output
    assert not (images / "manifests/clibb.json").exists()
