"""``/v1/files`` through the official SDK against a real server: the Files API itself, its bytes in
the data dir or an S3 bucket (moto's real HTTP server), and file ids used as inputs and container files."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from typing import Any

import boto3
import openai
import pytest
from moto.server import ThreadedMotoServer

from tests.conftest import Server, _server_env, data_dir, free_port
from tests.postgres import PostgresServer
from tests.scripted_upstream import ScriptedUpstream

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
    """A server keeping file bytes in the bucket, with a 1 MiB upload cap."""
    srv = Server(data_dir("cove-s3"), {**_server_env(upstream, postgres), "COVE_MAX_FILE_UPLOAD": "1m", **bucket})
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


def test_an_upload_past_the_cap_is_a_413(bucket_server: Server, bucket: dict[str, str]) -> None:
    client = bucket_server.client()
    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.bin", b"x" * (1 << 20)), purpose="user_data")
    assert refused.value.status_code == 413
    assert refused.value.body["code"] == "request_too_large"  # type: ignore[index]
    assert list(client.files.list()) == []
    assert s3(bucket).list_objects_v2(Bucket="cove-files", Prefix="cove/")["KeyCount"] == 0
