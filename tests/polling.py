"""Waiting for something to become true, the one way tests here do it.

``eventually(check)`` calls ``check`` until it returns something truthy (which it returns) or the
time is up (then it fails, saying what it waited for and what it last saw); ``await
eventually_async(check)`` does the same in async tests, where ``check`` may be a coroutine function.
Poll an observable condition this way instead of sleeping for a guessed time.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _pauses(timeout: float, interval: float, what: str, last: list[object]) -> Iterator[float]:
    """The pauses between attempts, growing from ``interval`` to 20x it; fails once ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    pause = interval
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {last[0]!r}")
        yield min(pause, remaining)
        pause = min(pause * 1.5, interval * 20)


def _attempt(value: object, last: list[object]) -> bool:
    last[0] = value
    return bool(value) and not isinstance(value, BaseException)


def eventually(check: Callable[[], T], *, timeout: float = 30, interval: float = 0.02,
               what: str = "the condition", ignoring: tuple[type[BaseException], ...] = ()) -> T:
    """``check()``'s first truthy result; exceptions in ``ignoring`` count as not yet."""
    last: list[object] = [None]
    for pause in _pauses(timeout, interval, what, last):
        try:
            value = check()
        except ignoring as exc:
            last[0] = exc
        else:
            if _attempt(value, last):
                return value
        time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover - _pauses never ends without raising


async def eventually_async(check: Callable[[], T | Awaitable[T]], *, timeout: float = 30, interval: float = 0.02,
                           what: str = "the condition", ignoring: tuple[type[BaseException], ...] = ()) -> T:
    """As ``eventually``, without blocking the event loop; ``check`` may be async."""
    last: list[object] = [None]
    for pause in _pauses(timeout, interval, what, last):
        try:
            result = check()
            value = await result if inspect.isawaitable(result) else result
        except ignoring as exc:
            last[0] = exc
        else:
            if _attempt(value, last):
                return value  # type: ignore[return-value]
        await asyncio.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover
