"""Search engines on 127.0.0.1 that speak the real wire formats: SearXNG's JSON API, the Brave Search
API and the Tavily API, plus plain pages, from one threaded HTTP server.

Base URLs: ``searxng:{url}/searxng``, ``COVE_BRAVE_BASE_URL={url}/brave/res/v1``,
``COVE_TAVILY_BASE_URL={url}/tavily``; pages at ``{url}/pages/NAME``. Every request is recorded
(``requests``); ``status``, ``delay`` and ``raw`` make it fail the ways real engines do.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Any = None


@dataclass
class FakeEngines:
    results: list[dict[str, str]] = field(default_factory=list)
    """What every engine answers: dicts with ``url``, ``title`` and ``content``."""
    pages: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """``/pages/NAME`` -> (content type, body); a ``redirect:URL`` content type answers 302."""
    status: int = 200
    delay: float = 0.0
    raw: bytes | None = None
    """An answer body sent instead of the engine's JSON (garbage)."""
    unresponsive: list[list[str]] = field(default_factory=list)
    """SearXNG's ``unresponsive_engines``: its upstream engines that failed, with why."""
    requests: list[Recorded] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def start(self) -> FakeEngines:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake._answer(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                fake._answer(self, json.loads(self.rfile.read(length) or b"null"))

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def reset(self) -> None:
        self.results, self.pages, self.requests = [], {}, []
        self.status, self.delay, self.raw, self.unresponsive = 200, 0.0, None, []

    def _answer(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        parts = urlsplit(handler.path)
        params = {key: values[0] for key, values in parse_qs(parts.query).items()}
        self.requests.append(Recorded(handler.command, parts.path, params, dict(handler.headers.items()), body))
        if self.delay:
            time.sleep(self.delay)  # the scenario: an engine slower than Cove waits for
        if parts.path.startswith("/pages/"):
            content_type, page = self.pages.get(parts.path.removeprefix("/pages/"), ("text/plain", b""))
            if content_type.startswith("redirect:"):
                return _send(handler, 302, "text/plain", b"", {"Location": content_type.removeprefix("redirect:")})
            return _send(handler, self.status if parts.path[7:] in self.pages else 404, content_type, page)
        if self.status != 200 or self.raw is not None:
            return _send(handler, self.status, "application/json", self.raw or b'{"error": "failing"}')
        if parts.path == "/searxng/search":
            answer: dict[str, Any] = {"query": params.get("q"), "number_of_results": len(self.results),
                                      "results": [{**r, "engine": "fake", "score": 1.0} for r in self.results],
                                      "answers": [], "suggestions": [], "unresponsive_engines": self.unresponsive}
        elif parts.path == "/brave/res/v1/web/search":
            answer = {"type": "search", "query": {"original": params.get("q")},
                      "web": {"type": "search", "results": [
                          {"title": r["title"], "url": r["url"], "description": r["content"],
                           "type": "search_result"} for r in self.results]}}
        elif parts.path == "/tavily/search" and handler.command == "POST":
            answer = {"query": body.get("query"), "answer": None, "images": [], "response_time": 0.1,
                      "results": [{"title": r["title"], "url": r["url"], "content": r["content"], "score": 0.9}
                                  for r in self.results]}
        else:
            return _send(handler, 404, "text/plain", b"not found")
        return _send(handler, 200, "application/json", json.dumps(answer).encode())


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (Cove's timeout in the outage tests) is the scenario, not an error."""


def _send(handler: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes,
          headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)
