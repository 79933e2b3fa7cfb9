"""How a tool puts its items and stream events into the response being built.

The agent's response builder is the implementation; a tool only sees this much of it, so that the
tools layer never imports the agent.
"""

from __future__ import annotations

from typing import Any, Protocol


class EventSink(Protocol):
    async def add_item(self, item: dict[str, Any]) -> int:
        """Appends an output item (``response.output_item.added``); returns its output index."""

    async def done_item(self, item: dict[str, Any]) -> None:
        """Marks an added item finished (``response.output_item.done``, with the item as it is now)."""

    async def item(self, item: dict[str, Any]) -> None:
        """Appends a finished item: added and done at once."""

    async def emit(self, event: dict[str, Any]) -> None:
        """Streams one event of the tool's own grammar (``response.shell_call_command.delta`` ...)."""

    def index_of(self, item: dict[str, Any]) -> int:
        """The output index of an item already added."""
