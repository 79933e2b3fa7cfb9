"""Where the bytes of ``/v1/files`` live: the data dir (``data_dir/files``) or an S3-compatible bucket.

The store keeps each file's metadata; a blob store keeps its bytes under the file's id. Every method
blocks (disk or boto3's HTTP), so the service calls them in worker threads, never on the event loop
that serves every tenant; ``chunks`` is a plain iterator for the same reason (container writes and
HTTP streaming consume it in a thread).
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import boto3  # type: ignore[import-untyped]  # no stubs in the lock; its client is typed Any here
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from cove.config import Settings
from cove.errors import CoveError, NotFound

CHUNK = 1 << 20


class Blobs(abc.ABC):
    @abc.abstractmethod
    def put(self, key: str, source: IO[bytes]) -> None:
        """Stores what ``source`` holds (read from its start) under ``key``."""

    @abc.abstractmethod
    def chunks(self, key: str) -> Iterator[bytes]:
        """The bytes under ``key``, a chunk at a time (``NotFound`` when they are gone)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Removes ``key``; a missing one is fine."""

    def read(self, key: str) -> bytes:
        return b"".join(self.chunks(key))


def _gone(key: str) -> NotFound:
    return NotFound(f"The content of file '{key}' is gone from storage.", param="file_id", code="file_not_found")


class LocalBlobs(Blobs):
    """Files in a 0700 directory of the data dir, each 0600, written under a temporary name and
    renamed, so a crash never leaves a half-written file under a real id."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        root.chmod(0o700)
        for partial in root.glob(".*.partial"):  # what a crash left mid-upload
            partial.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key  # keys are ids the service made, never client text

    def put(self, key: str, source: IO[bytes]) -> None:
        source.seek(0)
        partial = self.root / f".{key}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as target:
                shutil.copyfileobj(source, target, CHUNK)
            partial.rename(self._path(key))
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def chunks(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise _gone(key) from None
        return _file_chunks(handle)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def _file_chunks(handle: IO[bytes]) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk


class S3Blobs(Blobs):
    """Objects ``<prefix><id>`` in a bucket, through boto3 (credentials as boto3 finds them unless
    the settings give them)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.files_s3_bucket is not None
        self.bucket = settings.files_s3_bucket
        self.prefix = settings.files_s3_prefix
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=settings.files_s3_endpoint_url, region_name=settings.files_s3_region,
            aws_access_key_id=settings.files_s3_access_key_id,
            aws_secret_access_key=settings.files_s3_secret_access_key,
            config=Config(retries={"mode": "standard"}))

    def put(self, key: str, source: IO[bytes]) -> None:
        source.seek(0)
        with _bucket_errors(key):
            self.client.upload_fileobj(source, self.bucket, self.prefix + key)

    def chunks(self, key: str) -> Iterator[bytes]:
        with _bucket_errors(key):
            answer = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        return _body_chunks(answer["Body"], key)

    def delete(self, key: str) -> None:
        with _bucket_errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)


@contextlib.contextmanager
def _bucket_errors(key: str) -> Iterator[None]:
    """boto3's failures as Cove's: a missing object is a 404, anything else a 500 that says the bucket
    failed and how (S3's error code or the kind of failure), never the endpoint or credentials."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404"):
            raise _gone(key) from None
        raise CoveError(f"The files bucket refused the request ({code}).") from None
    except BotoCoreError as exc:
        raise CoveError(f"The files bucket could not be used ({type(exc).__name__}).") from None


def _body_chunks(body: Any, key: str) -> Iterator[bytes]:
    with contextlib.closing(body), _bucket_errors(key):
        yield from body.iter_chunks(CHUNK)


def blobs_for(settings: Settings) -> Blobs:
    """The bucket when one is configured, else the data dir."""
    return S3Blobs(settings) if settings.files_s3_bucket else LocalBlobs(settings.files_dir)
