"""``cove cp``: copy files and directories between this machine and a container, either way.

One side is ``CONTAINER_ID:PATH`` (as ``docker cp`` writes it), the other a local path (``-`` for
stdout when downloading a file). Files go through the SDK's ``files``; a directory travels as a tar
archive (made and unpacked by Python's ``tarfile`` here, by ``tar`` in the container).
"""

from __future__ import annotations

import base64
import io
import posixpath
import secrets
import shlex
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cove.cli.remote import errors, failing_clearly

if TYPE_CHECKING:
    from cove.sdk import Sandbox


def _remote(arg: str) -> tuple[str, str] | None:
    """``(container_id, path)`` for ``ID:PATH``; None for a local path."""
    head, sep, tail = arg.partition(":")
    if not sep or "/" in head or not head:
        return None
    return head, tail or "."


def _is_dir(sandbox: Sandbox, path: str) -> bool:
    from cove.sdk import CommandExitError

    try:
        sandbox.commands.run(f"test -d {shlex.quote(path)}")
    except CommandExitError:
        return False
    return True


def _upload(source: Path, sandbox: Sandbox, target: str) -> None:
    if target.endswith("/") or _is_dir(sandbox, target):
        target = posixpath.join(target, source.name)
    if not source.is_dir():
        with source.open("rb") as handle:
            sandbox.files.write(target, handle)
        return
    staged = f"/tmp/.cove-cp-{secrets.token_hex(6)}.tar"
    with tempfile.TemporaryFile() as archive:  # on disk: a directory may be larger than memory
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(source, arcname=".")
        archive.seek(0)
        sandbox.files.write(staged, archive)
    sandbox.commands.run(f"mkdir -p {shlex.quote(target)} && tar -xf {staged} -C {shlex.quote(target)} "
                         "--no-same-owner; status=$?; rm -f " + staged + "; exit $status", timeout=3600)


def _download(sandbox: Sandbox, source: str, target: str) -> None:
    if not _is_dir(sandbox, source):
        data = sandbox.files.read(source, format="bytes")
        if target == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        path = Path(target)
        (path / posixpath.basename(source) if path.is_dir() else path).write_bytes(data)
        return
    if target == "-":
        errors.print(f"[red]Error:[/red] {source} is a directory: name a local directory to copy it to")
        raise typer.Exit(1)
    parent, name = posixpath.split(source.rstrip("/") or "/")
    packed = sandbox.commands.run(f"tar -C {shlex.quote(parent or '/')} -cf - {shlex.quote(name or '.')} | base64",
                                  timeout=3600).stdout
    path = Path(target)
    destination = path if path.is_dir() else path.parent
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(packed)), mode="r") as tar:
        if not path.is_dir():  # `cove cp ID:/dir ./new`: the directory's content lands in ./new
            path.mkdir(parents=True)
            destination = path
            for member in tar.getmembers():
                member.name = member.name.partition("/")[2] or "."
        tar.extractall(destination, filter="data")


def cp(source: Annotated[str, typer.Argument(help="CONTAINER_ID:PATH or a local path.")],
       target: Annotated[str, typer.Argument(help="A local path (- for stdout) or CONTAINER_ID:PATH.")]) -> None:
    """Copies a file or a directory into a container or out of one."""
    from cove.sdk import Sandbox

    remote_source, remote_target = _remote(source), _remote(target)
    if (remote_source is None) == (remote_target is None):
        errors.print("[red]Error:[/red] one side must be CONTAINER_ID:PATH and the other a local path")
        raise typer.Exit(2)
    with failing_clearly():
        if remote_target is not None:
            local = Path(source)
            if not local.exists():
                errors.print(f"[red]Error:[/red] no such file or directory: {source}")
                raise typer.Exit(1)
            sandbox = Sandbox.connect(remote_target[0])
            try:
                _upload(local, sandbox, remote_target[1])
            finally:
                sandbox.close()
        else:
            assert remote_source is not None
            sandbox = Sandbox.connect(remote_source[0])
            try:
                _download(sandbox, remote_source[1], target)
            finally:
                sandbox.close()
