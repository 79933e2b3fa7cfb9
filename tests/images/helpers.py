"""Looking inside built images: mount them as overlays, or run a command in them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cove.sandbox.images.runner import match_root, run_step
from cove.sandbox.images.store import Image, ImageStore, remove_tree
from cove.sandbox.linux.overlay import mount_overlay, unmount


@contextmanager
def mounted(store: ImageStore, image: Image) -> Iterator[Path]:
    """The image's merged filesystem, read through a throwaway upper dir."""
    scratch = store.new_tmp("test-mount-")
    paths = [scratch / n for n in ("upper", "work", "root")]
    for p in paths:
        p.mkdir()
    match_root(image.layers, paths[0])  # an upper's root dir wins over the layers'
    mount_overlay(image.layers, *paths)
    try:
        yield paths[2]
    finally:
        unmount(paths[2])
        remove_tree(scratch)


def run_in(store: ImageStore, data_dir: Path, image: Image, *args: str) -> list[str]:
    """Runs ``args`` in the image (its changes are discarded); returns the output lines."""
    lines: list[str] = []
    scratch = store.new_tmp("test-run-")
    try:
        upper = store.new_layer_dir(scratch)
        run_step(store, data_dir, image.layers, upper, args=list(args), env=list(image.env),
                 cwd=image.workdir, progress=lines.append)
    finally:
        remove_tree(scratch)
    return lines
