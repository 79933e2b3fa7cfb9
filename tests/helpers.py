"""Small helpers shared by the API tests."""

from __future__ import annotations

import httpx


def run(http: httpx.Client, container_id: str, *commands: str, **options: object) -> list[dict[str, object]]:
    """Runs commands through the exec extension; returns the output entries."""
    response = http.post(f"/v1/containers/{container_id}/exec", json={"commands": list(commands), **options})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "container.exec"
    return list(body["output"])
