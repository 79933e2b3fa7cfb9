"""Web search engines: the offline index's query time over 100k documents and its build time, and
what the SearXNG engine adds to an engine's own answer time.

* Offline index: 100,000 Markdown files (about 150 words each, drawn from a 20,000-word vocabulary
  with Zipf frequencies, as natural text has; seeded, so every run indexes the same corpus) are
  written to a temporary directory and indexed with ``cove search index``'s own ``plan`` and
  ``build`` (file reads, extraction, tantivy). Then 300 queries of two or three words (after 30
  untimed) through ``IndexEngine.search``, as the tool calls it (worker thread, BM25 top 10,
  snippets). Target: p50 <= 20 ms.
* Engine layer: a SearXNG-compatible JSON server on 127.0.0.1 answering 10 results at once; the
  same request by a bare ``httpx`` client (the engine's own time) and through ``SearxngEngine``
  (request building, bounded read, JSON, cleaning and filtering the hits). The difference of the
  p50s is what Cove's engine layer adds per search.

Prints a table with p50, p95 and PASS/MISS; targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from percentiles import p50_p95
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cove.config import Settings
from cove.search.base import Query
from cove.search.build import build, default_workers, plan
from cove.search.index import IndexEngine
from cove.search.reader import PageReader
from cove.search.searxng import SearxngEngine

DOCUMENTS = 100_000
WORDS_PER_DOC = 150
VOCABULARY = 20_000
QUERIES = 300
WARMUP = 30
TARGET_QUERY_MS = 20.0
HTML_PAGES = 1000
console = Console()


def _vocabulary(rng: random.Random) -> list[str]:
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def write_corpus(directory: Path, documents: int) -> list[str]:
    """The documents, in 100 subdirectories; returns the vocabulary, most frequent first."""
    rng = random.Random(13)
    words = _vocabulary(rng)
    weights = [1 / rank for rank in range(1, len(words) + 1)]
    with Progress(TextColumn("writing documents"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("", total=documents)
        for number in range(documents):
            sub = directory / f"{number % 100:02d}"
            if number < 100:
                sub.mkdir()
            body = rng.choices(words, weights, k=WORDS_PER_DOC)
            title = " ".join(rng.choices(words[200:], k=3))
            sentences = [" ".join(body[i:i + 15]).capitalize() + "." for i in range(0, len(body), 15)]
            (sub / f"doc{number}.md").write_text(f"# {title}\n\n" + " ".join(sentences) + "\n")
            if number % 1000 == 0:
                progress.update(task, completed=number)
        progress.update(task, completed=documents)
    return words


def html_build(work: Path, words: list[str], workers: int) -> dict[int, float]:
    """Documents per second building HTML_PAGES pages of about 30 KB (a menu of 200 links, 25
    paragraphs, a table), with one extraction process and with ``workers``."""
    rng = random.Random(5)
    pages = work / "html"
    pages.mkdir()
    menu = "".join(f"<li><a href='/wiki/{w}'>{w}</a></li>" for w in words[:200])
    for number in range(HTML_PAGES):
        paragraphs = "".join(f"<p>{' '.join(rng.choices(words[:5000], k=120))}.</p>" for _ in range(25))
        (pages / f"page{number}.html").write_text(
            f"<html><head><title>Page {number}</title></head><body><nav><ul>{menu}</ul></nav><main>"
            f"<h1>Page {number}</h1>{paragraphs}<table>{'<tr><td>a</td><td>b</td></tr>' * 30}</table></main>"
            "<footer>site footer</footer></body></html>")
    rates: dict[int, float] = {}
    for count in sorted({1, workers, 2}):
        started = time.perf_counter()
        build(work / "data", "bench-html", plan([pages]), workers=count)
        rates[count] = HTML_PAGES / (time.perf_counter() - started)
    return rates


async def _measure(count: int, once: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(WARMUP):
        await once()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await once()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def offline_index(work: Path, documents: int, workers: int) -> tuple[float, int, list[float], list[str]]:
    docs = work / "docs"
    docs.mkdir()
    words = write_corpus(docs, documents)
    started = time.perf_counter()
    sources = plan([docs])
    with Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("", total=sources.total)
        built = build(work / "data", "bench", sources,
                      lambda done, _what: progress.update(task, completed=done) if done % 1000 == 0 else None,
                      workers)
    build_s = time.perf_counter() - started
    engine = IndexEngine("bench", work / "data")
    rng = random.Random(7)
    middle = words[100:5000]  # neither stop-word common nor hapax rare: what a model searches for
    queries = iter([Query(" ".join(rng.sample(middle, rng.randint(2, 3)))) for _ in range(QUERIES + WARMUP)])
    samples = await _measure(QUERIES, lambda: engine.search(next(queries)))
    return build_s, built.documents, samples, words


async def engine_layer() -> tuple[list[float], list[float]]:
    answer = json.dumps({"query": "q", "number_of_results": 10, "results": [
        {"url": f"https://docs.example.org/page/{i}", "title": f"Result <b>{i}</b> about the query",
         "content": "A snippet of about two hundred characters, as SearXNG passes on from its engines, with "
                    "<strong>matched</strong> words marked up &amp; entities. " * 2, "engine": "bench"}
        for i in range(10)]}).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(answer)

    handlers: dict[asyncio.Task[object], asyncio.StreamWriter] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            handlers[task] = writer
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(head + answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    reader = PageReader.from_settings(Settings())
    engine = SearxngEngine(base, reader, timeout=10)
    async with httpx.AsyncClient() as bare:
        params = {"q": "pandas changelog", "format": "json", "pageno": "1"}

        async def direct() -> None:
            (await bare.get(f"{base}/search", params=params)).json()
        raw = await _measure(QUERIES, direct)
        through = await _measure(QUERIES, lambda: engine.search(Query("pandas changelog")))
    await engine.aclose()
    await reader.aclose()
    server.close()
    for writer in handlers.values():
        writer.transport.abort()  # ends each handler's read, so it returns rather than being cancelled
    await asyncio.gather(*handlers, return_exceptions=True)
    await server.wait_closed()
    return raw, through


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--documents", type=int, default=DOCUMENTS, help="size of the generated corpus")
    parser.add_argument("--workers", type=int, default=default_workers(), help="text extraction processes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cove-bench-search-", dir="/var/tmp"))
    try:
        build_s, documents, queries, words = await offline_index(work, args.documents, args.workers)
        with console.status(f"building {HTML_PAGES} HTML pages"):
            html_rates = html_build(work, words, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw, through = await engine_layer()
    table = Table(title="Web search (ms)")
    for column in ("what", "p50", "p95", "target", ""):
        table.add_column(column, justify="left" if column in ("what", "") else "right")
    p50, p95 = p50_p95(queries)
    table.add_row(f"offline index query ({documents:,} documents)", f"{p50:.2f}", f"{p95:.2f}",
                  f"<= {TARGET_QUERY_MS:.0f}", "PASS" if p50 <= TARGET_QUERY_MS else "MISS")
    raw_p50, raw_p95 = p50_p95(raw)
    through_p50, through_p95 = p50_p95(through)
    table.add_row("SearXNG answer, bare httpx", f"{raw_p50:.2f}", f"{raw_p95:.2f}", "", "")
    table.add_row("SearXNG answer, through SearxngEngine", f"{through_p50:.2f}", f"{through_p95:.2f}", "", "")
    table.add_row("engine layer adds (p50 difference)", f"{through_p50 - raw_p50:.2f}", "", "", "")
    console.print(table)
    console.print(f"offline index build: {documents:,} Markdown documents in {build_s:.1f} s "
                  f"({documents / build_s:,.0f} documents/s, extraction processes: {args.workers})")
    rates = [f"{rate:,.0f} documents/s with {count} process{'es' if count > 1 else ''}"
             for count, rate in html_rates.items()]
    console.print("HTML pages of 30 KB (trafilatura): " + ", ".join(rates))


if __name__ == "__main__":
    asyncio.run(main())
