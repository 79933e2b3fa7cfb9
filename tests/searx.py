"""A SearXNG instance and web pages for web search tests: the instance's JSON API on 127.0.0.1 (the
operator's own, trusted), the pages on the test internet (``tests/internet.py``), read through the
engine's read policy like any page."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.internet import Internet

PANDAS = "https://api.cove.test/web/pandas.html"
NUMPY = "https://other.cove.test/web/numpy.html"
PANDAS_HTML = """<!doctype html><html><head><title>What's new in pandas 2.2</title></head><body>
<nav>Home | Docs | Community</nav>
<main><h1>What's new in pandas 2.2</h1>
<p>pandas 2.2 adds a pyarrow-backed string dtype that is faster and uses less memory than object strings.</p>
<p>Copy-on-Write becomes the default in pandas 3.0; version 2.2 warns about chained assignment that will
stop working then. Read the migration guide before upgrading large code bases.</p>
<p>Also new: Series.struct and Series.list accessors for pyarrow struct and list data.</p></main>
<footer>Copyright pandas developers</footer></body></html>
"""
NUMPY_HTML = """<!doctype html><html><head><title>NumPy news</title></head><body><main>
<h1>NumPy 2.0 released</h1><p>NumPy 2.0 is the first major release since 2006, with a cleaned-up API.</p>
</main></body></html>
"""


class Searx:
    """A SearXNG instance's JSON API (``GET /search?q=...&format=json``) on 127.0.0.1: it answers
    every query with ``results``, or with ``status`` when set (an outage), and keeps the queries."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.status = 200
        self.queries: list[str] = []
        searx = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                params = parse_qs(url.query)
                searx.queries.append(params.get("q", [""])[0])
                ok = url.path == "/search" and params.get("format") == ["json"] and searx.status == 200
                body = json.dumps({"query": searx.queries[-1], "results": searx.results} if ok
                                  else {"error": "unavailable"}).encode()
                self.send_response(searx.status if url.path == "/search" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        self.results = [
            {"url": PANDAS, "title": "What's new in pandas 2.2", "content": "pandas 2.2 adds a pyarrow string dtype.",
             "engine": "duckduckgo"},
            {"url": NUMPY, "title": "NumPy news", "content": "NumPy 2.0 released.", "engine": "bing"}]
        self.status = 200
        self.queries.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_pages(internet: Internet) -> None:
    """The pages, served by the test internet's host under every test name."""
    web = internet.dir / "www" / "web"
    web.mkdir(exist_ok=True)
    (web / "pandas.html").write_text(PANDAS_HTML)
    (web / "numpy.html").write_text(NUMPY_HTML)
