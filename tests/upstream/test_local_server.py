"""The README's hosted-tool example as a new user runs it after ``make run``: no upstream configured,
so the embedded model answers, through the official SDK, against a real server and container."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Server, data_dir

pytestmark = pytest.mark.root

SHELL: Any = {"type": "shell", "environment": {"type": "container_auto"}}


@pytest.fixture(scope="module")
def embedded() -> Iterator[Server]:
    """A server with no upstream: every model name goes to the embedded model."""
    srv = Server(data_dir("cove-embedded"))
    for name in ("COVE_UPSTREAM_URL", "COVE_MODELS_FILE", "COVE_LOCAL_MAX_TOOL_TURNS"):
        srv.env.pop(name, None)
    srv.start()
    yield srv
    srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


def commands(response: Any) -> list[list[str]]:
    return [item.action.commands for item in response.output if item.type == "shell_call"]


def test_the_readme_shell_example_completes_with_an_answer(embedded: Server) -> None:
    client = embedded.client()
    started = time.monotonic()
    r = client.responses.create(model="my-model", input="Make a venv and install nothing; show python3 -V",
                                tools=[SHELL])
    took = time.monotonic() - started
    assert r.status == "completed", (r.status, r.incomplete_details, r.error)
    assert r.model_extra is not None and str(r.model_extra["container_id"]).startswith("cntr_")
    assert commands(r) == [["python3 -V"]]  # the command in the user's words, run once
    ran = next(item.model_dump() for item in r.output if item.type == "shell_call_output")
    assert ran["output"][0]["stdout"].startswith("Python 3.")
    assert r.output[-1].type == "message" and r.output_text == f"It printed: {ran['output'][0]['stdout'].strip()}"
    assert took < 120, took  # seconds when idle; generous for a loaded 2-core machine


def test_hosted_calls_stop_after_a_few_rounds(embedded: Server) -> None:
    """With no command in the user's words the model picks its own, for at most
    ``COVE_LOCAL_MAX_TOOL_TURNS`` (3) rounds; then it must answer from what they printed."""
    client = embedded.client()
    r = client.responses.create(model="my-model", input="Look around this machine and tell me what you find.",
                                tools=[SHELL], tool_choice="required")  # "required" binds the first turn only
    assert r.status == "completed", (r.status, r.incomplete_details, r.error)
    assert 1 <= len(commands(r)) <= 3
    assert all(command and all(command) for command in commands(r))  # never an empty command list
    assert r.model_extra is not None and str(r.model_extra["container_id"]).startswith("cntr_")
    assert r.output[-1].type == "message" and r.output_text
