"""The sync SDK's event loop: one daemon thread per process runs the async SDK's coroutines.

``Sandbox`` is a thin blocking face of ``AsyncSandbox`` rather than a second implementation: each
call is submitted here and waited for. Callbacks (``on_stdout``...) run on this thread, so they must
not call the sync SDK themselves (that would wait on itself; it is refused).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from cove.sdk.errors import SandboxError

T = TypeVar("T")
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _running_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            _thread = threading.Thread(target=loop.run_forever, name="cove-sdk", daemon=True)
            _thread.start()
            _loop = loop
        return _loop


def call(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs ``coroutine`` on the SDK's loop and waits for it; an interrupt (Ctrl-C) cancels it."""
    loop = _running_loop()
    if threading.current_thread() is _thread:
        coroutine.close()
        raise SandboxError("The sync SDK cannot be called from its own callbacks; use AsyncSandbox there.")
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


async def _next(iterator: AsyncIterator[T]) -> T:
    return await iterator.__anext__()


def iterate(iterator: AsyncIterator[T]) -> Iterator[T]:
    """The items of an async iterator of the SDK's loop, each waited for here; closed at the end."""
    try:
        while True:
            try:
                yield call(_next(iterator))
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            call(aclose())
