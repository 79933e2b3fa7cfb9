"""``AsyncSandbox``: one Cove container driven over HTTP, E2B's ``AsyncSandbox`` in shape.

A sandbox is a container of ``/v1/containers``: ``create`` makes one, ``connect`` attaches to an
existing one, ``kill`` deletes it. Everything else goes through its children: ``commands``, ``files``,
``pty``, and ``run_code``.
"""

from __future__ import annotations

import builtins
import math
from types import TracebackType
from typing import Any

from cove.sdk.code import run_code
from cove.sdk.commands import AsyncCommands, OutputHandler
from cove.sdk.connection import Connection, ConnectionConfig
from cove.sdk.errors import NotFoundError
from cove.sdk.files import AsyncFiles
from cove.sdk.models import Execution, SandboxInfo, SnapshotInfo
from cove.sdk.pty import AsyncPty

Network = bool | list[str] | dict[str, Any] | None
"""``False``/None: no network (the default); a list of domains: an allowlist; a dict: the raw
``network_policy`` (e.g. with ``domain_secrets``)."""


def _network_policy(network: Network) -> dict[str, Any] | None:
    if network is None or network is False:
        return None
    if isinstance(network, dict):
        return network
    if network is True:
        raise ValueError("network=True is not a policy: name the domains, e.g. network=['pypi.org'].")
    return {"type": "allowlist", "allowed_domains": list(network)}


class AsyncSandbox:
    def __init__(self, connection: Connection, info: SandboxInfo) -> None:
        """Use ``await AsyncSandbox.create(...)`` or ``await AsyncSandbox.connect(id)``."""
        self._connection = connection
        self.sandbox_id = info.sandbox_id
        self.info = info
        self.commands = AsyncCommands(connection, self.sandbox_id)
        self.files = AsyncFiles(connection, self.sandbox_id)
        self.pty = AsyncPty(connection, self.sandbox_id)

    @property
    def id(self) -> str:
        return self.sandbox_id

    @classmethod
    async def create(cls, image: str | None = None, *, network: Network = None, timeout: float | None = None,
                     name: str = "sandbox", memory_limit: str | None = None, cpu_limit: float | None = None,
                     snapshot_id: str | None = None, base_url: str | None = None,
                     api_key: str | None = None) -> AsyncSandbox:
        """A new container. ``timeout`` (seconds) is how long it may sit unused before it expires
        (Cove counts idle time, whole minutes, 1 minute to 7 days; default: the server's setting)."""
        body: dict[str, Any] = {"name": name}
        optional = {"image": image, "memory_limit": memory_limit, "cpu_limit": cpu_limit,
                    "snapshot_id": snapshot_id, "network_policy": _network_policy(network)}
        body.update({key: value for key, value in optional.items() if value is not None})
        if timeout is not None:
            body["expires_after"] = {"anchor": "last_active_at", "minutes": max(1, math.ceil(timeout / 60))}
        connection = Connection(ConnectionConfig.of(base_url, api_key))
        try:
            raw = await connection.request("POST", "/containers", json=body)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, SandboxInfo.of(raw))

    @classmethod
    async def connect(cls, sandbox_id: str, *, base_url: str | None = None,
                      api_key: str | None = None) -> AsyncSandbox:
        """An existing container (``NotFoundError`` for an unknown or another project's id)."""
        connection = Connection(ConnectionConfig.of(base_url, api_key))
        try:
            raw = await connection.request("GET", f"/containers/{sandbox_id}")
        except BaseException:
            await connection.close()
            raise
        return cls(connection, SandboxInfo.of(raw))

    @staticmethod
    async def list(*, base_url: str | None = None, api_key: str | None = None,
                   limit: int | None = None) -> list[SandboxInfo]:
        """The project's containers, newest first (all of them, page by page, or the first ``limit``)."""
        connection = Connection(ConnectionConfig.of(base_url, api_key))
        try:
            found: list[SandboxInfo] = []
            params: dict[str, Any] = {"limit": 100}
            while limit is None or len(found) < limit:
                page = await connection.request("GET", "/containers", params=params)
                found += [SandboxInfo.of(raw) for raw in page["data"]]
                if not page["has_more"]:
                    break
                params["after"] = page["last_id"]
            return found[:limit]
        finally:
            await connection.close()

    async def get_info(self) -> SandboxInfo:
        self.info = SandboxInfo.of(await self._connection.request("GET", f"/containers/{self.sandbox_id}"))
        return self.info

    async def is_running(self) -> bool:
        try:
            return (await self.get_info()).status in ("running", "paused", "stopped")
        except NotFoundError:
            return False

    async def run_code(self, code: str, *, on_stdout: OutputHandler | None = None,
                       on_stderr: OutputHandler | None = None, timeout: float | None = None) -> Execution:
        """Runs a Python cell in the sandbox's session: variables and imports persist between cells."""
        return await run_code(self._connection, self.sandbox_id, self.files, code, on_stdout=on_stdout,
                              on_stderr=on_stderr, timeout=timeout)

    async def snapshot(self, name: str | None = None) -> SnapshotInfo:
        """The sandbox's files as they are now, kept after it is gone (``create(snapshot_id=...)``)."""
        body = {"name": name} if name is not None else {}
        return SnapshotInfo.of(await self._connection.request("POST", f"/containers/{self.sandbox_id}/snapshots",
                                                              json=body))

    async def fork(self, count: int = 1) -> builtins.list[AsyncSandbox]:
        """``count`` new sandboxes with this one's files as they are now (not its processes), its
        image, limits and network policy; each is killed (and closed) on its own."""
        made = await self._connection.request("POST", f"/containers/{self.sandbox_id}/fork", json={"count": count})
        return [AsyncSandbox(Connection(self._connection.config), SandboxInfo.of(raw)) for raw in made["data"]]

    async def get_host(self, port: int, *, expires_in: int = 3600) -> str:
        """A URL that opens the app listening on ``port`` in the sandbox, without the key, for
        ``expires_in`` seconds (1 to 7 days): E2B's ``get_host``, but a whole signed URL (Cove serves
        previews under a path of its own address, ``docs/previews.md``), ending in ``/``."""
        made = await self._connection.request("POST", f"/containers/{self.sandbox_id}/ports/{port}/url",
                                              json={"expires_in": expires_in})
        return self._connection.config.base_url + str(made["url"])

    async def pause(self) -> SandboxInfo:
        """Freezes every process of the sandbox (no CPU; memory, files and connections kept); any call
        that uses it (a command, a file) resumes it first."""
        self.info = SandboxInfo.of(await self._connection.request("POST", f"/containers/{self.sandbox_id}/pause"))
        return self.info

    async def resume(self) -> SandboxInfo:
        self.info = SandboxInfo.of(await self._connection.request("POST", f"/containers/{self.sandbox_id}/resume"))
        return self.info

    async def kill(self) -> bool:
        """Deletes the container (processes, files, disk) and closes this client's connection, which
        has nothing left to reach; False if the container was gone already."""
        try:
            await self._connection.request("DELETE", f"/containers/{self.sandbox_id}")
        except NotFoundError:
            return False
        finally:
            await self.close()
        return True

    async def close(self) -> None:
        """Releases this client's connection; the sandbox lives on until killed or idle past its timeout."""
        await self._connection.close()

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.kill()
