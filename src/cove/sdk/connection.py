"""Where the server is and how to talk to it: ``COVE_BASE_URL`` and ``COVE_API_KEY``, an httpx client,
errors mapped to exceptions, and the server-sent events of streaming routes.

``COVE_BASE_URL`` may be given with or without ``/v1`` (``http://127.0.0.1:8080`` or
``http://127.0.0.1:8080/v1``), as people paste either; without a key the server must be in keyless
(loopback) mode.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from cove.sdk.errors import APIError

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
REQUEST_TIMEOUT = 120.0


@dataclass(frozen=True)
class ConnectionConfig:
    """The server's root URL (no ``/v1``) and the API key, from arguments or the environment."""

    base_url: str
    api_key: str | None

    @classmethod
    def of(cls, base_url: str | None = None, api_key: str | None = None) -> ConnectionConfig:
        url = (base_url or os.environ.get("COVE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if url.endswith("/v1"):
            url = url[: -len("/v1")]
        return cls(url, api_key if api_key is not None else os.environ.get("COVE_API_KEY") or None)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def ws_url(self, path: str) -> str:
        """The ``ws://`` (or ``wss://``) URL of an API path."""
        return "ws" + self.base_url[len("http"):] + "/v1" + path


class Connection:
    """One httpx client for one server; every call of a sandbox and its children goes through it."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self.http = httpx.AsyncClient(base_url=config.base_url + "/v1", headers=config.headers,
                                      timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=10.0))

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of a call, or the ``APIError`` its error answer describes."""
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise APIError.of(response.status_code, _json_or_text(response))
        return response.json()

    async def events(self, method: str, path: str, *, timeout: float | None,
                     **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        """The events of a streaming route (``data:`` lines, up to ``[DONE]``), each as it arrives.

        ``timeout`` bounds the wait between two reads (None: a background command may be silent for long).
        """
        request = self.http.build_request(method, path, timeout=httpx.Timeout(timeout, connect=10.0), **kwargs)
        response = await self.http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise APIError.of(response.status_code, _json_or_text(response))
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    return
                yield json.loads(data)
        finally:
            await response.aclose()

    async def close(self) -> None:
        await self.http.aclose()


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
