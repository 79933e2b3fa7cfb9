"""``cove audit CONTAINER_ID``: the operator's view of what ran in a container, even after it is gone."""

from __future__ import annotations

import asyncio
import datetime
import json

import typer
from rich.console import Console
from rich.table import Table

from cove.config import Settings
from cove.service.audit import AuditLog
from cove.service.objects import (
    ComputerEvent,
    DisplayViewEvent,
    EgressEvent,
    ForkEvent,
    McpCallEvent,
    OperatorAuditEvent,
    PreviewEvent,
    SkillEvent,
    SnapshotEvent,
    TerminalEvent,
)
from cove.store.db import Database


def audit(container_id: str, limit: int = typer.Option(100, help="How many of the newest events."),
          as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Show the commands, computer actions, live views, terminals, previews and egress decisions of a container,
    oldest first."""
    events, pruned = asyncio.run(_load(container_id, limit))
    note = f"{pruned} older events were pruned (the project's audit_rows quota)" if pruned else None
    if as_json:
        for event in events:
            typer.echo(json.dumps(event.model_dump()))
        if note:
            typer.echo(note, err=True)  # stdout stays one event per line
        return
    table = Table(title=f"audit trail of {container_id}", title_justify="left", caption=note,
                  caption_justify="left")
    for column in ("time (UTC)", "project", "response", "type", "what", "outcome"):
        table.add_column(column)
    for event in events:
        when = datetime.datetime.fromtimestamp(event.created_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, event.project, event.response_id or "", event.type, *_describe(event))
    Console().print(table)


def _describe(event: OperatorAuditEvent) -> tuple[str, str]:
    """What happened and how it ended: a command and its exit, or an egress request and the decision."""
    if isinstance(event, EgressEvent):
        verdict = "allowed" if event.allowed else "refused"
        return f"{event.method or '-'} {event.host}:{event.port}", f"{verdict}: {event.reason}"
    if isinstance(event, ComputerEvent):
        return " ".join(str(action.get("type")) for action in event.actions), event.outcome.type
    if isinstance(event, DisplayViewEvent):
        return f"live view ({event.via})", f"{event.bytes_in} bytes in, {event.bytes_out} out"
    if isinstance(event, TerminalEvent):
        ended = "left open" if event.exit_code is None else f"exit {event.exit_code}"
        return f"terminal: {event.command or 'shell'} ({event.via})", ended
    if isinstance(event, PreviewEvent):
        kind = "websocket" if event.websocket else event.method
        return (f"preview :{event.port} {kind} {event.path} ({event.via})",
                f"{event.status}, {event.bytes_in} bytes in, {event.bytes_out} out")
    if isinstance(event, SnapshotEvent):
        return f"snapshot {event.snapshot_id}", f"{event.bytes} bytes"
    if isinstance(event, McpCallEvent):
        return f"mcp {event.server_label}/{event.tool} ({event.server})", f"{event.outcome} in {event.duration_ms:g} ms"
    if isinstance(event, ForkEvent):
        return f"fork from {event.snapshot_id or 'its files now'}", ", ".join(event.containers)
    if isinstance(event, SkillEvent):
        return f"skill {event.name} at {event.path}", f"{event.files} files, {event.bytes} bytes"
    outcome = event.outcome
    return event.command, "timeout" if outcome.type == "timeout" else f"exit {outcome.exit_code}"


async def _load(container_id: str, limit: int) -> tuple[list[OperatorAuditEvent], int]:
    db = Database(Settings().db_url)
    try:
        audit = AuditLog(db)
        return await audit.newest(container_id, limit), await audit.pruned(container_id)
    finally:
        await db.close()
