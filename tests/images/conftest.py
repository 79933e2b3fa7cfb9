"""A private image store per session, in a data dir as private as a server's own (0700): build steps
reach their roots through a gate (``sandbox/linux/gate.py``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.sandbox.images.oci import import_archive
from cove.sandbox.images.store import Image, ImageStore, remove_tree
from tests.images.archives import busybox_layers, docker_save

UID_BASE = 100000


@pytest.fixture(scope="session", autouse=True)
def _needs_runc_and_busybox() -> None:
    """Image tests are marked ``root`` (skipped otherwise); as root, a missing tool is a setup error."""
    if shutil.which("runc") is None or not Path("/bin/busybox").exists():
        pytest.fail("image tests need runc and /bin/busybox: run `make setup`")


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    base = Path("/var/tmp/cove-tests")
    base.mkdir(mode=0o711, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="images-", dir=base))
    path.chmod(0o700)
    yield path
    remove_tree(path)


@pytest.fixture(scope="session")
def store(data_dir: Path) -> ImageStore:
    return ImageStore(data_dir / "images", UID_BASE)


@pytest.fixture(scope="session")
def busybox_image(store: ImageStore, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """A three-layer busybox image, imported from a ``docker save`` archive."""
    tarball = docker_save(tmp_path_factory.mktemp("bb") / "bb.tar", busybox_layers(),
                          env=["PATH=/bin:/usr/bin", "GREETING=hi"], workdir="/")
    return import_archive(store, "bb", tarball, lambda line: None)
