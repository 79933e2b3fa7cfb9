"""The offline index: ``cove search index`` over a directory of HTML, Markdown, text and PDF files and
over a ZIM archive written here with libzim; ``index:NAME`` answers queries (BM25, snippets,
allowed domains) and reads pages from it; a rebuild replaces it whole."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from libzim.writer import Creator, Hint, Item, StringProvider  # type: ignore[import-untyped]

from cove.config import Settings
from cove.errors import InvalidRequest
from cove.search.base import Hit, Page, Query, SearchEngine, SearchFailed, SearchNotConfigured
from cove.search.build import build, plan
from cove.search.engines import engine_for
from tests.helpers import pdf_bytes

ROOT = Path(__file__).parent.parent.parent


class _Entry(Item):  # type: ignore[misc]
    def __init__(self, path: str, title: str, mimetype: str, content: bytes) -> None:
        super().__init__()
        self.path, self.title, self.mimetype, self.content = path, title, mimetype, content

    def get_path(self) -> str:
        return self.path

    def get_title(self) -> str:
        return self.title

    def get_mimetype(self) -> str:
        return self.mimetype

    def get_contentprovider(self) -> StringProvider:
        return StringProvider(self.content)

    def get_hints(self) -> dict[Hint, int]:
        return {Hint.FRONT_ARTICLE: self.mimetype == "text/html"}


def write_zim(path: Path) -> None:
    html = ("<html><head><title>{0}</title></head><body><div id='content'><h1>{0}</h1><p>{1}</p></div>"
            "</body></html>")
    with Creator(str(path)).config_indexing(False, "eng") as creator:
        creator.set_mainpath("Volcano")
        creator.add_metadata("Title", "Test wiki")
        creator.add_metadata("Language", "eng")
        creator.add_item(_Entry("Volcano", "Volcano", "text/html", html.format(
            "Volcano", "A volcano is a rupture in the crust where lava, ash and gases escape.").encode()))
        creator.add_item(_Entry("Glacier", "Glacier", "text/html", html.format(
            "Glacier", "A glacier is a persistent body of dense ice that moves under its own weight.").encode()))
        creator.add_item(_Entry("I/logo.png", "logo", "image/png", b"\x89PNG\r\n\x1a\nnot really"))
        creator.add_redirection("Volcanoes", "Volcanoes", "Volcano", {Hint.FRONT_ARTICLE: False})


def write_docs(root: Path) -> None:
    (root / "guide" / "deep").mkdir(parents=True)
    (root / "guide" / "pandas.html").write_text(
        "<html><head><title>Pandas notes</title><link rel='canonical' href='https://docs.example.org/pandas/'>"
        "</head><body><nav>Menu</nav><main><h1>Pandas 2.2</h1><p>The pandas 2.2 release adds copy-on-write "
        "warnings and a pyarrow string dtype for faster text columns.</p></main></body></html>")
    (root / "guide" / "local.html").write_text(
        "<html><head><title>Local page</title></head><body><p>Kubernetes pods restart when their liveness "
        "probe fails three times in a row.</p></body></html>")
    (root / "guide" / "deep" / "rust.md").write_text(
        "# Rust ownership\n\nEvery value in Rust has an owner; borrowing lets code use a value without "
        "taking it.\n")
    (root / "tea.txt").write_text("Tea brewing\nGreen tea wants water at 80 degrees for two minutes.\n")
    (root / "report.pdf").write_bytes(pdf_bytes("Quarterly revenue grew by twelve percent"))
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # skipped: not a document


def ask(engine: SearchEngine | None, query: Query) -> list[Hit]:
    assert engine is not None
    return asyncio.run(engine.search(query))


def read(engine: SearchEngine | None, url: str, domains: tuple[str, ...] = ()) -> Page:
    assert engine is not None
    return asyncio.run(engine.open(url, domains))


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Settings, Path]:
    docs = tmp_path / "docs"
    write_docs(docs)
    write_zim(tmp_path / "Test_Wiki.zim")
    settings = Settings(data_dir=tmp_path / "data")
    built = build(settings.data_dir, "docs", plan([docs, tmp_path / "Test_Wiki.zim"]))
    assert (built.documents, built.skipped) == (7, 2)  # 5 files and 2 ZIM articles; a redirect and an image skipped
    return settings, docs


def test_queries_find_every_kind_of_document_with_snippets(corpus: tuple[Settings, Path]) -> None:
    settings, docs = corpus
    engine = engine_for("index:docs", settings)
    expected = {
        "pyarrow string dtype": ("https://docs.example.org/pandas/", "Pandas 2.2", "copy-on-write warnings"),
        "liveness probe": ((docs / "guide" / "local.html").as_uri(), "Local page", "liveness probe fails"),
        "borrowing": ((docs / "guide" / "deep" / "rust.md").as_uri(), "Rust ownership", "borrowing lets code"),
        "green tea": ((docs / "tea.txt").as_uri(), "Tea brewing", "80 degrees"),
        "quarterly revenue": ((docs / "report.pdf").as_uri(), "Quarterly revenue grew by twelve percent", "twelve"),
        "lava ash": ("zim://test_wiki/Volcano", "Volcano", "lava, ash and gases"),
        "glaciers ice": ("zim://test_wiki/Glacier", "Glacier", "dense ice"),
    }
    for text, (url, title, snippet) in expected.items():
        hits = ask(engine, Query(text))
        assert hits, text
        assert (hits[0].url, hits[0].title) == (url, title)
        assert snippet in hits[0].snippet
    assert ask(engine, Query("zebra unicorn")) == []
    assert ask(engine, Query('title:"unbalanced (quotes AND')) == []  # query syntax errors are no failure


def test_open_reads_the_same_documents(corpus: tuple[Settings, Path]) -> None:
    settings, docs = corpus
    engine = engine_for("index:docs", settings)
    page = read(engine, "zim://test_wiki/Volcano")
    assert (page.title, page.text) == ("Volcano", "Volcano\nA volcano is a rupture in the crust where lava, ash and "
                                       "gases escape.")
    assert "pyarrow string dtype" in read(engine, "https://docs.example.org/pandas/").text
    assert read(engine, (docs / "report.pdf").as_uri()).text == "Quarterly revenue grew by twelve percent"
    with pytest.raises(SearchFailed, match="is not in the offline index 'docs'"):
        read(engine, "https://docs.example.org/other")


def test_allowed_domains_narrow_results_and_reads(corpus: tuple[Settings, Path]) -> None:
    settings, _ = corpus
    engine = engine_for("index:docs", settings)
    query = "pandas volcano tea"
    assert len(ask(engine, Query(query))) == 3
    assert [hit.url for hit in ask(engine, Query(query, domains=("example.org",)))] == [
        "https://docs.example.org/pandas/"]
    assert [hit.url for hit in ask(engine, Query(query, domains=("test_wiki",)))] == ["zim://test_wiki/Volcano"]
    assert ask(engine, Query(query, domains=("python.org",))) == []
    with pytest.raises(SearchFailed, match=r"is outside the allowed domains \(python.org\)"):
        read(engine, "https://docs.example.org/pandas/", ("python.org",))


def test_a_rebuild_replaces_the_index_whole(corpus: tuple[Settings, Path], tmp_path: Path) -> None:
    settings, _ = corpus
    engine = engine_for("index:docs", settings)
    assert ask(engine, Query("pyarrow"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "new.md").write_text("# Sourdough\n\nA starter needs flour and water every day.\n")
    broken = plan([other])
    broken.files.append(tmp_path / "gone.md")  # vanished between plan and build: skipped, not fatal
    build(settings.data_dir, "docs", broken)
    assert ask(engine, Query("pyarrow")) == []  # the running engine sees the new index on its next query
    assert ask(engine, Query("sourdough starter"))[0].title == "Sourdough"
    assert sorted(p.name.split(".")[0] for p in (settings.data_dir / "search").iterdir()) == ["docs", "docs"]

    def failing(done: int, _what: str) -> None:
        raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError):
        build(settings.data_dir, "docs", plan([tmp_path / "docs"]), failing)
    assert ask(engine, Query("sourdough starter"))  # the old index still answers
    assert len(list((settings.data_dir / "search").iterdir())) == 2  # the half-built one is gone


def test_sources_that_cannot_be_indexed_are_named(tmp_path: Path) -> None:
    (tmp_path / "broken.zim").write_bytes(b"ZIM? no")
    with pytest.raises(InvalidRequest, match=r"broken.zim is not a readable ZIM archive\.$"):
        plan([tmp_path / "broken.zim"])
    with pytest.raises(InvalidRequest, match=r"nowhere does not exist\.$"):
        plan([tmp_path / "nowhere"])


def test_a_missing_index_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(SearchNotConfigured) as missing:
        engine_for("index:nothing", Settings(data_dir=tmp_path))
    assert missing.value.status_code == 400
    assert missing.value.message == ("There is no offline index named 'nothing': build it with "
                                     "`cove search index nothing PATH...`.")


def test_the_cli_builds_an_index_with_progress(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_docs(docs)
    env = {**os.environ, "COVE_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
           "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "cove", "search", "index", "--workers", "2", "handbook", str(docs)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Indexing handbook" in done.stdout and "5/5" in done.stdout
    assert "Index 'handbook': 5 documents (0 entries skipped)" in done.stdout
    engine = engine_for("index:handbook", Settings(data_dir=tmp_path / "data"))
    assert ask(engine, Query("liveness probe"))[0].title == "Local page"
    bad = subprocess.run([sys.executable, "-m", "cove", "search", "index", "Bad.Name", str(docs)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "'Bad.Name' is not an index name" in bad.stdout

    def cove(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cove", "search", *args], capture_output=True, text=True,
                              env=env, timeout=120)
    listing = cove("ls").stdout.splitlines()
    assert listing[0].split() == ["NAME", "DOCUMENTS", "SIZE", "BUILT"]
    assert listing[1].split()[:2] == ["handbook", "5"]
    assert cove("rm", "handbook").stdout.strip() == "Removed 'handbook'"
    assert cove("ls").stdout.splitlines()[1:] == []
    assert list((tmp_path / "data" / "search").iterdir()) == []
    with pytest.raises(SearchNotConfigured):
        ask(engine, Query("liveness probe"))  # a running engine finds it gone at its next query
    assert (cove("rm", "handbook").returncode, cove("rm", "handbook").stdout.strip()) == (
        1, "Error: There is no offline index named 'handbook'.")
