"""Per-project quotas and rules for containers, /exec and images, against a real server with a projects file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import KEYS, Server, data_dir
from tests.helpers import run
from tests.postgres import PostgresServer
from tests.scripted_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.root

MODEL = "scripted-model"
SHELL = {"type": "shell", "environment": {"type": "container_auto"}}
PROJECTS = """
[defaults]
running_containers = 4

[projects.alpha]
running_containers = 2
memory = "5g"
audit_rows = 5

[projects.beta]
disk = "25g"                 # COVE_DISK_LIMIT is 10g: two running containers

[projects.fn]
tools = ["function"]

[projects.snapq]
disk = 10745806848           # one 10g disk and 8 MiB of snapshots

[projects.nobox]
tools = ["function", "shell"]
containers = false

[projects.narrow]
images = ["test-*"]

[private_images]
default = ["alpha", "beta", "nobox", "snapq"]
"""
MORE_KEYS = {project: f"test-key-{project}" for project in ("fn", "nobox", "narrow", "outsider", "snapq")}


@pytest.fixture(scope="module")
def quota_server(upstream: ScriptedUpstream, postgres: PostgresServer | None) -> Iterator[Server]:
    directory = data_dir("cove-quotas")
    rules = directory.with_name(directory.name + "-projects.toml")
    rules.write_text(PROJECTS)
    keys = ",".join(f"{key}={project}" for project, key in {**KEYS, **MORE_KEYS}.items())
    env = {"COVE_UPSTREAM_URL": upstream.url, "COVE_PROJECTS_FILE": str(rules), "COVE_API_KEYS": keys,
           "COVE_DISK_LIMIT": "10g", "COVE_WARM_POOL": "0"}
    if postgres is not None:
        env["COVE_DATABASE_URL"] = postgres.new_database()
    srv = Server(directory, env)
    srv.start()
    yield srv
    srv.stop()
    shutil.rmtree(directory, ignore_errors=True)
    rules.unlink()


def _http(server: Server, project: str) -> httpx.Client:
    key = {**KEYS, **MORE_KEYS}[project]
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def _quota_error(response: httpx.Response, quota: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("rate_limit_error", "quota_exceeded", quota)
    assert quota in error["message"]


def _create(http: httpx.Client, **body: object) -> httpx.Response:
    return http.post("/v1/containers", json={"name": "q", **body})


def _delete_all(http: httpx.Client) -> None:
    for container in http.get("/v1/containers", params={"limit": 100}).json()["data"]:
        http.delete(f"/v1/containers/{container['id']}")


def test_running_containers_quota_holds_under_concurrent_creates(quota_server: Server) -> None:
    with _http(quota_server, "alpha") as alpha, _http(quota_server, "beta") as beta:
        try:
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _i: _create(alpha), range(8)))
            created = [r for r in answers if r.status_code == 200]
            assert len(created) == 2, [r.text for r in answers]
            for refused in (r for r in answers if r.status_code != 200):
                _quota_error(refused, "running_containers")
            assert _create(beta).status_code == 200  # another project is unaffected
            alpha.delete(f"/v1/containers/{created[0].json()['id']}")
            assert _create(alpha).status_code == 200  # a slot freed is a slot again
        finally:
            _delete_all(alpha)
            _delete_all(beta)


def test_memory_and_disk_quotas(quota_server: Server) -> None:
    with _http(quota_server, "alpha") as alpha, _http(quota_server, "beta") as beta:
        try:
            assert _create(alpha, memory_limit="4g").status_code == 200
            _quota_error(_create(alpha, memory_limit="4g"), "memory")  # 8g of 5g
            assert _create(alpha, memory_limit="1g").status_code == 200  # exactly 5g
            assert _create(beta).status_code == 200 and _create(beta).status_code == 200
            _quota_error(_create(beta), "disk")  # a third 10g disk is 30g of 25g
        finally:
            _delete_all(alpha)
            _delete_all(beta)


def test_snapshots_count_against_the_disk_quota(quota_server: Server) -> None:
    with _http(quota_server, "snapq") as http:
        try:
            cid = _create(http).raise_for_status().json()["id"]
            http.post(f"/v1/containers/{cid}/exec", json={"commands": [
                "head -c 20000000 /dev/urandom > /tmp/blob"]}).raise_for_status()
            _quota_error(http.post(f"/v1/containers/{cid}/snapshots"), "disk")  # 10g + 20 MB of 10g + 8 MiB
            assert http.get("/v1/snapshots").json()["data"] == []  # the refused one was not kept
            assert not list((quota_server.data_dir / "disks" / "snapshots").iterdir())
            http.post(f"/v1/containers/{cid}/exec", json={"commands": ["rm /tmp/blob"]}).raise_for_status()
            http.delete(f"/v1/containers/{cid}").raise_for_status()
            # Without running containers there is room; a kept snapshot then leaves none for a disk.
            fresh = _create(http).raise_for_status().json()["id"]
            http.post(f"/v1/containers/{fresh}/exec", json={"commands": [
                "head -c 20000000 /dev/urandom > /tmp/blob"]}).raise_for_status()
            forked = http.post(f"/v1/containers/{fresh}/fork")
            _quota_error(forked, "disk")  # a fork is a second running disk: 20g
            assert [c["id"] for c in http.get("/v1/containers").json()["data"]] == [fresh]
        finally:
            _delete_all(http)
            for snapshot in http.get("/v1/snapshots").json()["data"]:
                http.delete(f"/v1/snapshots/{snapshot['id']}")


def test_responses_that_would_make_a_container_meet_the_same_quota(quota_server: Server,
                                                                   upstream: ScriptedUpstream) -> None:
    upstream.reset()
    with _http(quota_server, "alpha") as alpha, _http(quota_server, "beta") as beta:
        try:
            for _ in range(2):
                assert _create(alpha).status_code == 200
            body = {"model": MODEL, "input": "run something", "tools": [SHELL]}
            _quota_error(alpha.post("/v1/responses", json=body), "running_containers")
            _quota_error(alpha.post("/v1/responses", json={**body, "background": True}), "running_containers")
            upstream.script([Reply(text="beta has room")])
            answer = beta.post("/v1/responses", json=body)
            assert answer.status_code == 200 and answer.json()["status"] == "completed", answer.text
        finally:
            _delete_all(alpha)
            upstream.reset()


def test_audit_keeps_the_newest_rows_and_counts_the_pruned(quota_server: Server) -> None:
    with _http(quota_server, "alpha") as alpha:
        try:
            cid = _create(alpha).json()["id"]
            run(alpha, cid, *[f"echo {n}" for n in range(8)])
            page = alpha.get(f"/v1/containers/{cid}/audit", params={"limit": 100, "order": "asc"}).json()
            assert [e["command"] for e in page["data"]] == [f"echo {n}" for n in range(3, 8)]
            assert page["pruned"] == 3
            run(alpha, cid, "echo 8", "echo 9")
            page = alpha.get(f"/v1/containers/{cid}/audit", params={"limit": 100, "order": "asc"}).json()
            assert [e["command"] for e in page["data"]] == [f"echo {n}" for n in range(5, 10)]
            assert page["pruned"] == 5
            cove = Path(sys.executable).parent / "cove"
            shown = subprocess.run([str(cove), "audit", cid, "--json"], env=quota_server.env, capture_output=True,
                                   text=True, check=True)
            assert [json.loads(line)["command"] for line in shown.stdout.splitlines()] == [
                f"echo {n}" for n in range(5, 10)]
            assert "5 older events were pruned" in shown.stderr
        finally:
            _delete_all(alpha)


def test_a_project_without_containers_cannot_create_exec_or_use_files(quota_server: Server) -> None:
    with _http(quota_server, "beta") as beta:
        other = _create(beta).json()["id"]
    try:
        for project in ("fn", "nobox"):
            with _http(quota_server, project) as http:
                for answer in (_create(http), http.post(f"/v1/containers/{other}/exec", json={"commands": ["id"]}),
                               http.get(f"/v1/containers/{other}/files"),
                               http.post("/v1/containers/cntr_none/exec", json={"commands": ["id"]})):
                    assert answer.status_code == 403, answer.text
                    assert answer.json()["error"]["code"] == "permission_denied"
        client = openai.OpenAI(base_url=f"{quota_server.url}/v1", api_key=MORE_KEYS["nobox"], max_retries=0)
        with client, pytest.raises(openai.PermissionDeniedError):
            client.responses.create(model=MODEL, input="go", tools=[SHELL])  # type: ignore[list-item]
        with _http(quota_server, "fn") as fn:  # the tool itself is refused first, as before
            assert fn.post("/v1/responses", json={"model": MODEL, "input": "go", "tools": [SHELL]}).json()[
                "error"]["code"] == "tool_not_allowed"
    finally:
        with _http(quota_server, "beta") as beta:
            _delete_all(beta)


def test_an_image_a_project_may_not_use_looks_like_no_image(quota_server: Server) -> None:
    with _http(quota_server, "beta") as beta:
        missing = _create(beta, image="no-such-image")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "image_not_found"
    for project in ("outsider", "narrow"):  # default is private to others; narrow may use test-* only
        with _http(quota_server, project) as http:
            hidden = _create(http, image="default")
            assert (hidden.status_code, hidden.json()) == (404, {"error": {
                **missing.json()["error"], "message": missing.json()["error"]["message"].replace(
                    "no-such-image", "default")}})
            assert _create(http).status_code == 404  # no image given: the default one, hidden too
