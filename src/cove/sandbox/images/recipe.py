"""Custom images from a TOML recipe: a Cove base image plus steps, each step one cached layer.

A step's cache key hashes its parent's key, the step itself, the env and workdir it runs with,
and for ``copy`` the copied content and modes; so editing the last step of a recipe reruns only
that step. The key names a cache entry rather than the layer itself, which lets ``rebuild`` make
fresh layers without touching ones that existing images (and their containers) still use.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import stat
import time
import tomllib
import uuid
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cove.errors import ImageError, InvalidRequest
from cove.sandbox.images.layers import lookup, resolve
from cove.sandbox.images.runner import Progress, match_root, run_step
from cove.sandbox.images.store import Image, ImageStore, remove_tree, validate_name

_APT_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]*([=/][A-Za-z0-9.+~:-]+)?$")


class CopyAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    src: str
    """Relative to the recipe's folder, which it may not leave."""
    dest: str
    """Absolute path in the image; a trailing ``/`` puts a copied file inside it."""

    @field_validator("dest")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or ".." in value.split("/"):
            raise ValueError("dest must be an absolute path without '..'")
        return value


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    apt: list[str] | None = None
    pip: list[str] | None = None
    run: str | None = None
    copy_: CopyAction | None = Field(default=None, alias="copy")

    @field_validator("apt")
    @classmethod
    def _apt(cls, value: list[str] | None) -> list[str] | None:
        # The names go into a shell command line: only Debian package syntax is accepted.
        if value is not None and (not value or not all(_APT_PACKAGE.match(p) for p in value)):
            raise ValueError(f"needs Debian package names (name, name=version), got {value}")
        return value

    @field_validator("pip")
    @classmethod
    def _pip(cls, value: list[str] | None) -> list[str] | None:
        # Passed as separate arguments (no shell); options belong in a run step.
        if value is not None and (not value or any(not p.strip() or p.startswith("-") for p in value)):
            raise ValueError(f"needs requirement specifiers, got {value}")
        return value

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [k for k in ("apt", "pip", "run", "copy_") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("each step needs exactly one of apt, pip, run, copy")
        return self

    def describe(self) -> str:
        if self.copy_ is not None:
            return f"copy {self.copy_.src} -> {self.copy_.dest}"
        if self.run is not None:
            return f"run {self.run.splitlines()[0] if self.run else ''}"
        return f"apt {' '.join(self.apt)}" if self.apt else f"pip {' '.join(self.pip or [])}"


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    base: str = Field(alias="from")
    """A Cove image name."""
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    steps: list[Step] = Field(default_factory=list, alias="step")

    @field_validator("workdir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("workdir must be an absolute path")
        return value


def load_recipe(path: Path) -> Recipe:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidRequest(f"Cannot read recipe {path}: {exc}", param="recipe") from exc
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = list(err["loc"])
            where = ".".join(str(p) for p in loc) or "recipe"
            if len(loc) >= 2 and loc[0] == "step" and isinstance(loc[1], int):
                rest = ".".join(str(p) for p in loc[2:])
                where = f"step {loc[1] + 1}" + (f" ({rest})" if rest else "")
            problems.append(f"{where}: {err['msg']}")
        raise InvalidRequest(f"Invalid recipe {path.name}: " + "; ".join(problems),
                             param="recipe") from None


def build_recipe(store: ImageStore, name: str, recipe_path: Path, *, data_dir: Path,
                 progress: Progress, rebuild: bool = False, source: str = "recipe") -> Image:
    """Build ``name`` from the recipe, reusing cached step layers unless ``rebuild``; ``source`` is
    what the manifest says it came from (a built-in recipe names itself and its inputs)."""
    validate_name(name)
    recipe = load_recipe(recipe_path)
    if recipe.base == name:
        raise InvalidRequest(f"A recipe cannot replace its own base image {name!r}: choose another name",
                             param="image")
    folder = recipe_path.resolve().parent
    base = store.get(recipe.base)
    env = _merge_env(base.env, recipe.env)
    workdir = recipe.workdir or base.workdir
    layers = list(base.layers)
    parent = hashlib.sha256("\0".join(p.name for p in base.layers).encode()).hexdigest()
    with store.building():
        for i, step in enumerate(recipe.steps, 1):
            label = f"step {i}/{len(recipe.steps)}: {step.describe()}"
            parent = _step_key(parent, step, env, workdir, folder)
            layer = None if rebuild else store.cached_layer(parent)
            if layer is None:
                progress(label)
                layer = _build_step(store, data_dir, layers, step, env, workdir, folder, progress)
                store.cache_layer(parent, layer)
            else:
                progress(f"{label} (cached)")
            layers.append(store.layer_path(layer))
        keys = [p.name for p in base.layers] + [p.name for p in layers[len(base.layers):]
                                                if any(p.iterdir())]
        return store.save(name, keys, env, workdir, source)


def _merge_env(env: tuple[str, ...], extra: dict[str, str]) -> list[str]:
    merged = dict(e.split("=", 1) for e in env if "=" in e)
    merged.update(extra)
    return [f"{k}={v}" for k, v in merged.items()]


def _step_key(parent: str, step: Step, env: list[str], workdir: str, folder: Path) -> str:
    doc = step.model_dump(by_alias=True, exclude_none=True)
    context = {"step": doc, "env": env, "workdir": workdir}
    if step.copy_ is not None:
        context["content"] = content_hash(_copy_source(folder, step.copy_.src))
    canonical = json.dumps(context, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{parent}\0{canonical}".encode()).hexdigest()


def _copy_source(folder: Path, src: str) -> Path:
    path = folder / src
    if src.startswith("/") or not path.exists():
        raise InvalidRequest(f"copy source {src!r} must exist inside {folder}", param="recipe")
    real = path.resolve()
    if not real.is_relative_to(folder):
        raise InvalidRequest(f"copy source {src!r} leaves the recipe's folder", param="recipe")
    return real


def _build_step(store: ImageStore, data_dir: Path, layers: list[Path], step: Step, env: list[str],
                workdir: str, folder: Path, progress: Progress) -> str:
    work = store.new_tmp("step-")
    try:
        upper = store.new_layer_dir(work)
        if step.copy_ is not None:
            src = _copy_source(folder, step.copy_.src)
            copy_into(layers, upper, src, step.copy_.dest, store.uid_base, progress)
        else:
            run_step(store, data_dir, layers, upper, args=_command(step, layers), env=env,
                     cwd=workdir, progress=progress)
        key = hashlib.sha256(f"{time.time_ns()}\0{uuid.uuid4()}".encode()).hexdigest()
        store.commit_layer(upper, key)
        return key
    finally:
        remove_tree(work)


def _command(step: Step, layers: list[Path]) -> list[str]:
    if step.pip:
        return ["python3", "-m", "pip", "install", "--no-cache-dir", *step.pip]
    shell = _shell(layers)
    if step.apt:
        packages = " ".join(step.apt)  # validated: nothing in them for the shell to expand
        return [*shell, f"apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
                        f"--no-install-recommends {packages} && rm -rf /var/lib/apt/lists/*"]
    if step.run is None:
        raise ImageError("step has nothing to run")
    return [*shell, step.run]


def _shell(layers: list[Path]) -> list[str]:
    """The image's /bin/sh, or the bundled busybox for images without one."""
    path = resolve(layers, "/bin/sh")
    st = lookup(layers, path) if path else None
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
        return ["/bin/sh", "-c"]
    return ["/.cove/busybox", "sh", "-c"]


def content_hash(src: Path) -> str:
    """Hash of what a copy step copies: names, types, modes, file bytes and link targets."""
    sha = hashlib.sha256()
    for rel, st in _walk(src):
        sha.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            sha.update(os.readlink(src / rel if rel else src).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(src / rel if rel else src, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    sha.update(chunk)
        sha.update(b"\0")
    return sha.hexdigest()


def _walk(src: Path) -> list[tuple[str, os.stat_result]]:
    """``src`` and everything below it, sorted, never following symlinks."""
    entries = [("", src.lstat())]
    if stat.S_ISDIR(entries[0][1].st_mode):
        for dirpath, dirnames, filenames in os.walk(src):
            for name in (*dirnames, *filenames):
                path = Path(dirpath) / name
                entries.append((str(path.relative_to(src)), path.lstat()))
    return sorted(entries, key=lambda e: e[0])


def copy_into(layers: list[Path], upper: Path, src: Path, dest: str, uid_base: int,
              progress: Progress) -> None:
    """Copy ``src`` (a file, or a folder's content) to ``dest`` in a new layer, owned by
    container root. Symlinks are copied as symlinks, never followed; parent directories get the
    attributes the image already gives them, and symlinks in ``dest`` are followed as in the
    container (``/bin`` -> ``usr/bin``)."""
    match_root(layers, upper)
    if not src.is_dir():
        dest = posixpath.join(dest, src.name) if dest.endswith("/") else dest
    target = _resolve_dest(layers, posixpath.normpath(dest))
    parts = [p for p in target.split("/") if p]
    for depth in range(1, len(parts)):
        rel = "/".join(parts[:depth])
        st = lookup(layers, rel)
        (upper / rel).mkdir(mode=0o755)
        owner = (st.st_uid, st.st_gid) if st else (uid_base, uid_base)
        os.chown(upper / rel, *owner)
        os.chmod(upper / rel, stat.S_IMODE(st.st_mode) if st else 0o755)
    root = upper.joinpath(*parts) if parts else upper
    for rel, st in _walk(src):
        source, path = (src / rel, root / rel) if rel else (src, root)
        if stat.S_ISDIR(st.st_mode):
            path.mkdir(exist_ok=True)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), path)
        elif stat.S_ISREG(st.st_mode):
            with open(source, "rb") as fin, open(path, "xb") as fout:
                while chunk := fin.read(1 << 20):
                    fout.write(chunk)
        else:
            progress(f"skipping {source}: not a file, folder or symlink")
            continue
        if path == upper:
            continue  # a folder copied to / leaves the image root as it is
        os.chown(path, uid_base, uid_base, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid


def _resolve_dest(layers: list[Path], dest: str) -> str:
    """``dest`` with the part that exists in the image resolved as the container would."""
    parts = [p for p in dest.split("/") if p]
    for depth in range(len(parts), -1, -1):
        found = resolve(layers, "/" + "/".join(parts[:depth]))
        if found is not None:
            if depth < len(parts):
                st = lookup(layers, found)
                if st is None or not stat.S_ISDIR(st.st_mode):
                    raise ImageError(f"copy destination {dest}: {found} is not a directory")
            return posixpath.join(found, *parts[depth:])
    return dest
