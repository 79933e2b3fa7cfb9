"""A container's writable layer lives on its own small filesystem: a sparse ext4 image, loop-mounted.

That is the disk quota: writes past the image's size fail inside the container with ENOSPC, and
the host's disk cannot be filled by one container. The image is sparse, so it costs what is
written; making and mounting one takes about 10 ms here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from cove.errors import SandboxError


def create_disk(image: Path, size_bytes: int, uid: int) -> None:
    """A new, empty filesystem of ``size_bytes`` whose root belongs to container root."""
    with image.open("wb") as handle:
        handle.truncate(size_bytes)
    _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E",
          f"lazy_itable_init=1,lazy_journal_init=1,root_owner={uid}:{uid}", str(image)])


def mount_disk(image: Path, target: Path) -> None:
    target.mkdir(exist_ok=True)
    _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(target)])


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    if result.returncode != 0:
        detail = result.stderr.strip() or str(result.returncode)
        for arg in argv[1:]:  # a client reads this message: the host's paths stay out of it
            if arg.startswith("/"):
                detail = detail.replace(arg, "<host path>")
        raise SandboxError(f"{argv[0]} failed for a container disk: {detail}")

