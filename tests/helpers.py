"""Small helpers shared by the API tests."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from typing import Any

import httpx


def run(http: httpx.Client, container_id: str, *commands: str, **options: object) -> list[dict[str, object]]:
    """Runs commands through the exec extension; returns the output entries."""
    response = http.post(f"/v1/containers/{container_id}/exec", json={"commands": list(commands), **options})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "container.exec"
    return list(body["output"])


def stream_response(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Creates a response with ``stream: true`` and returns its events (without ``[DONE]``)."""
    events = []
    with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    return events


def make_wheel(name: str, version: str) -> tuple[str, bytes]:
    """A minimal pure-Python wheel, so ``pip install`` works with no network."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {version!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: cove-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return f"{name}-{version}-py3-none-any.whl", buf.getvalue()
