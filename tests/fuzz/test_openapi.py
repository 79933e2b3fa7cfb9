"""Fuzzing every operation of ``/openapi.json`` against a real server: no 5xx, no hang, memory flat.

Schemathesis generates requests from the schema, valid ones (positive) and ones that break it
(negative), for each operation. Path ids are sometimes real objects of the fuzzed project (a
container with a file, a stored response, a conversation with an item, the model), so the handlers
behind the 404s run too. Requests go out with the right key, another project's key (which must
never reach the first project's objects), a wrong key or none. ``FUZZ_EXAMPLES`` sets the examples
per operation and mode: a few in ``make test`` (under a minute), many in ``make fuzz``.

Each request has a time limit (a hang fails), any 5xx fails, and every error must be OpenAI's
error JSON. The server's resident memory is sampled after a warm-up pass and after the run.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckContext, not_a_server_error

from tests.conftest import KEYS, Server

pytestmark = pytest.mark.root

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "4"))
WARM_UP_EXAMPLES = 3
REQUEST_TIMEOUT = 30.0
"""Seconds one request may take, streams included, in all and between two reads; longer is a hang."""
EXEC_TIMEOUT_MS = 5_000
"""Generated commands are arbitrary shell text: a valid ``timeout_ms`` up to an hour would make a
long ``sleep`` a legitimate wait, not a hang, so the fuzzer caps it."""
RSS_GROWTH_MIB = 16
"""Flat: the server's RSS after the run within this of the warmed-up RSS (measured: see bench/README.md)."""
OWNER, NEIGHBOUR = KEYS["alpha"], KEYS["beta"]
# Mostly the owner's key, so most requests get past authentication.
KEY_CHOICES = [OWNER] * 6 + [NEIGHBOUR, "sk-not-a-key", None]
OWNED_IDS = ("container_id", "file_id", "response_id", "conversation_id", "item_id", "webhook_endpoint_id",
             "snapshot_id", "skill_id")


@dataclass
class Tally:
    """What the run did, for the report and for the assertion that every operation ran."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    unbreakable: list[str] = field(default_factory=list)


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) / 1024


def _known_objects(server: Server) -> dict[str, str]:
    """Real objects of the owner's project whose ids the fuzzer may put in paths."""
    with server.http() as http:
        container = http.post("/v1/containers", json={"name": "fuzzed"}).raise_for_status().json()
        file = http.post(f"/v1/containers/{container['id']}/files",
                         files={"file": ("kept.txt", b"kept")}).raise_for_status().json()
        response = http.post("/v1/responses", json={  # background: it can be streamed again and cancelled
            "model": "scripted-model", "input": "hi", "background": True}).raise_for_status()
        conversation = http.post("/v1/conversations", json={"items": [
            {"type": "message", "role": "user", "content": "hi"}]}).raise_for_status().json()
        items = http.get(f"/v1/conversations/{conversation['id']}/items").raise_for_status().json()
        upload = http.post("/v1/files", files={"file": ("kept.pdf", b"%PDF-1.4")},
                           data={"purpose": "user_data"}).raise_for_status().json()
        endpoint = http.post("/v1/webhook_endpoints", json={  # never reached: no such host here
            "name": "kept", "url": "https://hooks.invalid/cove", "event_types": ["response.completed"]},
        ).raise_for_status().json()
        snapshot = http.post(f"/v1/containers/{container['id']}/snapshots").raise_for_status().json()
        skill = http.post("/v1/skills", files={"files": (
            "SKILL.md", b"---\nname: fuzzed\ndescription: Kept.\n---\n")}).raise_for_status().json()
    return {"container_id": container["id"], "file_id": file["id"], "response_id": response.json()["id"],
            "conversation_id": conversation["id"], "item_id": items["data"][0]["id"], "model_id": "scripted-model",
            "upload_id": upload["id"], "webhook_endpoint_id": endpoint["id"], "snapshot_id": snapshot["id"],
            "skill_id": skill["id"], "version": "1",
            "port": "8000"}  # a preview port: nothing listens there, which the URL route does not mind


def _real(path: str, known: dict[str, str]) -> dict[str, str]:
    """Real ids for the path's parameters: ``file_id`` names a file of ``/v1/files`` there, else a
    container's file (the SDK calls both ``file_id``)."""
    uploads = path.startswith("/v1/files/")
    return {name: known["upload_id" if uploads and name == "file_id" else name]
            for name in re.findall(r"{(\w+)}", path)}


@schemathesis.check
def openai_error_shape(ctx: CheckContext, response: schemathesis.Response, case: Case) -> bool | None:
    """Every refusal is OpenAI's error JSON: ``{"error": {"message": ..., "type": ...}}``."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not an OpenAI error: {response.text!r}"
    assert body["error"].get("message") and body["error"].get("type"), f"error without message/type: {body}"
    return None


def _reaches_owned(case: Case, known: dict[str, str]) -> bool:
    real = _real(case.operation.path, known)
    return any(case.path_parameters and name in real and case.path_parameters.get(name) == real[name]
               for name in OWNED_IDS)


def _prepare(case: Case) -> None:
    if case.operation.path.endswith("/exec") and isinstance(case.body, dict):
        timeout = case.body.get("timeout_ms")
        if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > EXEC_TIMEOUT_MS:
            case.body["timeout_ms"] = EXEC_TIMEOUT_MS


def _clean_up(case: Case, response: requests.Response, server: Server, known: dict[str, str]) -> None:
    """Containers the fuzzer made are deleted at once, so a long run never fills the machine; known
    objects the fuzzer deleted are made again, so later operations still meet real ones."""
    path = case.operation.path
    if case.method == "POST" and response.status_code == 200 and (
            path == "/v1/containers" or path.endswith(("/fork", "/snapshots"))):
        made = response.json()  # other POSTs may answer a stream
        with server.http() as http:
            for container in made["data"] if path.endswith("/fork") else [made] if path == "/v1/containers" else []:
                http.delete(f"/v1/containers/{container['id']}")
            if path.endswith("/snapshots"):
                http.delete(f"/v1/snapshots/{made['id']}")
    if case.method == "DELETE" and response.status_code == 200 and _reaches_owned(case, known):
        known.update(_known_objects(server))


def _fuzz(operation: Any, mode: GenerationMode, examples: int, server: Server, known: dict[str, str],
          tally: Tally) -> None:
    real = _real(operation.path, known)
    strategy = operation.as_strategy(generation_mode=mode)
    if real:
        strategy = strategy | operation.as_strategy(generation_mode=mode, path_parameters=real)
    label = f"{operation.label} [{mode.value}]"

    run_seed = secrets.randbits(64)  # named in any failure; hypothesis prints no seed advice when given one

    @seed(run_seed)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy, key=st.sampled_from(KEY_CHOICES))
    def run(case: Case, key: str | None) -> None:
        _prepare(case)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        started = time.monotonic()
        try:
            response = case.call(base_url=server.url, headers=headers, timeout=REQUEST_TIMEOUT)
        except requests.Timeout as exc:
            raise AssertionError(f"{label}: no answer within {REQUEST_TIMEOUT} s (a hang): "
                                 f"{case.as_curl_command(headers=headers)}") from exc
        took = time.monotonic() - started  # the timeout above is per read; this bounds the whole answer
        assert took < REQUEST_TIMEOUT, f"{label}: answered in {took:.0f} s: {case.as_curl_command(headers=headers)}"
        tally.cases[label] += 1
        tally.statuses[response.status_code] += 1
        _clean_up(case, response, server, known)
        case.validate_response(response, checks=[not_a_server_error, openai_error_shape], headers=headers)
        if key == NEIGHBOUR and _reaches_owned(case, known):
            assert response.status_code >= 400, (
                f"{label}: project beta reached project alpha's object: {case.as_curl_command(headers=headers)}")

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, f"{label}: no valid request can be generated"
        tally.unbreakable.append(label)  # nothing to break, e.g. a path of free strings and no body or query
    except Exception as exc:  # keep fuzzing the other operations; all findings are reported at the end
        tally.failures.append(f"{label} (hypothesis seed {run_seed}): {exc}")


def test_every_operation_survives_fuzzing(fuzz_server: Server) -> None:
    known = _known_objects(fuzz_server)
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json",  # behind a key, as the API
                                           headers={"Authorization": f"Bearer {OWNER}"})
    operations = [result.ok() for result in schema.get_all_operations()]
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    assert fuzz_server.proc is not None
    pid = fuzz_server.proc.pid

    warm_up = Tally()
    for operation in operations:
        for mode in modes:
            _fuzz(operation, mode, WARM_UP_EXAMPLES, fuzz_server, known, warm_up)
    rss_before = _rss_mib(pid)
    tally = Tally()
    started = time.monotonic()
    for operation in operations:
        for mode in modes:
            _fuzz(operation, mode, EXAMPLES, fuzz_server, known, tally)
    elapsed = time.monotonic() - started
    rss_after = _rss_mib(pid)

    total = sum(tally.cases.values()) + sum(warm_up.cases.values())
    print(f"\nfuzzed {len(operations)} operations: {total} cases ({sum(tally.cases.values())} after the warm-up, "
          f"in {elapsed:.0f} s); statuses {dict(sorted((tally.statuses + warm_up.statuses).items()))}; "
          f"server RSS {rss_before:.1f} MiB after the warm-up, {rss_after:.1f} MiB after the run; "
          f"{len(tally.unbreakable)} operations have no invalid request (free-string paths, mostly)")
    failures = warm_up.failures + tally.failures
    assert not failures, "\n\n".join(failures)
    covered = {label.rsplit(" [", 1)[0] for label in tally.cases}
    assert covered == {operation.label for operation in operations}, "operations the fuzzer never called"
    assert rss_after - rss_before < RSS_GROWTH_MIB, f"server RSS grew {rss_after - rss_before:.1f} MiB"
    with httpx.Client(base_url=fuzz_server.url, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}


def test_uploads_survive_hostile_names_and_paths(fuzz_server: Server) -> None:
    """The schema's optional ``file`` part is seldom generated as a file, so the multipart upload
    gets its own fuzzing: arbitrary file names, target paths and contents into a real container."""
    container_id = _known_objects(fuzz_server)["container_id"]
    names = st.text(max_size=300) | st.sampled_from(["..", "../../etc/passwd", "/etc/shadow", "a/../../b", ""])
    statuses: Counter[int] = Counter()

    @settings(max_examples=max(EXAMPLES, 10), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(name=names, path=st.none() | names, content=st.binary(max_size=4096))
    def upload(name: str, path: str | None, content: bytes) -> None:
        with fuzz_server.http() as http:
            response = http.post(f"/v1/containers/{container_id}/files", timeout=REQUEST_TIMEOUT,
                                 files={"file": (name, content)}, data={} if path is None else {"path": path})
        statuses[response.status_code] += 1
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert response.json()["error"]["message"], response.text
            return
        stored = response.json()
        with fuzz_server.http() as http:
            download = http.get(f"/v1/containers/{container_id}/files/{stored['id']}/content", timeout=REQUEST_TIMEOUT)
        assert download.status_code == 200 and download.content == content, (stored, download.status_code)

    upload()
    print(f"\nuploads: {dict(statuses)}")
    assert statuses[200], "no upload was ever accepted"
