"""``cove containers ls|create|rm|logs``: a server's containers from a terminal, through the SDK."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cove.cli.remote import console, failing_clearly, when

containers_app = typer.Typer(no_args_is_help=True, help="List, create, remove containers; read their logs.")


@containers_app.command("ls")
def list_containers(limit: Annotated[int | None, typer.Option(help="Show at most this many.")] = None,
                    as_json: Annotated[bool, typer.Option("--json", help="The container objects.")] = False) -> None:
    """The project's containers, newest first."""
    from cove.sdk import Sandbox

    with failing_clearly():
        found = Sandbox.list(limit=limit)
    if as_json:
        console.print_json(json.dumps([info.raw for info in found]))
        return
    table = Table("ID", "NAME", "STATUS", "IMAGE", "MEMORY", "CREATED", "LAST ACTIVE", box=None)
    for info in found:
        table.add_row(info.sandbox_id, escape(info.name), info.status, escape(info.image or "-"),
                      str(info.raw.get("memory_limit", "-")), when(info.created_at),
                      when(info.raw.get("last_active_at")))
    console.print(table)


@containers_app.command("create")
def create(name: Annotated[str, typer.Option(help="Its name.")] = "cli",
           image: Annotated[str | None, typer.Option(help="The image (default: the server's).")] = None,
           memory: Annotated[str | None, typer.Option(help="1g, 4g, 16g or 64g.")] = None,
           cpus: Annotated[float | None, typer.Option(help="CPUs it may use.")] = None,
           allow: Annotated[list[str] | None, typer.Option(help="A domain it may reach (repeat); none: "
                                                           "no network.")] = None,
           idle_minutes: Annotated[int | None, typer.Option(help="Minutes unused before it expires.")] = None,
           snapshot: Annotated[str | None, typer.Option(help="Start with this snapshot's files.")] = None) -> None:
    """Makes a container and prints its id (keep it: the container lives until removed or idle)."""
    from cove.sdk import Sandbox

    with failing_clearly():
        sandbox = Sandbox(image, name=name, memory_limit=memory, cpu_limit=cpus, network=allow or None,
                          timeout=None if idle_minutes is None else idle_minutes * 60, snapshot_id=snapshot)
        sandbox.close()
    typer.echo(sandbox.sandbox_id)


@containers_app.command("rm")
def remove(container_ids: Annotated[list[str], typer.Argument(help="Container ids.")]) -> None:
    """Removes containers (processes, files, disk)."""
    from cove.sdk import SandboxError
    from cove.sdk.client import Client

    missing = False
    with failing_clearly(), Client() as client:
        for container_id in container_ids:
            try:
                client.delete(f"/containers/{container_id}")
                console.print(f"Removed {container_id}")
            except SandboxError as exc:  # one unknown id does not stop the others
                console.print(f"[red]Error:[/red] {escape(str(exc))}")
                missing = True
    if missing:
        raise typer.Exit(1)


def _line(event: dict[str, Any]) -> str:
    kind = event.get("type")
    if kind == "command":
        outcome = event.get("outcome") or {}
        result = f"exit {outcome['exit_code']}" if outcome.get("type") == "exit" else outcome.get("type", "?")
        return f"$ {event.get('command')}  [{result}, {event.get('duration_ms', '?')} ms]"
    if kind == "terminal":
        return (f"terminal {event.get('command') or '(shell)'} {event.get('cols')}x{event.get('rows')}  "
                f"[exit {event.get('exit_code')}, {event.get('duration_ms', '?')} ms]")
    if kind == "egress":
        verdict = "allowed" if event.get("allowed") else f"refused ({event.get('reason')})"
        return f"egress {event.get('method')} {event.get('host')}:{event.get('port')} {verdict}"
    return f"{kind} {json.dumps({k: v for k, v in event.items() if k not in ('id', 'object', 'type')})}"


FOLLOW_SECONDS = 0.5
"""How often ``logs --follow`` asks for new events."""


def _show(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(event))
        return
    response = f" {event['response_id']}" if event.get("response_id") else ""
    console.print(f"[dim]{when(event.get('created_at'))}{response}[/dim] {escape(_line(event))}",
                  highlight=False, soft_wrap=True)


@containers_app.command("logs")
def logs(container_id: Annotated[str, typer.Argument(help="A container id.")],
         limit: Annotated[int, typer.Option(help="The newest this many events.")] = 100,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Then print new events as they happen, "
                                              "until Ctrl-C or the container is removed.")] = False,
         as_json: Annotated[bool, typer.Option("--json", help="The audit event objects, one JSON per "
                                               "line.")] = False) -> None:
    """What happened in a container, oldest first: each command (with its response, outcome and
    duration), egress decision, computer action and live view (its audit trail)."""
    from cove.sdk import NotFoundError
    from cove.sdk.client import Client

    path = f"/containers/{container_id}/audit"
    with failing_clearly(), Client() as client:
        events = list(client.pages(path, limit=limit))[::-1]
        for event in events:
            _show(event, as_json)
        last = events[-1]["id"] if events else None
        while follow:
            time.sleep(FOLLOW_SECONDS)
            try:
                events = list(client.pages(path, order="asc", after=last))
            except NotFoundError:
                console.print(f"[dim]{container_id} was removed[/dim]")
                return
            for event in events:
                _show(event, as_json)
                last = event["id"]
