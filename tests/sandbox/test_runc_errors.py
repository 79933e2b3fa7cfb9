"""runc's errors reach clients (a failed create says why), so they never show the host's paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import SandboxError
from cove.sandbox.linux.disk import create_disk
from cove.sandbox.linux.runc import Runc


def test_host_paths_are_hidden(tmp_path: Path) -> None:
    data_dir = Path("/var/lib/cove-example")
    runc = Runc(tmp_path / "state", hidden=(data_dir, Path("/run/cove/0123456789abcdef")))
    message = runc.public(f"container_linux.go:380: mounting \"{data_dir}/libexec\" to rootfs at \"/.cove\": "
                          "permission denied; state in " + str(tmp_path / "state" / "c1") +
                          "; gate /run/cove/0123456789abcdef/c1/rootfs")
    assert str(data_dir) not in message and str(tmp_path) not in message and "/run/cove" not in message
    assert message == ('container_linux.go:380: mounting "<host path>" to rootfs at "/.cove": permission denied; '
                       "state in <host path>; gate <host path>")



def test_disk_errors_hide_host_paths(tmp_path: Path) -> None:
    """mkfs names the image it failed on; the message a client reads does not."""
    with pytest.raises(SandboxError) as failure:
        create_disk(tmp_path / "disk.img", 4096, 100000)  # far too small for ext4
    assert str(tmp_path) not in failure.value.message
    assert failure.value.message.startswith("mkfs.ext4 failed for a container disk")
