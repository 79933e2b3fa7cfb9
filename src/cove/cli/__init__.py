"""The ``cove`` command."""

import typer

from cove.cli.serve import serve

app = typer.Typer(no_args_is_help=True, help="Cove: a self-hosted agent runtime.")
app.command()(serve)


@app.callback()
def main() -> None:
    """Cove: a self-hosted agent runtime (OpenAI-compatible Responses and Containers APIs)."""
