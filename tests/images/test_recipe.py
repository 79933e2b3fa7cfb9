"""Recipes: validation, run and copy steps, and the per-step layer cache."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cove.config import Settings
from cove.errors import ImageError, InvalidRequest
from cove.sandbox.images.oci import import_archive
from cove.sandbox.images.recipe import build_recipe, load_recipe
from cove.sandbox.images.store import Image, ImageStore
from cove.sandbox.linux.overlay import mounts_under
from tests.images.archives import directory, docker_save, file, layer_tar
from tests.images.conftest import UID_BASE
from tests.images.helpers import mounted, run_in

pytestmark = pytest.mark.root

RECIPE = """
from = "bb"
env = { FOO = "bar" }
workdir = "/work"

[[step]]
run = "echo $FOO > /etc/foo; pwd > /etc/pwd"

[[step]]
copy = { src = "app/", dest = "/opt/app" }

[[step]]
copy = { src = "tool.sh", dest = "/lib/" }

[[step]]
run = "cat /opt/app/main.py > /etc/copied && echo LAST"
"""


class Log(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)

    def steps(self) -> list[str]:
        return [line for line in self if line.startswith("step ")]


def make_project(path: Path, recipe: str = RECIPE) -> Path:
    (path / "app/pkg").mkdir(parents=True)
    (path / "app/main.py").write_text("print('hi')\n")
    (path / "app/main.py").chmod(0o755)
    (path / "app/pkg/data.txt").write_text("data\n")
    (path / "app/passwd-link").symlink_to("/etc/passwd")  # copied as a link, never followed
    (path / "tool.sh").write_text("#!/bin/sh\n")
    (path / "recipe.toml").write_text(recipe)
    return path / "recipe.toml"


def layer_ids(image: Image) -> list[tuple[int, int]]:
    return [(p.stat().st_ino, p.stat().st_ctime_ns) for p in image.layers]


def build(store: ImageStore, data_dir: Path, name: str, recipe: Path, **kw: bool) -> tuple[Image, Log]:
    log = Log()
    return build_recipe(store, name, recipe, data_dir=data_dir, progress=log, **kw), log


def test_run_and_copy_steps(store: ImageStore, data_dir: Path, busybox_image: Image, tmp_path: Path) -> None:
    image, log = build(store, data_dir, "custom", make_project(tmp_path))
    assert image.source == "recipe" and image.workdir == "/work"
    assert "FOO=bar" in image.env and "GREETING=hi" in image.env
    assert image.layers[:3] == busybox_image.layers and len(image.layers) == 7
    assert "LAST" in log
    with mounted(store, image) as root:
        assert (root / "etc/foo").read_text() == "bar\n"
        assert (root / "etc/pwd").read_text() == "/work\n"  # steps run in the recipe's workdir
        main = (root / "opt/app/main.py").lstat()
        assert (main.st_uid, stat.S_IMODE(main.st_mode)) == (UID_BASE, 0o755)
        assert (root / "opt/app/pkg/data.txt").read_text() == "data\n"
        assert os.readlink(root / "opt/app/passwd-link") == "/etc/passwd"
        assert (root / "etc/copied").read_text() == "print('hi')\n"
        # /lib is a symlink to usr/lib in the base: the copy follows it and keeps the link.
        assert os.readlink(root / "lib") == "usr/lib" and (root / "usr/lib/tool.sh").is_file()
        # Mount-point scaffolding for runc is not left in the layers.
        assert not any((layer / name).exists() for layer in image.layers[3:] for name in (".cove", "proc", "dev"))
        assert not (root / "etc/resolv.conf").exists()
    assert run_in(store, data_dir, image, "/bin/sh", "-c", "echo $FOO; ls /opt/app") == [
        "bar", "main.py", "passwd-link", "pkg"]


def test_cache_reuses_layers_and_reruns_only_what_changed(
        store: ImageStore, data_dir: Path, busybox_image: Image, tmp_path: Path) -> None:
    recipe = make_project(tmp_path)
    first, _ = build(store, data_dir, "cached", recipe)
    again, log = build(store, data_dir, "cached", recipe)
    assert all(line.endswith("(cached)") for line in log.steps()) and len(log.steps()) == 4
    assert "LAST" not in log and layer_ids(again) == layer_ids(first)

    recipe.write_text(RECIPE.replace("echo LAST", "echo CHANGED"))
    changed, log = build(store, data_dir, "cached", recipe)
    assert [line.endswith("(cached)") for line in log.steps()] == [True, True, True, False]
    assert "CHANGED" in log
    assert layer_ids(changed)[:-1] == layer_ids(first)[:-1] and changed.layers[-1] != first.layers[-1]

    # A copied file's mode is part of the key: that copy step and all after it run again.
    (tmp_path / "app/pkg/data.txt").chmod(0o600)
    _, log = build(store, data_dir, "cached", recipe)
    assert [line.endswith("(cached)") for line in log.steps()] == [True, False, False, False]

    _, log = build(store, data_dir, "cached", recipe, rebuild=True)
    assert not any(line.endswith("(cached)") for line in log.steps())


def test_copy_may_not_leave_the_recipe_folder(store: ImageStore, data_dir: Path, busybox_image: Image,
                                              tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    project = tmp_path / "project"
    project.mkdir()
    (project / "sneaky").symlink_to(tmp_path)
    for src in ("../outside.txt", "/etc/passwd", "sneaky/outside.txt", "missing"):
        recipe = project / "recipe.toml"
        recipe.write_text(f'from = "bb"\n[[step]]\ncopy = {{ src = "{src}", dest = "/x" }}\n')
        with pytest.raises(InvalidRequest, match="copy source"):
            build(store, data_dir, "escape", recipe)
    assert not store.exists("escape")


@pytest.mark.parametrize(("text", "message"), [
    ('from = "bb"\n[[step]]\nrun = "x"\n[[step]]\nrun = "y"\npip = ["z"]\n', "step 2: .*exactly one"),
    ('from = "bb"\n[[step]]\nrun = "x"\nshell = "bash"\n', r"step 1 \(shell\): Extra inputs"),
    ('from = "bb"\n[[step]]\n', "step 1: .*exactly one"),
    ('[[step]]\nrun = "x"\n', "from: Field required"),
    ('from = "bb"\n[[step]]\napt = ["vim; rm -rf /"]\n', r"step 1 \(apt\)"),
    ('from = "bb"\n[[step]]\ncopy = { src = "a", dest = "rel" }\n', r"step 1 \(copy.dest\)"),
    ('from = "bb"\nworkdir = "relative"\n', "workdir"),
    ('from = "bb"\n[[step]\n', "Cannot read recipe"),
])
def test_invalid_recipes_name_the_step(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(InvalidRequest, match=message):
        load_recipe(tmp_path / "r.toml")


def test_failed_step_reports_output_and_cleans_up(store: ImageStore, data_dir: Path, busybox_image: Image,
                                                  tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text('from = "bb"\n[[step]]\nrun = "echo boom >&2; exit 7"\n')
    layers = set(store.layers_dir.iterdir())
    with pytest.raises(ImageError, match=r"(?s)exit status 7.*boom"):
        build(store, data_dir, "broken", tmp_path / "r.toml")
    assert not store.exists("broken") and set(store.layers_dir.iterdir()) == layers
    assert mounts_under(store.root) == [] and list(store.tmp_dir.iterdir()) == []
    with pytest.raises(InvalidRequest):
        build(store, data_dir, "Bad Name", tmp_path / "r.toml")
    with pytest.raises(InvalidRequest, match="its own base"):
        build(store, data_dir, "bb", tmp_path / "r.toml")


def test_run_step_without_a_shell_in_the_image(store: ImageStore, data_dir: Path, tmp_path: Path) -> None:
    busybox = file("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)
    bare = layer_tar([directory("bin"), directory("etc"), busybox])
    import_archive(store, "bare-recipe", docker_save(tmp_path / "bare.tar", [bare]), print)
    (tmp_path / "r.toml").write_text('from = "bare-recipe"\n[[step]]\nrun = "echo made > /etc/made"\n')
    image, _ = build(store, data_dir, "bare-built", tmp_path / "r.toml")
    with mounted(store, image) as root:
        assert (root / "etc/made").read_text() == "made\n"
        assert not (root / "bin/sh").exists()


@pytest.mark.slow
def test_pip_and_apt_on_the_default_image(store: ImageStore, data_dir: Path, tmp_path: Path) -> None:
    """Needs network and the default image in the configured image store; the store under test
    borrows its layers through symlinks."""
    real = Settings().image_root
    if not (real / "manifests/default.json").exists():
        pytest.skip(f"no default image in {real}")
    from cove.sandbox.images.store import ImageStore as Store

    default = Store(real, UID_BASE).get("default")
    for layer in default.layers:
        if not (store.layers_dir / layer.name).exists():
            (store.layers_dir / layer.name).symlink_to(layer)
    store.save("debian", [p.name for p in default.layers], default.env, default.workdir, "debian")
    (tmp_path / "r.toml").write_text("""from = "debian"
[[step]]
pip = ["six==1.16.0"]
[[step]]
apt = ["file"]
[[step]]
run = "python3 -c 'import six; print(six.__version__)' > /six && file --version | head -1 > /file"
""")
    image, _ = build(store, data_dir, "debian-plus", tmp_path / "r.toml")
    with mounted(store, image) as root:
        assert (root / "six").read_text() == "1.16.0\n"
        assert (root / "file").read_text().startswith("file-")
        assert not list((root / "var/lib/apt/lists").glob("*_Packages"))
