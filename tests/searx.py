"""Web pages and a SearXNG instance for end-to-end web search tests: the instance's JSON API on 127.0.0.1
(the operator's own, trusted; ``tests/search/fakes.py``), the pages it finds on the test internet
(``tests/internet.py``), read through the engine's read policy like any page."""

from __future__ import annotations

from tests.internet import Internet
from tests.search.fakes import FakeEngines

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


RESULTS = [
    {"url": PANDAS, "title": "What's new in pandas 2.2", "content": "pandas 2.2 adds a pyarrow string dtype."},
    {"url": NUMPY, "title": "NumPy news", "content": "NumPy 2.0 released."}]
"""What the SearXNG instance answers (``tests/search/fakes.py``' ``FakeEngines.results``)."""


def searx_instance() -> FakeEngines:
    """A SearXNG instance (JSON API) on 127.0.0.1 answering every query with ``RESULTS``; its spec is
    ``searxng:{url}/searxng``."""
    fake = FakeEngines().start()
    fake.results = list(RESULTS)
    return fake


def write_pages(internet: Internet) -> None:
    """The pages, served by the test internet's host under every test name."""
    web = internet.dir / "www" / "web"
    web.mkdir(exist_ok=True)
    (web / "pandas.html").write_text(PANDAS_HTML)
    (web / "numpy.html").write_text(NUMPY_HTML)
