"""runc's errors reach clients (a failed create says why), so they never show the host's paths."""

from __future__ import annotations

from pathlib import Path

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
