"""``cove images`` (also ``cove image``): build, list, import and remove the images containers start from."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cove.config import Settings
from cove.errors import CoveError
from cove.sandbox.images.store import ImageStore

image_app = typer.Typer(no_args_is_help=True, help="Build, list, import and remove images.")
console = Console()


def _store() -> tuple[ImageStore, Settings]:
    settings = Settings()
    return ImageStore(settings.image_root, settings.subuid_base), settings


_STEP = re.compile(r"\b(?:step|layer) (\d+)/(\d+)")
"""How builds (``step 2/5: ...``) and imports (``layer 3/7: ...``) say how far they are."""


@contextmanager
def _progress(title: str) -> Iterator[Callable[[str], None]]:
    """A progress bar over the build's steps or the import's layers (a spinner until the first one
    is announced), with the streamed output scrolling above it."""
    started = time.monotonic()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(escape(title), total=None)

        def show(line: str) -> None:
            bar.console.print(line, style="dim", markup=False, highlight=False, soft_wrap=True)
            step = _STEP.search(line)
            if step is not None:
                done, total = int(step.group(1)) - 1 + line.endswith("(cached)"), int(step.group(2))
                bar.update(task, completed=done, total=total, description=escape(f"{title}: {line[:60]}"))

        try:
            yield show
        except CoveError as exc:
            console.print(f"[red]Error:[/red] {escape(exc.message)}")
            raise typer.Exit(1) from None
        bar.update(task, completed=bar.tasks[0].total or 1, total=bar.tasks[0].total or 1)
    console.print(f"[green]Done[/green] in {time.monotonic() - started:.1f} s")


@image_app.command()
def build(
    name: Annotated[str, typer.Argument(help="Image name.")] = "default",
    recipe: Annotated[Path | None, typer.Option("--from", help="A TOML recipe; without it, build "
                                                "the default Debian image.")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build again, ignoring the existing "
                                          "image and cached steps.")] = False,
) -> None:
    """Build the default Debian image, the desktop image (name ``desktop``), or an image from a recipe."""
    store, settings = _store()
    with _progress(f"Building image {name!r}") as progress:
        if recipe is None and name == "desktop":
            from cove.sandbox.images.desktop import build_desktop_image

            image = build_desktop_image(store, progress, data_dir=settings.data_dir, rebuild=rebuild,
                                        sources=settings.apt_sources)
        elif recipe is None:
            from cove.sandbox.images.debian import build_default_image

            image = build_default_image(store, progress, name=name, rebuild=rebuild, sources=settings.apt_sources)
        else:
            from cove.sandbox.images.recipe import build_recipe

            image = build_recipe(store, name, recipe, data_dir=settings.data_dir, progress=progress,
                                 rebuild=rebuild)
    console.print(f"Image {image.name!r}: {len(image.layers)} layers, {human_size(image.size_bytes)}")


@image_app.command("import")
def import_(name: Annotated[str, typer.Argument(help="Image name.")],
            tarball: Annotated[Path, typer.Argument(help="A docker save tar or an OCI layout tar.")]) -> None:
    """Import an image from a docker save archive or an OCI image layout."""
    from cove.sandbox.images.oci import import_archive

    store, _ = _store()
    with _progress(f"Importing {tarball.name} as {name!r}") as progress:
        image = import_archive(store, name, tarball, progress)
    console.print(f"Image {image.name!r}: {len(image.layers)} layers, {human_size(image.size_bytes)}")


@image_app.command("ls")
def list_images() -> None:
    """List images."""
    store, _ = _store()
    table = Table("NAME", "SOURCE", "LAYERS", "SIZE", "CREATED", box=None)
    for image in store.list():
        created = datetime.fromtimestamp(image.created_at).strftime("%Y-%m-%d %H:%M")
        table.add_row(image.name, image.source, str(len(image.layers)), human_size(image.size_bytes),
                      created)
    console.print(table)


@image_app.command("rm")
def remove(name: Annotated[str, typer.Argument(help="Image name.")]) -> None:
    """Remove an image (and the layers no other image uses)."""
    store, _ = _store()
    try:
        store.delete(name)
    except CoveError as exc:
        console.print(f"[red]Error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None
    console.print(f"Removed {name!r}")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
