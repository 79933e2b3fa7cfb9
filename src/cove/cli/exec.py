"""``cove exec CONTAINER_ID -- CMD``: a command in a container, its output streamed to this terminal
and its exit code passed through (124 for a timeout, as ``timeout(1)`` answers)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from cove.cli.remote import failing_clearly

TIMEOUT_EXIT = 124


def _write(stream: str) -> Callable[[str], None]:
    out = sys.stdout if stream == "stdout" else sys.stderr

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    return write


def exec_(container_id: Annotated[str, typer.Argument(help="A container id.")],
          command: Annotated[list[str], typer.Argument(help="The command (after --); one word is run by the "
                                                       "shell as it is, several are quoted.")],
          env: Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE (repeat).")] = None,
          workdir: Annotated[str | None, typer.Option("--workdir", "-w", help="Where to run it.")] = None,
          timeout: Annotated[float, typer.Option(help="Seconds before it is killed (at most 3600).")] = 3600) -> None:
    """Runs a command in a container: its output streams here as it is made, and cove exits with its exit code."""
    from cove.sdk import CommandExitError, Sandbox

    line = command[0] if len(command) == 1 else shlex.join(command)
    envs = dict(item.split("=", 1) for item in env or [] if "=" in item)
    with failing_clearly():
        sandbox = Sandbox.connect(container_id)
        try:
            sandbox.commands.run(line, envs=envs, cwd=workdir, timeout=timeout, on_stdout=_write("stdout"),
                                 on_stderr=_write("stderr"))
        except CommandExitError as exc:
            raise typer.Exit(TIMEOUT_EXIT if exc.timed_out else exc.exit_code or 1) from None
        finally:
            sandbox.close()
