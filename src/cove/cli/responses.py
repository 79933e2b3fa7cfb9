"""``cove responses ls|show``: a project's responses and one response's whole trajectory."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cove.cli import trajectory
from cove.cli.remote import console, failing_clearly, when

if TYPE_CHECKING:
    from cove.sdk.client import Client

responses_app = typer.Typer(no_args_is_help=True, help="List responses; show one's trajectory.")
INCLUDE = ["code_interpreter_call.outputs", "web_search_call.action.sources", "reasoning.encrypted_content"]


@responses_app.command("ls")
def list_responses(limit: Annotated[int, typer.Option(help="The newest this many.")] = 20,
                   as_json: Annotated[bool, typer.Option("--json", help="The response objects.")] = False) -> None:
    """The project's stored responses, newest first, with status, model and tokens."""
    from cove.sdk.client import Client

    with failing_clearly(), Client() as client:
        found = list(client.pages("/responses", limit=limit))
    if as_json:
        console.print_json(json.dumps(found))
        return
    table = Table("ID", "STATUS", "MODEL", "CREATED", "SECONDS", "TOKENS IN", "TOKENS OUT", box=None)
    for response in found:
        usage = response.get("usage") or {}
        created, completed = response.get("created_at"), response.get("completed_at")
        table.add_row(response["id"], response.get("status", ""), escape(str(response.get("model", ""))),
                      when(created), f"{completed - created:.0f}" if created and completed else "-",
                      str(usage.get("input_tokens", "-")), str(usage.get("output_tokens", "-")))
    console.print(table)


def _containers(response: dict[str, Any]) -> set[str]:
    """Containers the response used: its own and any an item names."""
    found = {response["container_id"]} if response.get("container_id") else set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("container_id"), str):
                found.add(value["container_id"])
            for inner in value.values():
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(response.get("output"))
    return found


RUNNING = ("queued", "in_progress")
ENDS = ("response.completed", "response.failed", "response.incomplete")


def _follow(client: Client, response_id: str, inputs: list[dict[str, Any]], full: bool) -> None:
    """A running background response live: its input, each output item as it is done (no timings:
    the audit trail has them once the command ends), then its header once it ends."""
    for part in trajectory.render_input(inputs, full):
        console.print(part)
    timings = trajectory.Timings([])
    for event in client.events(f"/responses/{response_id}", stream="true", include=INCLUDE):
        if event.get("type") == "response.output_item.done":
            console.print(trajectory.item(event["item"], timings, full))
        elif event.get("type") in ENDS:
            console.print(trajectory.header(event["response"]))


@responses_app.command("show")
def show(response_id: Annotated[str, typer.Argument(help="A response id.")],
         full: Annotated[bool, typer.Option("--full", help="Every line of every output.")] = False,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="A background response still running: "
                                              "print its items as they are done, until it ends.")] = False,
         as_json: Annotated[bool, typer.Option("--json", help="The response, its input items and its "
                                               "commands' audit events.")] = False) -> None:
    """A response's trajectory: input, then each output item in order; tool calls with what they ran,
    their output and duration; tokens and timings."""
    from cove.sdk import NotFoundError
    from cove.sdk.client import Client

    with failing_clearly(), Client() as client:
        response = client.get(f"/responses/{response_id}", include=INCLUDE)
        inputs = list(client.pages(f"/responses/{response_id}/input_items", order="asc"))
        if follow and not as_json and response.get("background") and response.get("status") in RUNNING:
            _follow(client, response_id, inputs, full)
            return
        audit = []
        for container_id in sorted(_containers(response)):
            try:
                events = client.pages(f"/containers/{container_id}/audit", order="asc")
                audit += [event for event in events if event.get("response_id") == response_id]
            except NotFoundError:  # a container deleted since: its timings are not shown
                continue
    if as_json:
        console.print_json(json.dumps({"response": response, "input_items": inputs, "audit": audit}))
        return
    for part in trajectory.render(response, inputs, audit, full):
        console.print(part)
