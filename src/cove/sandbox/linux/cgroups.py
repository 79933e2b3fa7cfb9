"""Reading what the kernel's cgroups say about a container (its runtime creates and limits them)."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")


@functools.cache
def is_unified() -> bool:
    """cgroup v2 only (as opposed to v1 or hybrid); the machine's layout does not change while Cove runs."""
    return (_ROOT / "cgroup.controllers").exists()


def _memory_dir(cgroup_path: str) -> Path:
    rel = cgroup_path.lstrip("/")
    return _ROOT / rel if is_unified() else _ROOT / "memory" / rel


@functools.lru_cache(maxsize=4096)
def _oom_file(cgroup_path: str) -> str:
    return f"{_memory_dir(cgroup_path)}/{'memory.events' if is_unified() else 'memory.oom_control'}"


def oom_kills(cgroup_path: str) -> int:
    """How many processes the OOM killer ended in this container so far. Read twice per command, so
    with plain ``os`` calls rather than ``pathlib``'s (a third of the cost), and the file's name kept."""
    try:
        fd = os.open(_oom_file(cgroup_path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        text = os.read(fd, 4096)
    except OSError:
        return 0
    finally:
        os.close(fd)
    for line in text.splitlines():
        key, _, value = line.partition(b" ")
        if key == b"oom_kill":
            return int(value)
    return 0


def _freezer(cgroup_path: str) -> tuple[Path, str, str, str]:
    """The file that freezes the cgroup, what to write to freeze and to thaw, and where the state shows."""
    rel = cgroup_path.lstrip("/")
    if is_unified():
        return _ROOT / rel / "cgroup.freeze", "1", "0", "cgroup.events"
    return _ROOT / "freezer" / rel / "freezer.state", "FROZEN", "THAWED", "freezer.state"


def set_frozen(cgroup_path: str, frozen: bool) -> None:
    """Asks the kernel to freeze (or thaw) every process of the cgroup; ``is_frozen`` says when it has."""
    control, freeze, thaw, _state = _freezer(cgroup_path)
    control.write_text(freeze if frozen else thaw)


def is_frozen(cgroup_path: str) -> bool:
    """Whether every process of the cgroup is frozen (v1 passes through FREEZING on the way)."""
    control, _freeze, _thaw, state = _freezer(cgroup_path)
    text = (control.parent / state).read_text()
    if is_unified():
        return any(line.strip() == "frozen 1" for line in text.splitlines())
    return text.strip() == "FROZEN"


LEFTOVER_AGE_S = 60.0
"""How old an empty cgroup under the shared parent must be for ``remove_leftovers`` to take it."""


def remove_leftovers(parent: str) -> None:
    """Removes empty container cgroups under ``parent`` that a crash left behind, if made more than
    ``LEFTOVER_AGE_S`` ago: other Cove servers on the machine share the parent, and a cgroup one of
    them has just made for a start is empty until its container's init joins it. (A cgroup with
    processes cannot be removed; a directory's ctime on cgroupfs is when it was made.)"""
    rel = parent.lstrip("/")
    bases = [_ROOT / rel] if is_unified() else [d / rel for d in _ROOT.iterdir() if d.is_dir()]
    made_before = time.time() - LEFTOVER_AGE_S
    for base in bases:
        if not base.is_dir():
            continue
        for child in base.iterdir():
            with contextlib.suppress(OSError):
                if child.is_dir() and child.stat().st_ctime < made_before:
                    child.rmdir()
