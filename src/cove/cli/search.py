"""``cove search``: build the offline indexes the ``index:NAME`` web search engine answers from."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cove.cli.image import human_size
from cove.config import Settings
from cove.errors import CoveError
from cove.search.spec import check_name

search_app = typer.Typer(no_args_is_help=True, help="Offline web search indexes.")
console = Console()


@search_app.command("index")
def index(
    name: Annotated[str, typer.Argument(help="Index name, used as COVE_WEB_SEARCH=index:NAME.")],
    paths: Annotated[list[Path], typer.Argument(help="Directories of HTML, Markdown, text and PDF files, "
                                                "and ZIM archives.")],
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Processes extracting text; default: "
                                                "one per CPU but one, which the index writer uses.")] = None,
) -> None:
    """Build (or rebuild, replacing it whole when done) the offline index NAME from PATHs."""
    from cove.search.build import build, default_workers, plan

    settings = Settings()
    started = time.monotonic()
    try:
        check_name(name)
        with console.status("Looking for documents"):
            work = plan(paths)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(f"Indexing {name}", total=work.total)

            def advance(done: int, _what: str) -> None:
                if done % 64 == 0 or done == work.total:
                    progress.update(task, completed=done)

            built = build(settings.data_dir, name, work, advance, workers or default_workers())
            progress.update(task, completed=work.total)
    except CoveError as exc:
        console.print(f"[red]Error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None
    console.print(f"Index {built.name!r}: {built.documents} documents ({built.skipped} entries skipped) in "
                  f"{time.monotonic() - started:.1f} s, at {escape(str(built.path))}")


@search_app.command("ls")
def list_() -> None:
    """List the offline indexes."""
    from cove.search.indexes import list_indexes

    table = Table("NAME", "DOCUMENTS", "SIZE", "BUILT", box=None)
    for info in list_indexes(Settings().data_dir):
        table.add_row(info.name, f"{info.documents:,}", human_size(info.size_bytes),
                      datetime.fromtimestamp(info.built_at).strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@search_app.command("rm")
def remove(name: Annotated[str, typer.Argument(help="Index name.")]) -> None:
    """Remove an offline index (a server using it answers that it is missing from its next query)."""
    from cove.search.indexes import remove_index

    try:
        remove_index(Settings().data_dir, name)
    except CoveError as exc:
        console.print(f"[red]Error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None
    console.print(f"Removed {name!r}")
