"""The few runc invocations Cove needs, each one short-lived: runc keeps no daemon."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

from cove.errors import SandboxError


class Runc:
    def __init__(self, state_root: Path, binary: str | None = None, hidden: tuple[Path, ...] = ()) -> None:
        """``hidden``: host directories whose paths runc's errors must not show (API clients read them)."""
        found = binary or shutil.which("runc") or "/usr/sbin/runc"
        if not Path(found).exists():
            raise SandboxError("runc is not installed (run `make setup`).")
        self.binary = found
        self.state_root = state_root
        self._hidden = tuple(str(path) for path in (state_root, *hidden))
        state_root.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def _call(self, *args: str) -> tuple[int, str, str]:
        # In a worker thread: forking the server and waiting for runc stay off the event loop.
        result = await asyncio.to_thread(
            subprocess.run, [self.binary, "--root", str(self.state_root), *args],
            stdin=subprocess.DEVNULL, capture_output=True, check=False)
        return result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")

    def run_detached(self, container_id: str, bundle: Path, control: socket.socket, log: Path) -> int:
        """Starts the container; its init gets ``control`` as stdin. Returns the init's host pid.

        Blocking (runc runs for ~30 ms): containers call it in a worker thread."""
        pid_file = bundle / "init.pid"
        pid_file.unlink(missing_ok=True)
        with log.open("ab") as log_handle:
            result = subprocess.run(
                [self.binary, "--root", str(self.state_root), "--log", str(bundle / "runc.log"),
                 # No session keyring: the kernel caps keys per uid (200), which would cap containers.
                 "run", "--detach", "--no-new-keyring", "--bundle", str(bundle), "--pid-file", str(pid_file),
                 container_id],
                stdin=control.fileno(), stdout=log_handle, stderr=log_handle, check=False)
        if result.returncode != 0:
            message = _last_error(bundle / "runc.log").replace(f"{bundle}/rootfs", "")
            raise SandboxError(f"Starting the container failed: {self.public(message)}")
        return int(pid_file.read_text().strip())

    def has_state(self, container_id: str) -> bool:
        """Whether runc knows this container (saves a runc call for containers never started)."""
        return (self.state_root / container_id).exists()

    async def delete(self, container_id: str) -> None:
        """Kills whatever is left and removes the runtime state and cgroups; absent is fine."""
        code, _out, err = await self._call("delete", "--force", container_id)
        if code != 0 and "does not exist" not in err and "not exist" not in err:
            raise SandboxError(f"Removing container state failed: {self.public(err.strip())}")

    async def list_ids(self) -> list[str]:
        code, out, err = await self._call("list", "--format", "json")
        if code != 0:
            raise SandboxError(f"Listing containers failed: {self.public(err.strip())}")
        return [entry["id"] for entry in json.loads(out or "null") or []]

    def public(self, message: str) -> str:
        """``message`` as a client may read it (``hide_paths``)."""
        return hide_paths(message, self._hidden)


def hide_paths(message: str, hidden: tuple[str, ...]) -> str:
    """``message`` with every path under a ``hidden`` host directory replaced: runtimes' errors reach
    API clients, which must not learn where the server keeps its files."""
    for prefix in hidden:
        message = re.sub(re.escape(prefix) + r"(/[^\s:;,'\"]*)?", "<host path>", message)
    return message


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            return line
        if entry.get("level") in ("error", "fatal"):
            return str(entry.get("msg", line))
    return lines[-1] if lines else "no log"
