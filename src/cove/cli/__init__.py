"""The ``cove`` command."""

import typer

from cove.cli.audit import audit
from cove.cli.containers import containers_app
from cove.cli.cp import cp
from cove.cli.exec import exec_
from cove.cli.fleet import fleet_app
from cove.cli.image import image_app
from cove.cli.responses import responses_app
from cove.cli.search import search_app
from cove.cli.serve import serve
from cove.cli.shell import shell

app = typer.Typer(no_args_is_help=True, help="Cove: a self-hosted agent runtime.")
app.command()(serve)
app.command()(audit)
app.command()(shell)
app.add_typer(image_app, name="images")
app.add_typer(image_app, name="image", hidden=True)  # the name before `cove images`, kept for scripts
app.add_typer(containers_app, name="containers")
app.add_typer(responses_app, name="responses")
app.command("exec")(exec_)
app.command()(cp)
app.add_typer(search_app, name="search")
app.add_typer(fleet_app, name="fleet")


@app.callback()
def main() -> None:
    """Cove: a self-hosted agent runtime (OpenAI-compatible Responses and Containers APIs)."""
