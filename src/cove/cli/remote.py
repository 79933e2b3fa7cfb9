"""What the CLI's client commands share: the server they talk to (``COVE_BASE_URL``,
``COVE_API_KEY``, as the SDK reads them) and one way of failing (a red line, exit code 1).

The client commands import the SDK when they run, so ``cove serve`` (the same program) never loads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import httpx
import typer
from rich.console import Console
from rich.markup import escape

console = Console()
errors = Console(stderr=True)


@contextmanager
def failing_clearly() -> Iterator[None]:
    """An API error or an unreachable server as one line on stderr and exit code 1, not a traceback."""
    from cove.sdk import SandboxError
    from cove.sdk.connection import ConnectionConfig

    try:
        yield
    except SandboxError as exc:
        errors.print(f"[red]Error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except httpx.TransportError as exc:
        errors.print(f"[red]Error:[/red] cannot reach Cove at {escape(ConnectionConfig.of().base_url)} "
                     f"(COVE_BASE_URL): {escape(str(exc) or type(exc).__name__)}")
        raise typer.Exit(1) from None


def when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else "-"
