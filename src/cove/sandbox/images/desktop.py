"""The desktop image: the built-in recipe ``desktop.toml`` on top of the default image.

It is an ordinary recipe (each step a cached layer) so that custom desktop images are recipes too,
``from = "desktop"``. The manifest's source names the recipe's text and the base layers it was built
on: ``cove image build desktop`` (and ``make image``) is a no-op while both are unchanged, and builds
again after the default image is rebuilt.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cove.sandbox.images.debian import build_default_image
from cove.sandbox.images.recipe import build_recipe, load_recipe
from cove.sandbox.images.runner import Progress
from cove.sandbox.images.store import Image, ImageStore

RECIPE = Path(__file__).with_name("desktop.toml")
NAME = "desktop"


def desktop_source(store: ImageStore) -> str:
    """``desktop:<digest of the recipe and the base image's layers>``."""
    base = store.get(load_recipe(RECIPE).base)
    inputs = "\0".join([RECIPE.read_text(), *(p.name for p in base.layers)])
    return f"desktop:{hashlib.sha256(inputs.encode()).hexdigest()[:12]}"


def build_desktop_image(store: ImageStore, progress: Progress, *, data_dir: Path, rebuild: bool = False,
                        sources: Path | None = None) -> Image:
    """Builds the default image if it is missing or outdated, then the desktop on it (a few minutes
    the first time: Chromium and its libraries are ~800 MB); a no-op when both are current."""
    build_default_image(store, progress, sources=sources)
    source = desktop_source(store)
    if store.exists(NAME) and not rebuild and store.get(NAME).source == source:
        progress(f"Image {NAME!r} already exists (rebuild to replace it)")
        return store.get(NAME)
    return build_recipe(store, NAME, RECIPE, data_dir=data_dir, progress=progress, rebuild=rebuild, source=source)
