"""The ``cove`` command."""

import typer

from cove.cli.audit import audit
from cove.cli.fleet import fleet_app
from cove.cli.image import image_app
from cove.cli.search import search_app
from cove.cli.serve import serve

app = typer.Typer(no_args_is_help=True, help="Cove: a self-hosted agent runtime.")
app.command()(serve)
app.command()(audit)
app.add_typer(image_app, name="image")
app.add_typer(search_app, name="search")
app.add_typer(fleet_app, name="fleet")


@app.callback()
def main() -> None:
    """Cove: a self-hosted agent runtime (OpenAI-compatible Responses and Containers APIs)."""
