"""Cove: a self-hosted agent runtime with OpenAI-compatible Responses and Containers APIs.

``from cove import Sandbox`` (or ``AsyncSandbox``) is the sandbox SDK (``cove.sdk``), loaded on first
use so the server, which never needs it, does not pay for importing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cove.sdk import AsyncSandbox, Sandbox

__version__ = "0.1.0"
__all__ = ["AsyncSandbox", "Sandbox", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Sandbox", "AsyncSandbox"):
        import cove.sdk

        return getattr(cove.sdk, name)
    raise AttributeError(f"module 'cove' has no attribute {name!r}")
