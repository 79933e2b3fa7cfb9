"""The default Debian image: its build's guard rails, and the real image if one was built."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cove.config import Settings
from cove.errors import ImageError
from cove.sandbox.images.debian import CA_BUNDLE, HOST_CA_BUNDLE, apt_sources, build_default_image, recipe_source
from cove.sandbox.images.store import Image, ImageStore
from cove.sandbox.linux.overlay import mount_overlay, mounts_under
from tests.images.conftest import UID_BASE

pytestmark = pytest.mark.root


def test_existing_image_is_kept_unless_rebuilt(store: ImageStore, busybox_image: Image) -> None:
    store.save("deb-test", [p.name for p in busybox_image.layers], [], "/", recipe_source())
    lines: list[str] = []
    assert build_default_image(store, lines.append, name="deb-test") == store.get("deb-test")
    assert "already exists" in lines[0]
    missing = Path("/nonexistent/sources.list")
    assert apt_sources(missing) == missing
    assert apt_sources() in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
    with pytest.raises(ImageError, match="No apt sources file"):
        build_default_image(store, lines.append, name="deb-test", rebuild=True, sources=missing)
    assert store.get("deb-test").layers == busybox_image.layers
    # Built from an older package list: a plain build builds it again (and here fails trying).
    store.save("deb-test", [p.name for p in busybox_image.layers], [], "/", "debian:000000000000")
    with pytest.raises(ImageError, match="No apt sources file"):
        build_default_image(store, lines.append, name="deb-test", sources=missing)
    assert "another package list" in lines[-1]


def test_crashed_build_leaves_nothing_behind(busybox_image: Image, data_dir: Path) -> None:
    """A build killed with its overlay still mounted: the next store opening cleans up and the
    layers under the leftover mount are untouched."""
    root = data_dir / "images"
    scratch = ImageStore(root, UID_BASE).new_tmp("run-")
    for name in ("upper", "work", "rootfs"):
        (scratch / name).mkdir()
    mount_overlay(busybox_image.layers, scratch / "upper", scratch / "work", scratch / "rootfs")
    assert mounts_under(root)
    ImageStore(root, UID_BASE)
    assert mounts_under(root) == [] and not scratch.exists()
    assert (busybox_image.layers[0] / "bin/busybox").stat().st_size == Path("/bin/busybox").stat().st_size


def test_the_built_default_image() -> None:
    images = ImageStore(Settings().image_root, UID_BASE)
    if not images.exists("default"):
        pytest.skip(f"no default image in {images.root}")
    image = images.get("default")
    assert image.source == recipe_source() and len(image.layers) == 1
    env = dict(e.split("=", 1) for e in image.env)
    assert env["SSL_CERT_FILE"] == env["NODE_EXTRA_CA_CERTS"] == CA_BUNDLE and env["LANG"] == "C.UTF-8"
    [layer] = image.layers
    assert (layer / CA_BUNDLE.lstrip("/")).read_bytes() == HOST_CA_BUNDLE.read_bytes()
    assert stat.S_IMODE((layer / "mnt/data").stat().st_mode) == 0o777
    assert (layer / "etc/hosts").exists() and (layer / "etc/resolv.conf").read_text() == ""
    assert os.listdir(layer / "dev") == []
    assert (layer / "usr/lib/locale/locale-archive").stat().st_size > 0  # C.UTF-8, loaded with one mmap
    assert stat.S_IMODE((layer / "usr/bin/su").stat().st_mode) & stat.S_ISUID
    for dirpath, dirnames, filenames in os.walk(layer):
        for name in (*dirnames, *filenames):
            st = os.lstat(os.path.join(dirpath, name))
            assert UID_BASE <= st.st_uid < UID_BASE + 65536 and UID_BASE <= st.st_gid < UID_BASE + 65536
