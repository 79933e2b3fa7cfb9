"""Containers' displays as the API uses them: action batches, screenshots and live views.

Everything goes through ``ContainerService.use`` (the project's own running container, kept from
expiring meanwhile, its action batches audited by ``AuditedDisplay``). A display starts on first use:
with the size and environment of the first ``/computer`` request that gives them, else with the
defaults (a screenshot or a live view of a container whose display has not started starts it, so a
person can open the view before anything acted; a later request for another size gets the running one).

Live views are RFB streams to an x11vnc in the container. Each costs a process in the container (its
own memory budget) and a relay on the server, so a container has at most ``MAX_VIEWERS`` at once. A
browser cannot put a key on a WebSocket handshake, and a key must never be put in a URL: it gets a
view token instead (``service/tokens.py``), naming project and container, valid ``TOKEN_SECONDS``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from cove.errors import InvalidRequest, TooManyRequests
from cove.sandbox.base import Channel, Screen
from cove.service.containers import ContainerService
from cove.service.tokens import Tokens
from cove.tools.computer import MAX_ACTIONS, ActionError, check_action

MAX_VIEWERS = 4
"""Live views of one container at once (each is an x11vnc in the container and a relay here)."""
TOKEN_SECONDS = 300
"""How long a view token opens the live view: long enough to load the page and connect, short
enough that a token copied out of a page or a log is soon worthless. A view already open stays open."""


@dataclass
class Viewer:
    """One open live view: its RFB channel, and what it moved (for the audit trail)."""

    channel: Channel
    bytes_in: int = 0
    bytes_out: int = 0


class DisplayService:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self.tokens = Tokens("display", containers.secrets.sealer, TOKEN_SECONDS,
                             "The display token is invalid, expired, or for another container: ask for a new one "
                             "(POST /v1/containers/{id}/display/token with the API key).", code="invalid_display_token")
        self._viewers: Counter[str] = Counter()

    async def act(self, project: str, container_id: str, actions: list[Any], screen: Screen | None) -> bytes:
        """Performs ``actions`` (OpenAI's computer actions) on the display and returns the settled PNG."""
        checked = check_actions(actions)
        async with self.containers.use(project, container_id) as sandbox:
            display = await sandbox.display(screen)
            return await display.act(checked)

    async def screenshot(self, project: str, container_id: str) -> bytes:
        async with self.containers.use(project, container_id) as sandbox:
            display = await sandbox.display()
            return await display.screenshot()

    async def start(self, project: str, container_id: str) -> None:
        """Starts the display (defaults) if it is not running: a view page is made only for a container
        that is the project's (else 404) and has a display (else 400), and its view then connects at once."""
        async with self.containers.use(project, container_id) as sandbox:
            await sandbox.display()

    @asynccontextmanager
    async def view(self, project: str, container_id: str, via: Literal["api_key", "token"]
                   ) -> AsyncIterator[Viewer]:
        """A new RFB connection to the display, closed on leaving; refused past ``MAX_VIEWERS``."""
        await self.containers.get(project, container_id)  # a foreign id is a 404 before the count says anything
        if self._viewers[container_id] >= MAX_VIEWERS:
            raise TooManyRequests(f"Container '{container_id}' has {MAX_VIEWERS} live views open already; "
                                  "close one first.", code="too_many_viewers")
        self._viewers[container_id] += 1
        started = time.monotonic()
        try:
            async with self.containers.use(project, container_id) as sandbox:
                display = await sandbox.display()
                channel = await display.vnc()
            viewer = Viewer(channel)
            try:
                yield viewer
            finally:
                await channel.close()
                if self.containers.audit is not None:
                    self.containers.audit.record(project, container_id, "display_view", {
                        "via": via, "duration_ms": round((time.monotonic() - started) * 1000, 1),
                        "bytes_in": viewer.bytes_in, "bytes_out": viewer.bytes_out})
        finally:
            self._viewers[container_id] -= 1
            if not self._viewers[container_id]:
                del self._viewers[container_id]


def check_actions(actions: list[Any]) -> list[dict[str, Any]]:
    """The actions as OpenAI's types have them (the computer tool's own check), or a 400 naming
    ``actions[i]`` and its field; the display then checks what only it knows (coordinates on its
    screen, key names)."""
    if not 1 <= len(actions) <= MAX_ACTIONS:
        raise InvalidRequest(f"Invalid value for 'actions': expected 1 to {MAX_ACTIONS} actions.", param="actions",
                             code="invalid_value")
    checked = []
    for index, action in enumerate(actions):
        try:
            checked.append(check_action(action))
        except ActionError as exc:
            where = f"actions[{index}].{exc.where}"
            raise InvalidRequest(f"Invalid value for '{where}': {exc.reason}.", param=where,
                                 code="invalid_value") from None
    return checked
