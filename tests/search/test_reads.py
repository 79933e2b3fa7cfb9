"""Page reads of the online engines: the read policy (names, addresses, ports, allowed domains, every
redirect again), size and type limits, and main-text extraction; on loopback through the test
name mapping, and over HTTPS on the stand-in internet (tests/internet.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cove.search.base import Page, Query, SearchFailed
from cove.search.engines import Engines, engine_for
from tests.helpers import pdf_bytes
from tests.internet import Internet
from tests.search.fakes import FakeEngines

ROOT = Path(__file__).parent.parent.parent
ARTICLE = (b"<html><head><title>Release notes</title></head><body><nav>Home | Blog | About</nav>"
           b"<article><h1>Pandas 2.2 released</h1><p>Copy-on-write warnings arrive in this release, along "
           b"with a pyarrow-backed string dtype that is faster for text columns.</p><p>Several aliases "
           b"are deprecated.</p></article><footer>(c) footer text</footer></body></html>")


def read(settings: Any, fake: FakeEngines, url: str, domains: tuple[str, ...] = ()) -> Page:
    engine = engine_for(f"searxng:{fake.url}/searxng", settings)
    assert engine is not None

    async def go() -> Page:
        async with asyncio.timeout(30):
            try:
                return await engine.open(url, domains)
            finally:
                await engine.aclose()
    return asyncio.run(go())


def refused(settings: Any, fake: FakeEngines, url: str, domains: tuple[str, ...] = ()) -> str:
    with pytest.raises(SearchFailed) as failed:
        read(settings, fake, url, domains)
    return failed.value.message


def test_a_page_is_read_as_its_main_text(fake: FakeEngines, settings_for: Any) -> None:
    fake.pages = {"a": ("text/html; charset=utf-8", ARTICLE), "doc.pdf": ("application/pdf", pdf_bytes("Hello PDF")),
                  "notes": ("text/markdown", b"# Notes\n\nplain *markdown* text\n")}
    page = read(settings_for(), fake, f"http://pages.test:{fake.port}/pages/a")
    assert page.url == f"http://pages.test:{fake.port}/pages/a"
    assert "Copy-on-write warnings arrive" in page.text and "Several aliases are deprecated." in page.text
    assert "footer text" not in page.text and "Home | Blog" not in page.text
    assert fake.requests[-1].headers["Host"] == f"pages.test:{fake.port}"
    assert read(settings_for(), fake, f"http://pages.test:{fake.port}/pages/doc.pdf").text == "Hello PDF"
    notes = read(settings_for(), fake, f"http://pages.test:{fake.port}/pages/notes")
    assert (notes.title, notes.text) == ("Notes", "# Notes\n\nplain *markdown* text")


def test_redirects_are_followed_and_checked_again(fake: FakeEngines, settings_for: Any) -> None:
    fake.pages = {"a": ("text/html", ARTICLE), "moved": ("redirect:/pages/a", b""),
                  "away": (f"redirect:http://other.test:{fake.port}/pages/a", b""),
                  "inside": (f"redirect:http://localhost:{fake.port}/pages/a", b""),
                  "loop": ("redirect:/pages/loop", b"")}
    base = f"http://pages.test:{fake.port}/pages"
    assert read(settings_for(), fake, f"{base}/moved").url == f"{base}/a"
    assert read(settings_for(), fake, f"{base}/away").url == f"http://other.test:{fake.port}/pages/a"
    assert refused(settings_for(), fake, f"{base}/away", ("pages.test",)) == (
        "other.test is outside the allowed domains (pages.test).")
    assert refused(settings_for(), fake, f"{base}/inside") == (
        "Reading localhost was refused: localhost resolves to 127.0.0.1, a Cove's own address.")
    assert refused(settings_for(), fake, f"{base}/loop").endswith("redirected more than 5 times.")


def test_the_read_policy_refuses_what_it_does_not_allow(fake: FakeEngines, settings_for: Any) -> None:
    fake.pages = {"a": ("text/html", ARTICLE)}
    port = fake.port
    before = len(fake.requests)
    assert refused(settings_for(), fake, f"http://127.0.0.1:{port}/pages/a") == (
        f"http://127.0.0.1:{port}/pages/a names an IP address; pages are read by name only.")
    assert refused(settings_for(), fake, f"http://localhost:{port}/pages/a").startswith(
        "Reading localhost was refused: localhost resolves to 127.0.0.1")
    # Named exactly, a name may resolve to a private address, but never to this host.
    assert refused(settings_for(web_read_domains="*,localhost"), fake, f"http://localhost:{port}/pages/a") == (
        "localhost resolves to an address of this server.")
    assert refused(settings_for(web_read_domains="pages.test"), fake, f"http://other.test:{port}/pages/a") == (
        "Reading pages from other.test is not allowed by this server's policy.")
    assert refused(settings_for(egress_ports="80,443"), fake, f"http://pages.test:{port}/pages/a") == (
        f"Port {port} is not allowed for page reads (allowed: 80, 443).")
    assert refused(settings_for(), fake, f"http://pages.test:{port}/pages/a", ("example.org",)) == (
        "pages.test is outside the allowed domains (example.org).")
    assert refused(settings_for(), fake, "file:///etc/passwd") == "file:///etc/passwd is not an http(s) URL."
    assert len(fake.requests) == before  # none of them reached the server
    assert read(settings_for(web_read_domains="pages.test,other.test"), fake, f"http://other.test:{port}/pages/a").title


def test_size_type_and_status_are_bounded(fake: FakeEngines, settings_for: Any) -> None:
    long_page = b"<html><body><article>" + b"<p>word " * 5000 + b"</p></article></body></html>"
    fake.pages = {"long": ("text/html", long_page), "image": ("image/png", b"\x89PNG\r\n\x1a\n"),
                  "big.pdf": ("application/pdf", pdf_bytes("x" * 80) + b"%" * 4096)}
    base = f"http://pages.test:{fake.port}/pages"
    assert len(read(settings_for(web_read_max="2k"), fake, f"{base}/long").text) < 2048
    assert refused(settings_for(), fake, f"{base}/image") == (
        f"{base}/image is image/png, not a page that can be read as text.")
    assert refused(settings_for(web_read_max="1k"), fake, f"{base}/big.pdf") == (
        f"{base}/big.pdf is a PDF larger than 1024 bytes.")
    assert refused(settings_for(), fake, f"{base}/missing") == f"{base}/missing answered HTTP 404."
    fake.delay = 3.0  # a page slower than the read timeout
    assert refused(settings_for(web_read_timeout=0.5), fake, f"{base}/long") == (
        f"Reading {base}/long took longer than 0.5 s.")


def test_pages_are_cached_per_url_and_domains(fake: FakeEngines, settings_for: Any) -> None:
    fake.pages = {"a": ("text/html", ARTICLE)}
    url = f"http://pages.test:{fake.port}/pages/a"
    engines = Engines(settings_for(web_search_cache_seconds=60))

    async def go() -> None:
        engine = engines.get(f"searxng:{fake.url}/searxng")
        assert engine is not None
        first = await engine.open(url)
        fake.pages = {"a": ("text/html", b"<html><body><p>changed since</p></body></html>")}
        assert await engine.open(url) == first
        with pytest.raises(SearchFailed, match="outside the allowed domains"):
            await engine.open(url, ("example.org",))  # a narrower filter is never served from the cache
        assert (await engine.open(url, ("pages.test",))).text == "changed since"
        await engines.aclose()
    asyncio.run(go())
    assert [r.path for r in fake.requests] == ["/pages/a", "/pages/a"]


@pytest.mark.root
def test_pages_on_the_internet_over_https(fake: FakeEngines, settings_for: Any, internet: Internet) -> None:
    www = internet.dir / "www" / "search-pages"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_bytes(ARTICLE)
    settings = settings_for(egress_test_hosts=internet.test_hosts, egress_ca_file=internet.ca,
                            egress_ports="80,443")
    fake.results = [{"url": "https://pypi.cove.test/search-pages", "title": "Pandas 2.2", "content": "notes"},
                    {"url": "https://blocked.cove.test/search-pages/", "title": "Elsewhere", "content": "x"}]
    engine = engine_for(f"searxng:{fake.url}/searxng", settings)
    assert engine is not None

    async def search_then_open() -> Page:
        try:
            (hit,) = await engine.search(Query("pandas", domains=("pypi.cove.test",)))
            return await engine.open(hit.url, ("pypi.cove.test",))
        finally:
            await engine.aclose()
    # The host answers the directory without its slash with a redirect, which is followed.
    page = asyncio.run(search_then_open())
    assert page.url == "https://pypi.cove.test/search-pages/"
    assert "Copy-on-write warnings arrive" in page.text
    assert read(settings, fake, "http://other.cove.test/search-pages/", ("cove.test",)).text == page.text
    assert refused(settings_for(web_read_domains="pypi.cove.test", egress_test_hosts=internet.test_hosts,
                                egress_ca_file=internet.ca), fake, "https://blocked.cove.test/search-pages/") == (
        "Reading pages from blocked.cove.test is not allowed by this server's policy.")
    arrived = [entry["path"] for entry in internet.requests() if entry["path"].startswith("/search-pages")]
    assert arrived == ["/search-pages", "/search-pages/", "/search-pages/"]


_READ_ONE = """
import asyncio, json, sys
from cove.config import Settings
from cove.search.base import SearchFailed
from cove.search.reader import PageReader

async def main() -> None:
    reader = PageReader.from_settings(Settings(web_read_domains=sys.argv[1], egress_test_hosts=""))
    try:
        page = await reader.read(sys.argv[2])
        print(json.dumps({"text": page.text}))
    except SearchFailed as exc:
        print(json.dumps({"refused": exc.message}))
    finally:
        await reader.aclose()

asyncio.run(main())
"""


@pytest.mark.root
def test_private_addresses_only_for_names_listed_exactly(internet: Internet, tmp_path: Path) -> None:
    """A name that resolves (here through /etc/hosts, in a mount namespace of its own) to a private
    address is refused, unless COVE_WEB_READ_DOMAINS names it exactly (an intranet wiki)."""
    www = internet.dir / "www" / "intranet"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_bytes(ARTICLE)
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{internet.address} wiki.intranet.test\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}

    def read_in_namespace(domains: str) -> dict[str, str]:
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f'mount --bind "{hosts}" /etc/hosts && exec "$0" "$@"', sys.executable, "-c", _READ_ONE, domains,
             "http://wiki.intranet.test/intranet/"], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    assert read_in_namespace("*") == {"refused": f"Reading wiki.intranet.test was refused: wiki.intranet.test "
                                                 f"resolves to {internet.address}, a private address."}
    assert read_in_namespace("*.intranet.test") == read_in_namespace("*")  # a wildcard is not an exact name
    assert "Copy-on-write warnings arrive" in read_in_namespace("*,wiki.intranet.test")["text"]
