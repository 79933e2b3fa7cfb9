"""Container files through the SDK: upload, list, download, delete, and escape attempts."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Server
from tests.helpers import run

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def cid(client: openai.OpenAI) -> str:
    return client.containers.create(name="files").id


def test_upload_list_download_delete(client: openai.OpenAI, http: httpx.Client, cid: str) -> None:
    uploaded = client.containers.files.create(cid, file=("notes.txt", b"hello files\n"))
    assert uploaded.path == "/mnt/data/notes.txt"
    assert uploaded.bytes == 12 and uploaded.source == "user"
    assert run(http, cid, "cat /mnt/data/notes.txt")[0]["stdout"] == "hello files\n"
    placed = http.post(f"/v1/containers/{cid}/files", files={"file": ("x.py", b"print(42)\n")},
                       data={"path": "/workspace/app/x.py"})
    assert placed.status_code == 200 and placed.json()["path"] == "/workspace/app/x.py"
    assert run(http, cid, "python3 /workspace/app/x.py")[0]["stdout"] == "42\n"
    run(http, cid, "echo made-inside > /mnt/data/report.csv")
    listing = {f.path: f for f in client.containers.files.list(cid)}
    assert listing["/mnt/data/report.csv"].source == "assistant"
    assert listing["/mnt/data/notes.txt"].source == "user"
    report = listing["/mnt/data/report.csv"]
    assert client.containers.files.content.retrieve(report.id, container_id=cid).read() == b"made-inside\n"
    assert client.containers.files.retrieve(report.id, container_id=cid).bytes == 12
    client.containers.files.delete(report.id, container_id=cid)
    assert run(http, cid, "test -e /mnt/data/report.csv; echo $?")[0]["stdout"] == "1\n"
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve(report.id, container_id=cid)


def test_large_binary_round_trip(client: openai.OpenAI, http: httpx.Client, cid: str) -> None:
    payload = os.urandom(50 * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    uploaded = client.containers.files.create(cid, file=("blob.bin", payload))
    assert uploaded.bytes == len(payload)
    assert run(http, cid, "sha256sum /mnt/data/blob.bin")[0]["stdout"] == f"{digest}  /mnt/data/blob.bin\n"
    with http.stream("GET", f"/v1/containers/{cid}/files/{uploaded.id}/content") as response:
        assert response.status_code == 200
        h = hashlib.sha256()
        for chunk in response.iter_bytes():
            h.update(chunk)
    assert h.hexdigest() == digest


def test_traversal_and_symlink_escapes(client: openai.OpenAI, http: httpx.Client, cid: str, tmp_path: Path) -> None:
    secret = Path("/root") / f"cove-escape-{secrets.token_hex(4)}"
    secret.write_text("host-secret\n")
    target_dir = Path("/tmp") / f"cove-escape-dir-{secrets.token_hex(4)}"
    try:
        for path in ("/mnt/data/../../etc/evil", "../../../etc/evil", "/mnt/data/a/.."):
            response = http.post(f"/v1/containers/{cid}/files", files={"file": ("f", b"x")}, data={"path": path})
            assert response.status_code == 400, path
            assert response.json()["error"]["param"] == "path"
        run(http, cid, f"ln -sfn / /mnt/data/rootlink; ln -sfn {secret} /mnt/data/secretlink; "
                       f"mkdir -p {target_dir.parent} && ln -sfn {target_dir} /mnt/data/dirlink")
        # Writing through a symlink lands inside the container, never on the host.
        response = http.post(f"/v1/containers/{cid}/files", files={"file": ("f", b"inside\n")},
                             data={"path": f"/mnt/data/rootlink{target_dir}/planted"})
        assert response.status_code == 200
        assert not target_dir.exists()
        assert run(http, cid, f"cat {target_dir}/planted")[0]["stdout"] == "inside\n"
        # A file the API knows, swapped for a symlink to a host path, still reads inside the container.
        known = client.containers.files.create(cid, file=("swap.txt", b"original\n"))
        run(http, cid, f"rm /mnt/data/swap.txt && ln -s {secret} /mnt/data/swap.txt")
        response = http.get(f"/v1/containers/{cid}/files/{known.id}/content")
        assert b"host-secret" not in response.content
        assert response.status_code == 404
        run(http, cid, f"rm /mnt/data/swap.txt && ln -s ../../../../..{secret} /mnt/data/swap.txt")
        assert b"host-secret" not in http.get(f"/v1/containers/{cid}/files/{known.id}/content").content
        # Uploading onto a symlink replaces the link rather than writing through it.
        response = http.post(f"/v1/containers/{cid}/files", files={"file": ("f", b"replaced\n")},
                             data={"path": "/mnt/data/secretlink"})
        assert response.status_code == 200
        assert secret.read_text() == "host-secret\n"
    finally:
        secret.unlink()


def test_unknown_files_404(client: openai.OpenAI, cid: str) -> None:
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve("cfile_nope", container_id=cid)
    with pytest.raises(openai.NotFoundError):
        client.containers.files.content.retrieve("cfile_nope", container_id=cid)
    with pytest.raises(openai.NotFoundError):
        client.containers.files.list("cntr_nope")


def test_uploads_and_bodies_are_capped(own_server: Server) -> None:
    own_server.stop()
    own_server.env.update(COVE_MAX_UPLOAD="1m", COVE_MAX_REQUEST="64k")
    own_server.start()
    client = own_server.client()
    cid = client.containers.create(name="capped").id
    assert client.containers.files.create(cid, file=("ok.bin", b"x" * 1000)).bytes == 1000
    with pytest.raises(openai.APIStatusError) as info:
        client.containers.files.create(cid, file=("big.bin", b"x" * (2 << 20)))
    assert info.value.status_code == 413
    with own_server.http() as http:
        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(200):
                yield b"y" * 1024
        response = http.post("/v1/responses", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        assert http.get(f"/v1/containers/{cid}").status_code == 200
