"""Containers from imported images, including ones with no Python and no shell at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import IMAGES_DIR
from tests.helpers import run
from tests.images.archives import busybox_layers, directory, docker_save, file, layer_tar, oci_layout

pytestmark = pytest.mark.root


def _import(name: str, tarball: Path) -> None:
    cove = Path(sys.executable).parent / "cove"
    subprocess.run([str(cove), "image", "import", name, str(tarball)], check=True, capture_output=True,
                   env={"COVE_IMAGES_DIR": str(IMAGES_DIR), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})


def test_busybox_image_without_python(client: openai.OpenAI, http: httpx.Client, tmp_path: Path) -> None:
    _import("test-busybox", docker_save(tmp_path / "bb.tar", busybox_layers(), env=["PATH=/bin", "FROM_IMAGE=1"]))
    cid = client.containers.create(name="bb", extra_body={"image": "test-busybox"}).id
    out = run(http, cid, "echo $FROM_IMAGE; cat /etc/added; test -e /etc/motd || echo gone; ls /opt/old",
              "command -v python3 || echo no-python")
    assert out[0]["stdout"] == "1\nadded in layer 2\ngone\nnew.txt\n"
    assert out[1]["stdout"] == "no-python\n"
    assert client.containers.retrieve(cid).model_extra["image"] == "test-busybox"  # type: ignore[index]


def test_image_without_any_shell(client: openai.OpenAI, http: httpx.Client, tmp_path: Path) -> None:
    layer = layer_tar([directory("./"), directory("data"), file("data/hello.txt", "hello from a bare image\n")])
    _import("test-bare", oci_layout(tmp_path / "bare.tar", [layer]))
    cid = client.containers.create(name="bare", extra_body={"image": "test-bare"}).id
    out = run(http, cid, "cat /data/hello.txt; echo $((6 * 7))")
    assert out[0] == {"stdout": "hello from a bare image\n42\n", "stderr": "",
                      "outcome": {"type": "exit", "exit_code": 0}}
