"""``cove audit CONTAINER_ID``: the operator's view of what ran in a container, even after it is gone."""

from __future__ import annotations

import asyncio
import datetime
import json

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from cove.config import Settings
from cove.store.db import Database
from cove.store.models import AuditEventRow


def audit(container_id: str, limit: int = typer.Option(100, help="How many of the newest events."),
          as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Show the commands run (and egress decisions) in a container, oldest first."""
    rows = asyncio.run(_load(container_id, limit))
    if as_json:
        for row in rows:
            typer.echo(json.dumps({"id": row.id, "type": row.kind, "project": row.project,
                                   "container_id": row.container_id, "response_id": row.response_id,
                                   "created_at": row.created_at, **row.data}))
        return
    table = Table(title=f"audit trail of {container_id}", title_justify="left")
    for column in ("time (UTC)", "project", "response", "type", "what", "outcome"):
        table.add_column(column)
    for row in rows:
        when = datetime.datetime.fromtimestamp(row.created_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, row.project, row.response_id or "", row.kind, *_describe(row))
    Console().print(table)


def _describe(row: AuditEventRow) -> tuple[str, str]:
    """What happened and how it ended: a command and its exit, or an egress request and the decision."""
    data = row.data
    if row.kind == "egress":
        verdict = "allowed" if data.get("allowed") else "refused"
        return f"{data.get('method') or '-'} {data.get('host')}:{data.get('port')}", f"{verdict}: {data.get('reason')}"
    outcome = data.get("outcome", {})
    result = "timeout" if outcome.get("type") == "timeout" else f"exit {outcome.get('exit_code', '')}"
    return str(data.get("command", "")), result


async def _load(container_id: str, limit: int) -> list[AuditEventRow]:
    db = Database(Settings().db_url)
    try:
        async with db.begin() as session:
            rows = list(await session.scalars(select(AuditEventRow).where(AuditEventRow.container_id == container_id)
                                              .order_by(AuditEventRow.seq.desc()).limit(limit)))
    finally:
        await db.close()
    return rows[::-1]
