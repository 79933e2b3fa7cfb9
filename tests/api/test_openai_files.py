"""``/v1/files`` through the official SDK against a real server: the Files API itself, its bytes in
the data dir or an S3 bucket (moto's real HTTP server), and file ids used as inputs and container files."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai
import pytest
from moto.server import ThreadedMotoServer

from cove.config import Settings
from cove.errors import CoveError, NotFound
from cove.service.file_blobs import S3Blobs
from tests.conftest import Server, _server_env, data_dir, free_port
from tests.helpers import encrypted, pdf_bytes, run
from tests.postgres import PostgresServer
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

MODEL = "scripted-model"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
                       "rkJggg==")
"""A 1x1 PNG."""


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "input_text", "text": "Look at this."}, *parts]}]


def refusal(client: openai.OpenAI, **body: Any) -> dict[str, Any]:
    with pytest.raises(openai.APIStatusError) as refused:
        client.responses.create(model=MODEL, **body)
    assert refused.value.status_code in (400, 404)
    error: dict[str, Any] = refused.value.body  # type: ignore[assignment]
    return error

pytestmark = pytest.mark.root


@pytest.fixture
def clean(client: openai.OpenAI) -> Iterator[openai.OpenAI]:
    """The session's client, with every file it uploads here deleted afterwards."""
    before = {f.id for f in client.files.list()}
    yield client
    for f in client.files.list():
        if f.id not in before:
            client.files.delete(f.id)


def test_upload_list_retrieve_content_delete(clean: openai.OpenAI, server: Server) -> None:
    made = clean.files.create(file=("notes.md", b"# Notes\nhello\n"), purpose="user_data")
    assert (made.object, made.filename, made.bytes, made.purpose, made.status) == (
        "file", "notes.md", 14, "user_data", "processed")
    assert made.expires_at is None and made.id.startswith("file")
    assert clean.files.retrieve(made.id) == made
    assert made.id in [f.id for f in clean.files.list()]
    content = clean.files.with_raw_response.content(made.id)
    assert content.headers["content-type"].startswith("text/markdown")
    assert content.parse().read() == b"# Notes\nhello\n"
    stored = server.data_dir / "files" / made.id
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    deleted = clean.files.delete(made.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (made.id, "file", True)
    assert not stored.exists()
    with pytest.raises(openai.NotFoundError) as missing:
        clean.files.retrieve(made.id)
    assert missing.value.body["code"] == "file_not_found"  # type: ignore[index]


def test_pagination_and_purpose_filter(clean: openai.OpenAI) -> None:
    made = [clean.files.create(file=(f"f{i}.jsonl", b"{}\n"), purpose="batch" if i % 2 else "assistants")
            for i in range(5)]
    page = clean.files.list(limit=2, order="asc", purpose="assistants")
    assert [f.id for f in page.data] == [made[0].id, made[2].id] and page.has_more
    assert [f.id for f in page] == [made[0].id, made[2].id, made[4].id]
    newest = clean.files.list(limit=1)
    assert newest.data[0].id == made[4].id
    assert [f.id for f in clean.files.list(purpose="batch", after=made[3].id)] == [made[1].id]
    with pytest.raises(openai.BadRequestError):
        clean.files.list(limit=10_001)


def test_expiry_and_bad_fields(clean: openai.OpenAI) -> None:
    expiring = clean.files.create(file=("e.txt", b"x"), purpose="user_data",
                                  expires_after={"anchor": "created_at", "seconds": 3600})
    assert expiring.expires_at == expiring.created_at + 3600
    for bad, param in (({"purpose": "nonsense"}, "purpose"),
                       ({"purpose": "user_data", "expires_after": {"anchor": "created_at", "seconds": 10}},
                        "expires_after.seconds")):
        with pytest.raises(openai.BadRequestError) as refused:
            clean.files.create(file=("e.txt", b"x"), **bad)  # type: ignore[arg-type]
        assert refused.value.body["param"] == param  # type: ignore[index]


def test_projects_never_see_each_others_files(clean: openai.OpenAI, server: Server) -> None:
    mine = clean.files.create(file=("secret.txt", b"alpha only"), purpose="user_data")
    beta = server.client("beta")
    assert mine.id not in [f.id for f in beta.files.list()]
    for call in (beta.files.retrieve, beta.files.content, beta.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(mine.id)
    with pytest.raises(openai.BadRequestError):
        beta.files.list(after=mine.id)
    assert clean.files.content(mine.id).read() == b"alpha only"


@pytest.fixture(scope="module")
def bucket() -> Iterator[dict[str, str]]:
    """moto's S3 server over real HTTP on 127.0.0.1, with an empty bucket; its settings for Cove."""
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    settings = {"COVE_FILES_S3_BUCKET": "cove-files", "COVE_FILES_S3_ENDPOINT_URL": f"http://{host}:{port}",
                "COVE_FILES_S3_REGION": "us-east-1", "COVE_FILES_S3_ACCESS_KEY_ID": "test-access",
                "COVE_FILES_S3_SECRET_ACCESS_KEY": "test-secret", "COVE_FILES_S3_PREFIX": "cove/"}
    s3(settings).create_bucket(Bucket="cove-files")
    yield settings
    moto.stop()


def s3(settings: dict[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=settings["COVE_FILES_S3_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="test-access", aws_secret_access_key="test-secret")


@pytest.fixture(scope="module")
def bucket_server(upstream: ScriptedUpstream, postgres: PostgresServer | None,
                  bucket: dict[str, str]) -> Iterator[Server]:
    """A server keeping file bytes in the bucket, with a 1 MiB upload cap, a Responses API upstream,
    and project beta's files quota at 1000 KiB."""
    srv = Server(data_dir("cove-s3"), {**_server_env(upstream, postgres), "COVE_MAX_FILE_UPLOAD": "1m",
                                        "COVE_UPSTREAM_API": "responses", **bucket})
    projects = srv.data_dir.with_name(srv.data_dir.name + "-projects.toml")
    projects.write_text('[projects.beta]\nfile_bytes = "1000k"\n')
    srv.env["COVE_PROJECTS_FILE"] = str(projects)
    srv.start()
    yield srv
    srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


def test_bytes_round_trip_through_an_s3_bucket(bucket_server: Server, bucket: dict[str, str]) -> None:
    client = bucket_server.client()
    payload = os.urandom(700_000)
    made = client.files.create(file=("blob.bin", payload), purpose="assistants")
    stored = s3(bucket).get_object(Bucket="cove-files", Key=f"cove/{made.id}")["Body"].read()
    assert stored == payload
    assert not (bucket_server.data_dir / "files" / made.id).exists()
    assert client.files.content(made.id).read() == payload
    client.files.delete(made.id)
    assert s3(bucket).list_objects_v2(Bucket="cove-files", Prefix="cove/")["KeyCount"] == 0


def test_a_bucket_that_fails_is_said_so(bucket: dict[str, str], tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, **{key.removeprefix("COVE_").lower(): value
                                              for key, value in bucket.items()})
    missing = S3Blobs(settings.model_copy(update={"files_s3_bucket": "no-such-bucket"}))
    with pytest.raises(CoveError, match=r"^The files bucket refused the request \(NoSuchBucket\)\.$"):
        missing.put("file_x", io.BytesIO(b"x"))
    with pytest.raises(NotFound):
        S3Blobs(settings).chunks("file_never_stored")
    unreachable = settings.model_copy(update={"files_s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(CoveError, match="could not be used"):
        S3Blobs(unreachable).delete("file_x")


def test_uploads_past_the_files_quota_are_refused(bucket_server: Server, bucket: dict[str, str]) -> None:
    beta = bucket_server.client("beta")
    kept = beta.files.create(file=("one.bin", os.urandom(600_000)), purpose="user_data")
    with pytest.raises(openai.RateLimitError) as refused:
        beta.files.create(file=("two.bin", os.urandom(600_000)), purpose="user_data")
    assert (refused.value.body["code"], refused.value.body["param"]) == ("quota_exceeded", "file_bytes")  # type: ignore[index]
    keys = [o["Key"] for o in s3(bucket).list_objects_v2(Bucket="cove-files", Prefix="cove/")["Contents"]]
    assert keys == [f"cove/{kept.id}"]  # the refused upload's bytes were removed
    beta.files.delete(kept.id)
    beta.files.delete(beta.files.create(file=("two.bin", os.urandom(600_000)), purpose="user_data").id)


def test_an_upload_past_the_cap_is_a_413(bucket_server: Server, bucket: dict[str, str]) -> None:
    client = bucket_server.client()
    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.bin", b"x" * (1 << 20)), purpose="user_data")
    assert refused.value.status_code == 413
    assert refused.value.body["code"] == "request_too_large"  # type: ignore[index]
    assert list(client.files.list()) == []
    assert s3(bucket).list_objects_v2(Bucket="cove-files", Prefix="cove/")["KeyCount"] == 0


def test_a_pdf_and_a_text_file_reach_a_chat_upstream_as_text(clean: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    pdf = clean.files.create(file=("report.pdf", pdf_bytes("Quarterly revenue rose 12 percent")), purpose="user_data")
    notes = "data:text/plain;base64," + base64.b64encode("gr\u00fc\u00dfe from a text file".encode()).decode()
    answer = clean.responses.create(model=MODEL, input=user(  # type: ignore[arg-type]
        {"type": "input_file", "file_id": pdf.id}, {"type": "input_file", "file_data": notes, "filename": "n.txt"}))
    assert answer.status == "completed"
    sent = upstream.requests[-1]["messages"][-1]["content"]
    assert isinstance(sent, str)  # every part became text, which every chat server takes
    assert "[file: report.pdf]\nQuarterly revenue rose 12 percent" in sent
    assert "[file: n.txt]\ngr\u00fc\u00dfe from a text file" in sent
    stored = clean.responses.input_items.list(answer.id).data[0].model_dump()
    assert (stored["content"][1]["type"], stored["content"][1]["file_id"]) == ("input_file", pdf.id)  # as sent


def test_an_image_by_file_id_reaches_a_chat_upstream_as_an_image(clean: openai.OpenAI,
                                                                 upstream: ScriptedUpstream) -> None:
    upstream.reset()
    image = clean.files.create(file=("dot.png", PNG), purpose="vision")
    clean.responses.create(model=MODEL, input=user(  # type: ignore[arg-type]
        {"type": "input_image", "file_id": image.id, "detail": "low"}))
    part = upstream.requests[-1]["messages"][-1]["content"][1]
    assert part == {"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(PNG).decode(), "detail": "low"}}
    # A photo-sized image counts as an image, not as its base64 (~270k tokens at 3 characters a token).
    photo = clean.files.create(file=("photo.png", PNG + os.urandom(600_000)), purpose="vision")
    answer = clean.responses.create(model=MODEL, input=user(  # type: ignore[arg-type]
        {"type": "input_image", "file_id": photo.id, "detail": "auto"}))
    assert answer.status == "completed"


def test_file_inputs_that_cannot_be_sent_are_refused_naming_the_part(clean: openai.OpenAI, server: Server,
                                                                    upstream: ScriptedUpstream) -> None:
    upstream.reset()
    locked = clean.files.create(file=("locked.pdf", encrypted(pdf_bytes("hidden"))), purpose="user_data")
    broken = clean.files.create(file=("broken.pdf", b"%PDF-1.4\nnot really"), purpose="user_data")
    binary = clean.files.create(file=("blob.bin", bytes(range(256))), purpose="user_data")
    foreign = server.client("beta").files.create(file=("beta.txt", b"beta's"), purpose="user_data")
    cases = [({"type": "input_file", "file_url": "http://127.0.0.1:1/x.pdf"}, "file_url", "unsupported_file_url"),
             ({"type": "input_file", "file_id": "file_nope"}, "file_id", "file_not_found"),
             ({"type": "input_file", "file_id": foreign.id}, "file_id", "file_not_found"),
             ({"type": "input_image", "file_id": foreign.id, "detail": "auto"}, "file_id", "file_not_found"),
             ({"type": "input_file", "file_id": locked.id}, "file_id", "encrypted_pdf"),
             ({"type": "input_file", "file_id": broken.id}, "file_id", "invalid_pdf"),
             ({"type": "input_file", "file_id": binary.id}, "file_id", "unsupported_file"),
             ({"type": "input_image", "file_id": binary.id, "detail": "auto"}, "file_id", "invalid_image"),
             ({"type": "input_file", "file_data": "%%%"}, "file_data", "invalid_value")]
    for part, key, code in cases:
        error = refusal(clean, input=user(part))
        assert (error["param"], error["code"]) == (f"input[0].content[1].{key}", code), (part, error)
    assert not any("Look at this." in json.dumps(body) for body in upstream.requests)  # refused before any ran
    assert refusal(clean, input="go", tools=[{"type": "code_interpreter", "container": {
        "type": "auto", "file_ids": [foreign.id]}}])["param"] == "tools[0].container.file_ids[0]"


def test_container_file_ids_are_copied_into_mnt_data(clean: openai.OpenAI, http: httpx.Client) -> None:
    csv = clean.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="user_data")
    container = clean.containers.create(name="with-files", file_ids=[csv.id])
    assert run(http, container.id, "cat /mnt/data/data.csv")[0]["stdout"] == "a,b\n1,2\n"
    listed = {f.path: f for f in clean.containers.files.list(container.id)}
    assert listed["/mnt/data/data.csv"].source == "user"
    notes = clean.files.create(file=("notes.txt", b"more"), purpose="user_data")
    copied = clean.containers.files.create(container.id, file_id=notes.id)
    assert (copied.path, copied.bytes) == ("/mnt/data/notes.txt", 4)
    with pytest.raises(openai.NotFoundError) as missing:
        clean.containers.files.create(container.id, file_id="file_nope")
    assert missing.value.body["param"] == "file_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as refused:
        clean.containers.create(name="never", file_ids=[csv.id, "file_nope"])
    assert refused.value.body["param"] == "file_ids[1]"  # type: ignore[index]
    assert "never" not in [c.name for c in clean.containers.list()]
    clean.containers.delete(container.id)


def test_code_interpreter_auto_container_gets_the_files(clean: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    csv = clean.files.create(file=("sales.csv", b"region,total\nnorth,7\n"), purpose="user_data")
    code = "print(open('/mnt/data/sales.csv').read())"
    upstream.script([Reply(tool_calls=[ToolCall("code_interpreter", json.dumps({"code": code}))]),
                     Reply(text="north sold 7")])
    answer = clean.responses.create(model=MODEL, input="sum it", tools=[{  # type: ignore[list-item]
        "type": "code_interpreter", "container": {"type": "auto", "file_ids": [csv.id]}}])
    assert answer.output_text == "north sold 7"
    tool_output = upstream.requests[-1]["messages"][-1]
    assert tool_output["role"] == "tool" and "north,7" in tool_output["content"]
    assert answer.model_dump()["container_id"]  # type: ignore[index]
    clean.containers.delete(answer.model_dump()["container_id"])  # type: ignore[index]


def test_a_responses_upstream_gets_file_data(bucket_server: Server, upstream: ScriptedUpstream) -> None:
    """The bucket server speaks to a Responses upstream: a file id becomes the file itself, its URL passes."""
    upstream.reset()
    client = bucket_server.client()
    pdf_data = pdf_bytes("Read me natively")
    pdf = client.files.create(file=("native.pdf", pdf_data), purpose="user_data")
    client.responses.create(model=MODEL, input=user(  # type: ignore[arg-type]
        {"type": "input_file", "file_id": pdf.id}, {"type": "input_file", "file_url": "https://example.com/a.pdf"}))
    parts = upstream.requests[-1]["input"][0]["content"]
    assert parts[1] == {"type": "input_file", "filename": "native.pdf",
                        "file_data": "data:application/pdf;base64," + base64.b64encode(pdf_data).decode()}
    assert parts[2] == {"type": "input_file", "file_url": "https://example.com/a.pdf"}
