"""``cove fleet status``: the fleet's nodes as the database last saw them, with what each holds."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json

import typer
from rich.console import Console
from rich.table import Table

from cove.config import Settings
from cove.service.fleet import FleetRegistry, NodeStatus
from cove.store.db import Database

fleet_app = typer.Typer(no_args_is_help=True, help="The fleet of container nodes (COVE_RAY_ADDRESS).")


@fleet_app.command()
def status(as_json: bool = typer.Option(False, "--json", help="One JSON object per node.")) -> None:
    """Show every node seen, alive or lost, with its capacity and the containers placed on it."""
    nodes = asyncio.run(_load())
    if as_json:
        for node in nodes:
            typer.echo(json.dumps(dataclasses.asdict(node)))
        return
    table = Table(title="fleet nodes", title_justify="left")
    for column in ("node", "state", "incarnation", "containers", "lost", "memory used", "CPUs used", "images",
                   "last seen (UTC)"):
        table.add_column(column)
    for node in nodes:
        seen = datetime.datetime.fromtimestamp(node.seen_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(node.node, "alive" if node.alive else "lost", node.incarnation[:8],
                      f"{node.containers}/{node.slots}", str(node.lost),
                      f"{node.memory_used / 2**30:.1f}/{node.memory / 2**30:.1f} GiB",
                      f"{node.cpus_used:g}/{node.cpus:g}", ", ".join(node.images), seen)
    Console().print(table)


async def _load() -> list[NodeStatus]:
    db = Database(Settings().db_url)
    try:
        await db.migrate()
        return await FleetRegistry(db).status()
    finally:
        await db.close()
