"""The ``cove`` command line: ``cove serve`` and ``cove image ...``."""

from __future__ import annotations

import typer

from cove.cli.image import image_app
from cove.cli.serve import serve

app = typer.Typer(no_args_is_help=True)
app.command()(serve)
app.add_typer(image_app, name="image")
