"""What the fuzzer (and probing around its findings) made the server answer with a 500 or a
broken stream; each must now be a clear 400."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.root

JSON = {"content-type": "application/json"}
LONE_SURROGATE_BODIES = [  # raw JSON: "\ud800" decodes to a str that no UTF-8 encoder takes
    ("/v1/responses", b'{"model": "scripted-model", "input": "hi", "metadata": {"a": "\\ud800"}}'),
    ("/v1/responses", b'{"model": "scripted-model", "input": "hi", "instructions": "\\uDBFF"}'),
    ("/v1/conversations", b'{"metadata": {"a": "\\ud800"}}'),
    ("/v1/conversations", b'{"items": [{"type": "message", "role": "user", "content": "\\udc00"}]}'),
    ("/v1/containers/{container}/exec", b'{"commands": ["echo \\ud800"]}'),
]


@pytest.fixture(scope="module")
def container(http: httpx.Client) -> str:
    return str(http.post("/v1/containers", json={"name": "fuzz-findings"}).raise_for_status().json()["id"])


def _refused(response: httpx.Response, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["message"] and (param is None or error["param"] == param), error
    return error


@pytest.mark.parametrize(("path", "body"), LONE_SURROGATE_BODIES)
def test_lone_surrogates_are_refused_before_anything_is_stored(http: httpx.Client, container: str, path: str,
                                                              body: bytes) -> None:
    error = _refused(http.post(path.format(container=container), content=body, headers=JSON))
    assert error["code"] == "invalid_unicode"


def test_a_valid_surrogate_pair_is_text(http: httpx.Client) -> None:
    created = http.post("/v1/conversations", content=b'{"metadata": {"a": "\\ud83d\\ude00"}}', headers=JSON)
    assert created.status_code == 200 and created.json()["metadata"] == {"a": "\U0001f600"}, created.text


def test_a_file_name_longer_than_the_kernel_allows(http: httpx.Client, container: str) -> None:
    response = http.post(f"/v1/containers/{container}/files", files={"file": ("a", b"x")},
                         data={"path": "/mnt/data/" + "a" * 256})
    assert "longer than 255 bytes" in _refused(response, "path")["message"]
    ok = http.post(f"/v1/containers/{container}/files", files={"file": ("a", b"x")},
                   data={"path": "/mnt/data/" + "a" * 255})
    assert ok.status_code == 200, ok.text


def test_a_nul_in_an_allowed_domain(http: httpx.Client) -> None:
    response = http.post("/v1/containers", json={"name": "x", "network_policy": {
        "type": "allowlist", "allowed_domains": ["exa\x00mple.com"]}})
    _refused(response, "network_policy.allowed_domains[0]")


@pytest.mark.parametrize("number", [2**31, 10**30])  # beyond PostgreSQL's integer, beyond SQLite's
def test_starting_after_beyond_what_the_store_holds(http: httpx.Client, number: int) -> None:
    response_id = http.post("/v1/responses", json={"model": "scripted-model", "input": "hi", "background": True}
                            ).raise_for_status().json()["id"]
    response = http.get(f"/v1/responses/{response_id}", params={"stream": "true", "starting_after": number})
    _refused(response, "starting_after")
    last = http.get(f"/v1/responses/{response_id}", params={"stream": "true", "starting_after": 2**31 - 1})
    assert last.status_code == 200, last.text


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v1/containers", {"name": "x\x00y"}),
    ("GET", "/v1/containers?name=x%00y", None),
    ("GET", "/v1/containers?after=x%00y", None),
    ("POST", "/v1/responses", {"model": "scripted-model", "input": "hi", "previous_response_id": "resp_\x00"}),
    ("POST", "/v1/responses", {"model": "scripted-model", "input": "hi", "conversation": "conv_\x00"}),
    ("GET", "/v1/responses/resp_%00", None),
    ("GET", "/v1/conversations/conv_%00", None),
    ("GET", "/v1/containers/cntr_%00/files/x%00", None),
])
def test_a_nul_in_ids_names_and_cursors(http: httpx.Client, method: str, path: str, body: Any) -> None:
    """PostgreSQL text holds no NUL (``make test`` runs this on both stores): a client error there."""
    response = http.request(method, path, json=body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]["message"], response.text
