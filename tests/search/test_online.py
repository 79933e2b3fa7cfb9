"""The online engines (SearXNG, Brave, Tavily) against fake servers speaking their documented JSON on
127.0.0.1: request shapes, results mapped and cleaned, allowed domains, outages, the cache, specs."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from cove.search.base import Hit, Query, SearchEngine, SearchFailed, SearchNotConfigured
from cove.search.engines import Engines, engine_for
from cove.search.spec import parse_spec
from tests.search.fakes import FakeEngines

T = TypeVar("T")

RESULTS = [
    {"url": "https://docs.example.org/pandas/whatsnew", "title": "What's <b>new</b> in pandas 2.2",
     "content": "The <strong>pandas</strong> 2.2 release &amp; its changes\x07 in full."},
    {"url": "https://blog.other.example/pandas", "title": "A blog post", "content": "About pandas."},
    {"url": "javascript:alert(1)", "title": "bad", "content": "not a web URL"},
    {"url": "https://docs.example.org/pandas/whatsnew", "title": "duplicate", "content": "same URL again"},
]


def run(main: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(30):
            return await main()
    return asyncio.run(bounded())


def search(engine: SearchEngine | None, query: Query) -> list[Hit]:
    assert engine is not None

    async def go() -> list[Hit]:
        try:
            return await engine.search(query)
        finally:
            await engine.aclose()
    return run(go)


@pytest.mark.parametrize("spec", ["searxng", "brave", "tavily"])
def test_results_are_mapped_cleaned_and_deduplicated(spec: str, fake: FakeEngines, settings_for: Any) -> None:
    fake.results = RESULTS
    full = f"searxng:{fake.url}/searxng" if spec == "searxng" else spec
    hits = search(engine_for(full, settings_for()), Query("pandas changelog"))
    assert [hit.url for hit in hits] == ["https://docs.example.org/pandas/whatsnew", "https://blog.other.example/pandas"]
    assert hits[0].title == "What's new in pandas 2.2"
    assert hits[0].snippet == "The pandas 2.2 release & its changes in full."
    (request,) = fake.requests
    if spec == "searxng":
        assert (request.method, request.path) == ("GET", "/searxng/search")
        assert request.params == {"q": "pandas changelog", "format": "json", "pageno": "1"}
    elif spec == "brave":
        assert (request.method, request.path) == ("GET", "/brave/res/v1/web/search")
        assert request.headers["X-Subscription-Token"] == "brave-secret-key"
        assert request.params == {"q": "pandas changelog", "count": "10"}
    else:
        assert (request.method, request.path) == ("POST", "/tavily/search")
        assert request.headers["Authorization"] == "Bearer tvly-secret-key"
        assert request.body == {"query": "pandas changelog", "max_results": 10, "search_depth": "basic",
                                "topic": "general"}


@pytest.mark.parametrize("spec", ["searxng", "brave", "tavily"])
def test_allowed_domains_are_asked_for_and_enforced(spec: str, fake: FakeEngines, settings_for: Any) -> None:
    fake.results = RESULTS  # the fake ignores what it is asked: only Cove's own filter can drop the blog
    full = f"searxng:{fake.url}/searxng" if spec == "searxng" else spec
    hits = search(engine_for(full, settings_for()), Query("pandas", domains=("https://example.org/",), size="low"))
    assert [hit.url for hit in hits] == ["https://docs.example.org/pandas/whatsnew"]
    (request,) = fake.requests
    if spec == "tavily":
        assert request.body["include_domains"] == ["example.org"]
        assert request.body["max_results"] == 5
    else:
        assert request.params["q"] == "pandas site:example.org"


def test_the_user_location_reaches_brave(fake: FakeEngines, settings_for: Any) -> None:
    search(engine_for("brave", settings_for()), Query("weather", location={"country": "de", "city": "Berlin"}))
    assert fake.requests[0].params["country"] == "DE"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("status", "raw", "message"), [
    (500, None, "SearXNG is failing (HTTP 500)."),
    (429, None, "SearXNG is over its rate limit or quota (HTTP 429); try again later."),
    (403, None, "SearXNG refused the request (HTTP 403): its JSON format is probably not enabled"),
    (200, b"<html>not json</html>", "SearXNG answered with something that is not a JSON object."),
    (200, b"[1, 2]", "SearXNG answered with something that is not a JSON object."),
    (200, b" " * (5 << 20), "SearXNG answered with more than 4194304 bytes."),
])
def test_an_engine_that_fails_is_a_clear_search_failure(status: int, raw: bytes | None, message: str,
                                                       fake: FakeEngines, settings_for: Any) -> None:
    fake.status, fake.raw = status, raw
    with pytest.raises(SearchFailed) as failed:
        search(engine_for(f"searxng:{fake.url}/searxng", settings_for()), Query("anything"))
    assert failed.value.message.startswith(message)
    assert fake.url not in failed.value.message


def test_an_engine_that_is_down_or_slow_fails_in_time(fake: FakeEngines, settings_for: Any) -> None:
    with pytest.raises(SearchFailed, match=r"^SearXNG could not be reached \(ConnectError\)\.$"):
        search(engine_for(f"searxng:http://127.0.0.1:{_closed_port()}", settings_for()), Query("x"))
    fake.delay = 3.0  # slower than the engine timeout below
    engine = engine_for(f"searxng:{fake.url}/searxng", settings_for(web_search_timeout=0.5))
    begun = time.monotonic()
    with pytest.raises(SearchFailed, match=r"^SearXNG did not answer within 0.5 s\.$"):
        search(engine, Query("x"))
    assert time.monotonic() - begun < 2.5


def test_searxng_with_all_its_engines_failing_is_an_outage(fake: FakeEngines, settings_for: Any) -> None:
    fake.unresponsive = [["google", "CAPTCHA"], ["duckduckgo", "timeout"]]
    with pytest.raises(SearchFailed) as failed:
        search(engine_for(f"searxng:{fake.url}/searxng", settings_for()), Query("x"))
    assert failed.value.message == ("SearXNG found nothing because its engines failed (google CAPTCHA, "
                                    "duckduckgo timeout).")
    fake.results = RESULTS[:1]  # some engines failing, results from others: an answer
    assert len(search(engine_for(f"searxng:{fake.url}/searxng", settings_for()), Query("x"))) == 1


@pytest.mark.parametrize("spec", ["brave", "tavily"])
def test_a_paid_engine_over_quota_never_shows_its_key(spec: str, fake: FakeEngines, settings_for: Any) -> None:
    for status in (401, 429, 500):
        fake.status = status
        with pytest.raises(SearchFailed) as failed:
            search(engine_for(spec, settings_for()), Query("x"))
        assert "secret" not in failed.value.message and "tvly" not in failed.value.message
        assert f"HTTP {status}" in failed.value.message


def test_results_are_cached_and_failures_are_not(fake: FakeEngines, settings_for: Any) -> None:
    engines = Engines(settings_for(web_search_cache_seconds=60))
    spec = f"searxng:{fake.url}/searxng"

    async def go() -> None:
        engine = engines.get(spec)
        assert engine is not None and engines.get(spec) is engine
        fake.status = 500
        with pytest.raises(SearchFailed):
            await engine.search(Query("pandas"))
        fake.status = 200
        fake.results = RESULTS[:1]
        first = await engine.search(Query("pandas"))
        fake.results = RESULTS[1:2]
        assert await engine.search(Query("pandas")) == first
        assert await engine.search(Query("pandas", domains=("other.example",))) != first
        await engines.aclose()
    run(go)
    assert len(fake.requests) == 3


def test_the_same_search_at_once_asks_the_engine_once(fake: FakeEngines, settings_for: Any) -> None:
    engines = Engines(settings_for(web_search_cache_seconds=60))
    fake.results = RESULTS[:1]
    fake.delay = 0.5  # the scenario: an engine slow enough that the searches overlap

    async def go() -> None:
        engine = engines.get(f"searxng:{fake.url}/searxng")
        assert engine is not None
        answers = await asyncio.gather(*(engine.search(Query("same")) for _ in range(5)))
        assert all(answer == answers[0] and answer for answer in answers)
        fake.status = 500
        failures = await asyncio.gather(*(engine.search(Query("other")) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(failure, SearchFailed) for failure in failures)
        fake.status = 200
        assert await engine.search(Query("other"))  # the failure was shared, not kept
        await engines.aclose()
    run(go)
    assert [r.params["q"] for r in fake.requests] == ["same", "other", "other"]


def test_specs() -> None:
    assert parse_spec("index:docs") == ("index", "docs")
    assert parse_spec(" searxng:https://search.example.org ") == ("searxng", "https://search.example.org")
    assert parse_spec("brave") == ("brave", "")
    assert parse_spec("upstream") == ("upstream", "")
    for bad, says in [("google", "'google' is not one Cove knows: use index:NAME"),
                      ("searxng:search.example.org", "does not name the instance's base URL"),
                      ("index:../etc", "is not an index name"), ("brave:key", "not one Cove knows")]:
        with pytest.raises(SearchNotConfigured, match=says):
            parse_spec(bad)


def test_engine_for_needs_keys_and_built_indexes(settings_for: Any) -> None:
    assert engine_for("upstream", settings_for()) is None
    with pytest.raises(SearchNotConfigured, match=r"'brave' needs its API key in COVE_BRAVE_API_KEY"):
        engine_for("brave", settings_for(brave_api_key=None))
    with pytest.raises(SearchNotConfigured, match=r"no offline index named 'docs': build it with `cove search index"):
        engine_for("index:docs", settings_for())
