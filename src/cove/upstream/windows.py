"""What an upstream says of its models' context windows, from its ``GET /models``.

Servers say it under different names: vLLM ``max_model_len``, OpenRouter and several routers
``context_length``, others ``context_window`` or ``max_context_length``. Fitting a request to a window
the upstream does not have either refuses input it would take or sends input it will refuse, so
the upstream's word is asked once per upstream and kept for a while; an upstream that does not
answer (or names none) is asked again later and meanwhile has no word.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
from openai import AsyncOpenAI

WINDOW_FIELDS = ("max_model_len", "context_length", "context_window", "max_context_length")
"""Where servers put a model's context window in their ``/models`` entries, in the order trusted."""
_KEEP_SECONDS = 300.0
_RETRY_SECONDS = 60.0
_ASK_TIMEOUT = 2.0


def window_of(entry: dict[str, Any]) -> int | None:
    """The context window a ``/models`` entry names, if any (a positive integer)."""
    for field in WINDOW_FIELDS:
        value = entry.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class UpstreamWindows:
    """Per upstream: model name -> window, as its ``/models`` said it at most five minutes ago."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[float, dict[str, int]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def window(self, upstream: str, client: AsyncOpenAI, model: str) -> int | None:
        known = self._known.get(upstream)
        if known is None or known[0] < time.monotonic():
            async with self._locks.setdefault(upstream, asyncio.Lock()):  # one question at a time
                known = self._known.get(upstream)
                if known is None or known[0] < time.monotonic():
                    known = await self._ask(client)
                    self._known[upstream] = known
        return known[1].get(model)

    @staticmethod
    async def _ask(client: AsyncOpenAI) -> tuple[float, dict[str, int]]:
        try:
            page = await asyncio.wait_for(
                client.with_options(max_retries=0, timeout=_ASK_TIMEOUT).models.list(), _ASK_TIMEOUT)
        except (openai.APIError, TimeoutError):
            return time.monotonic() + _RETRY_SECONDS, {}
        windows = {}
        for model in page.data:
            window = window_of(model.model_extra or {})
            if window is not None:
                windows[model.id] = window
        return time.monotonic() + (_KEEP_SECONDS if windows else _RETRY_SECONDS), windows
