"""``Client``: plain blocking calls to Cove's API for what has no sandbox object (responses, audit
trails), on the SDK's connection and loop; the CLI is built on it and on ``Sandbox``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cove.sdk import _portal
from cove.sdk.connection import Connection, ConnectionConfig


class Client:
    def __init__(self, base_url: str | None = None, api_key: str | None = None) -> None:
        self.config = ConnectionConfig.of(base_url, api_key)
        self._connection = Connection(self.config)

    def get(self, path: str, **params: Any) -> Any:
        """``GET /v1{path}``; list parameters (``include``) go as repeated ``include[]``."""
        return _portal.call(self._connection.request("GET", path, params=_query(params)))

    def events(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """The server-sent events of ``GET /v1{path}`` (e.g. a background response followed live)."""
        return _portal.iterate(self._connection.events("GET", path, params=_query(params), timeout=None))

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return _portal.call(self._connection.request("POST", path, json=body or {}))

    def delete(self, path: str) -> Any:
        return _portal.call(self._connection.request("DELETE", path))

    def pages(self, path: str, *, limit: int | None = None, order: str = "desc", after: str | None = None,
              **params: Any) -> Iterator[dict[str, Any]]:
        """The objects of a cursor-paginated list (those past ``after``), page by page, the first
        ``limit`` of them (None: all)."""
        seen = 0
        while True:
            page = self.get(path, limit=100 if limit is None else min(100, limit - seen), order=order, after=after,
                            **params)
            for item in page["data"]:
                yield item
                seen += 1
            if not page["has_more"] or (limit is not None and seen >= limit):
                return
            after = page["last_id"]

    def close(self) -> None:
        _portal.call(self._connection.close())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _query(params: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(f"{key}[]" if isinstance(value, list) else key, item) for key, value in params.items()
            if value is not None for item in (value if isinstance(value, list) else [value])]
