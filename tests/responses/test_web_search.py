"""Hosted web search end to end: the real server, the ``openai`` SDK and the agents SDK as clients, the
real SearXNG engine (``cove.search``) asking a SearXNG-compatible JSON endpoint on 127.0.0.1 (the
operator's own instance), pages read from the test internet (``tests/internet.py``) through the
engine's read policy, and an offline index built with ``cove search index`` (no network at all). The
model is the scripted upstream."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import KEYS, Server, _server_env, data_dir, running_server
from tests.internet import Internet
from tests.postgres import PostgresServer
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall
from tests.search.fakes import FakeEngines
from tests.searx import NUMPY, PANDAS, RESULTS, searx_instance, write_pages
from tests.wire_shapes import event_errors, response_errors

pytestmark = pytest.mark.root  # the test internet is a network namespace

MODEL = "scripted-model"


@pytest.fixture(scope="module")
def searx() -> Iterator[FakeEngines]:
    instance = searx_instance()
    yield instance
    instance.stop()


@pytest.fixture(autouse=True)
def fresh_searx(searx: FakeEngines) -> None:
    searx.reset()
    searx.results = list(RESULTS)


def queries(searx: FakeEngines) -> list[str]:
    return [request.params.get("q", "") for request in searx.requests if request.path == "/searxng/search"]


@pytest.fixture(scope="module")
def pages(internet: Internet) -> Internet:
    """The pages on the test internet (every test name leads to the one host, which serves these)."""
    write_pages(internet)
    return internet


@pytest.fixture(scope="module")
def search_server(upstream: ScriptedUpstream, postgres: PostgresServer | None, searx: FakeEngines,
                  pages: Internet) -> Iterator[Server]:
    """A server whose web search is the SearXNG instance above."""
    env = {**_server_env(upstream, postgres), **pages.server_env(), "COVE_WEB_SEARCH": f"searxng:{searx.url}/searxng"}
    with running_server(data_dir("cove-search"), env) as srv:
        yield srv


@pytest.fixture(scope="module")
def sclient(search_server: Server) -> openai.OpenAI:
    return search_server.client()


def tool_result(body: dict[str, Any]) -> str:
    """The last tool result a chat model was sent."""
    return str(body["messages"][-1]["content"])


def page_hosts(internet: Internet) -> list[str]:
    return [{k.lower(): v for k, v in entry["headers"]}.get("host", "") for entry in internet.requests()
            if entry["path"].startswith("/web/")]


def test_search_read_and_cite_through_the_sdk(sclient: openai.OpenAI, upstream: ScriptedUpstream,
                                             searx: FakeEngines) -> None:
    shown: dict[str, str] = {}

    def read(body: dict[str, Any]) -> Reply:
        shown["search"] = tool_result(body)
        return Reply(tool_calls=[ToolCall("open_page", json.dumps({"url": PANDAS}))])

    def answer(body: dict[str, Any]) -> Reply:
        shown["page"] = tool_result(body)
        return Reply(text="pandas 2.2 adds a pyarrow string dtype [1]. NumPy 2.0 shipped too [2].")

    upstream.script([Reply(tool_calls=[ToolCall("web_search", json.dumps({"query": "pandas 2.2 changelog"}))]),
                     read, answer])
    response = sclient.responses.create(model=MODEL, input="What changed in pandas 2.2?",
                                        tools=[{"type": "web_search"}],
                                        include=["web_search_call.action.sources"])
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["web_search_call", "web_search_call", "message"]
    search, opened, message = response.output
    assert queries(searx) == ["pandas 2.2 changelog"]
    assert search.action.type == "search" and search.action.query == "pandas 2.2 changelog"
    assert [source.url for source in search.action.sources or []] == [PANDAS, NUMPY]
    assert opened.action.type == "open_page" and opened.action.url == PANDAS and opened.status == "completed"
    assert shown["search"].startswith("Results for 'pandas 2.2 changelog'")
    assert f"[1] What's new in pandas 2.2\n{PANDAS}\n" in shown["search"]
    assert f"[2] NumPy news\n{NUMPY}" in shown["search"]
    assert shown["page"].startswith(f"[1] What's new in pandas 2.2\n{PANDAS}\n\n")
    assert "Copy-on-Write becomes the default" in shown["page"] and "Home | Docs" not in shown["page"]
    text = message.content[0]
    assert text.type == "output_text"
    cited = [(a.url, a.title, text.text[a.start_index:a.end_index]) for a in text.annotations]  # type: ignore[union-attr]
    assert cited == [(PANDAS, "What's new in pandas 2.2", "[1]"), (NUMPY, "NumPy news", "[2]")]
    assert all(a.type == "url_citation" for a in text.annotations)
    assert not response_errors(response.model_dump(exclude_unset=True, warnings=False))
    # sources and results are shown only when asked for; the stored response keeps them
    plain = sclient.responses.retrieve(response.id)
    assert plain.output[0].action.sources is None  # type: ignore[union-attr]
    assert "results" not in plain.output[0].model_dump()
    full = sclient.responses.retrieve(response.id, include=["web_search_call.results"])
    results = full.output[1].model_dump()["results"]
    assert [(r["index"], r["url"]) for r in results] == [(1, PANDAS)]


def test_streamed_events_come_in_order_and_match_the_sdks_types(sclient: openai.OpenAI,
                                                                upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall("web_search", json.dumps({"query": "pandas"}))]),
                     Reply(text="See [1].")])
    with sclient.responses.stream(model=MODEL, input="pandas?", tools=[{"type": "web_search_preview"}]) as stream:
        events = [event.model_dump(exclude_unset=True, warnings=False) for event in stream]
        final = stream.get_final_response()
    kinds = [event["type"] for event in events]
    first = kinds.index("response.output_item.added")
    assert kinds[first:first + 5] == ["response.output_item.added", "response.web_search_call.in_progress",
                                      "response.web_search_call.searching", "response.web_search_call.completed",
                                      "response.output_item.done"]
    item_id = events[first]["item"]["id"]
    assert all(event["item_id"] == item_id for event in events[first + 1:first + 4])
    annotation = kinds.index("response.output_text.annotation.added")
    assert annotation < kinds.index("response.output_text.done") < kinds.index("response.completed")
    assert events[annotation]["annotation"]["url"] == PANDAS
    for event in events:
        assert not event_errors(event), event_errors(event)
    assert final.output[-1].content[0].annotations[0].url == PANDAS  # type: ignore[union-attr]


def test_allowed_domains_are_enforced_on_results_and_page_reads(sclient: openai.OpenAI, upstream: ScriptedUpstream,
                                                                searx: FakeEngines, pages: Internet) -> None:
    before = len(page_hosts(pages))
    upstream.script([Reply(tool_calls=[ToolCall("web_search", json.dumps({"query": "numpy"}))]),
                     Reply(tool_calls=[ToolCall("open_page", json.dumps({"url": NUMPY}))]),
                     lambda body: Reply(text=f"read: {tool_result(body)[:60]}")])
    tool = {"type": "web_search", "filters": {"allowed_domains": ["api.cove.test"]}}
    response = sclient.responses.create(model=MODEL, input="numpy?", include=["web_search_call.action.sources"],
                                        tools=[tool])  # type: ignore[list-item]
    search, refused, message = response.output
    assert "site:api.cove.test" in queries(searx)[0]
    assert [source.url for source in search.action.sources or []] == [PANDAS]  # type: ignore[union-attr]
    assert refused.status == "failed" and refused.action.url == NUMPY  # type: ignore[union-attr]
    assert message.content[0].text.startswith("read: Error: ")  # type: ignore[union-attr]
    assert response.status == "completed"
    assert "other.cove.test" not in page_hosts(pages)[before:]  # the page outside was never read


def test_an_engine_outage_fails_the_call_and_the_response_completes(
        sclient: openai.OpenAI, upstream: ScriptedUpstream, searx: FakeEngines) -> None:
    searx.status = 429  # a query not asked before: answers are cached (COVE_WEB_SEARCH_CACHE_SECONDS)
    upstream.script([Reply(tool_calls=[ToolCall("web_search", json.dumps({"query": "pandas during an outage"}))]),
                     lambda body: Reply(text=f"saw: {tool_result(body)}")])
    response = sclient.responses.create(model=MODEL, input="pandas?", tools=[{"type": "web_search"}])
    assert response.status == "completed"
    call, message = response.output
    assert call.type == "web_search_call" and call.status == "failed"
    said = message.content[0].text  # type: ignore[union-attr]
    assert said.startswith("saw: Error: ") and "429" in said


def test_web_search_without_an_engine_is_a_400_naming_the_tool(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="x", tools=[{"type": "function", "name": "f"},
                                                                {"type": "web_search_preview"}])
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == "tools[1]", error
    assert "web_search_preview" in error["message"]


def test_bad_domains_are_a_400_naming_the_domain(sclient: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sclient.responses.create(model=MODEL, input="x", tools=[
            {"type": "web_search", "filters": {"allowed_domains": ["api.cove.test", "not a domain"]}}])
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "tools[0].filters.allowed_domains[1]"


def test_the_agents_sdks_web_search_tool(search_server: Server, upstream: ScriptedUpstream) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, WebSearchTool, set_tracing_disabled

    set_tracing_disabled(True)
    upstream.script([Reply(tool_calls=[ToolCall("web_search", json.dumps({"query": "pandas 2.2"}))]),
                     Reply(text="pandas 2.2 adds pyarrow strings [1].")])

    async def main() -> Any:
        async with openai.AsyncOpenAI(base_url=f"{search_server.url}/v1", api_key=KEYS["alpha"]) as client:
            agent = Agent(name="researcher", instructions="Search, then answer with citations.",
                          tools=[WebSearchTool(search_context_size="low", filters={"allowed_domains": ["cove.test"]})],
                          model=OpenAIResponsesModel(model=MODEL, openai_client=client))
            return await Runner.run(agent, "What is new in pandas 2.2?")

    result = asyncio.run(main())
    assert str(result.final_output) == "pandas 2.2 adds pyarrow strings [1]."
    calls = [item.raw_item for item in result.new_items if item.type == "tool_call_item"]
    assert [call.type for call in calls] == ["web_search_call"] and calls[0].status == "completed"
    message = result.raw_responses[-1].output[-1]
    assert message.content[0].annotations[0].url == PANDAS
    assert len(upstream.requests[0]["tools"]) == 3 and "cove.test" in upstream.requests[0]["tools"][0]["function"][
        "description"]


def test_the_seeds_first_example_web_search_shell_and_the_text_editor(
        sclient: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    """``fetch the latest pandas changelog and write a summary``, with web_search_preview, shell and the
    text editor in one request, as the seed's first example has it."""
    summary = "# pandas 2.2\n\n- pyarrow-backed strings [1]\n"
    upstream.script([
        Reply(tool_calls=[ToolCall("web_search", json.dumps({"query": "latest pandas changelog"}))]),
        Reply(tool_calls=[ToolCall("open_page", json.dumps({"url": PANDAS})),
                          ToolCall("shell", json.dumps({"commands": ["mkdir -p /app && cd /app && pwd"]}))]),
        Reply(tool_calls=[ToolCall("str_replace_based_edit_tool", json.dumps(
            {"command": "create", "path": "/app/summary.md", "file_text": summary}))]),
        Reply(tool_calls=[ToolCall("shell", json.dumps({"commands": ["cat /app/summary.md"]}))]),
        Reply(text="I wrote /app/summary.md: pandas 2.2 adds pyarrow-backed strings [1]."),
    ])
    response = sclient.responses.create(
        model=MODEL, input="Fetch the latest pandas changelog and write a summary to /app/summary.md.",
        tools=[{"type": "web_search_preview"}, {"type": "shell", "environment": {"type": "container_auto"}},
               {"type": "text_editor_20250429"}])  # type: ignore[list-item]
    assert response.status == "completed"
    kinds = [item.type for item in response.output]
    assert kinds == ["web_search_call", "web_search_call", "shell_call", "shell_call_output", "custom_tool_call",
                     "custom_tool_call_output", "shell_call", "shell_call_output", "message"]
    assert response.output[7].output[0].stdout == summary  # type: ignore[union-attr]
    assert response.container_id  # type: ignore[attr-defined]
    annotation = response.output[-1].content[0].annotations[0]  # type: ignore[union-attr]
    assert (annotation.url, annotation.type) == (PANDAS, "url_citation")


def test_a_chain_cites_what_an_earlier_response_found(sclient: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall("web_search", json.dumps({"query": "numpy"}))]),
                     Reply(text="Found it [2]."),
                     lambda body: Reply(text="As I said, NumPy 2.0 is out [2]." if "[2] NumPy news" in json.dumps(
                         body["messages"]) else "I cannot see the earlier results.")])
    first = sclient.responses.create(model=MODEL, input="numpy?", tools=[{"type": "web_search"}])
    second = sclient.responses.create(model=MODEL, input="again?", previous_response_id=first.id,
                                      tools=[{"type": "web_search"}])
    text = second.output[-1].content[0]  # type: ignore[union-attr]
    assert text.text == "As I said, NumPy 2.0 is out [2]."
    assert [(a.url, text.text[a.start_index:a.end_index]) for a in text.annotations] == [(NUMPY, "[2]")]


def test_a_client_resending_its_history_keeps_what_the_model_found(search_server: Server, sclient: openai.OpenAI,
                                                                   upstream: ScriptedUpstream) -> None:
    """Clients that send the whole history each turn (the agents SDK) send web_search_call items as
    they saw them, without ``results``; the project's stored results come back for the model."""
    upstream.script([Reply(tool_calls=[ToolCall("web_search", json.dumps({"query": "numpy news"}))]),
                     Reply(text="Found it [2]."),
                     lambda body: Reply(text="NumPy 2.0 is out [2]." if "[2] NumPy news" in json.dumps(body["messages"])
                                        else "I cannot see the earlier results.")])
    first = sclient.responses.create(model=MODEL, input="numpy?", tools=[{"type": "web_search"}], store=True)
    history = [{"role": "user", "content": "numpy?"},
               *[item.model_dump(exclude_none=True, warnings=False) for item in first.output],
               {"role": "user", "content": "and again?"}]
    assert "results" not in history[1]
    second = sclient.responses.create(model=MODEL, input=history, tools=[{"type": "web_search"}])  # type: ignore[arg-type]
    text = second.output[-1].content[0]  # type: ignore[union-attr]
    assert text.text == "NumPy 2.0 is out [2]." and text.annotations[0].url == NUMPY
    # another project sending the same items gets nothing of alpha's back
    upstream.script([lambda body: Reply(text="not kept" if "were not kept" in json.dumps(body["messages"])
                                        else "leaked")])
    other = search_server.client("beta").responses.create(model=MODEL, input=history,  # type: ignore[arg-type]
                                                          tools=[{"type": "web_search"}])
    assert other.output[-1].content[0].text == "not kept"  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def upstream_search_server(upstream: ScriptedUpstream, postgres: PostgresServer | None) -> Iterator[Server]:
    """A server whose Responses upstream runs web search itself (``COVE_WEB_SEARCH=upstream``)."""
    env = {**_server_env(upstream, postgres), "COVE_UPSTREAM_API": "responses", "COVE_WEB_SEARCH": "upstream"}
    with running_server(data_dir("cove-upsearch"), env) as srv:
        yield srv


def test_upstream_mode_relays_the_upstreams_own_search_and_citations(upstream_search_server: Server,
                                                                     upstream: ScriptedUpstream) -> None:
    native = {"type": "web_search_call", "id": "ws_openai", "status": "completed",
              "action": {"type": "search", "query": "pandas 2.2", "sources": [{"type": "url", "url": PANDAS}]}}
    text = "pandas 2.2 adds pyarrow strings (pandas.pydata.org)."
    start = text.index("pandas.pydata.org")
    citation = {"type": "url_citation", "url": PANDAS, "title": "What's new", "start_index": start,
                "end_index": start + len("pandas.pydata.org")}
    upstream.script([Reply(native_items=[native], native_first=True, text=text, annotations=[citation])])
    tool = {"type": "web_search", "filters": {"allowed_domains": ["pydata.org"]}, "search_context_size": "high"}
    with upstream_search_server.http() as http:
        answer = http.post("/v1/responses", json={"model": MODEL, "input": "pandas?", "tools": [tool],
                                                   "include": ["web_search_call.action.sources"]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert upstream.requests[-1]["tools"] == [tool]  # passed through as the client gave it
    assert [item["type"] for item in body["output"]] == ["web_search_call", "message"]
    assert body["output"][0]["action"] == native["action"]
    part = body["output"][1]["content"][0]
    assert part["annotations"] == [citation] and part["text"][start:citation["end_index"]] == "pandas.pydata.org"
    assert not response_errors(body)


@pytest.fixture(scope="module")
def offline_server(upstream: ScriptedUpstream, postgres: PostgresServer | None,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """An air-gapped server: no engine on any network, an offline index (``cove search index``) for the
    project alpha (its ``web_search`` in the projects file), and ``index:missing`` for the others."""
    docs = tmp_path_factory.mktemp("handbook")
    (docs / "pandas.md").write_text("# pandas 2.2 notes\n\npandas 2.2 adds a pyarrow-backed string dtype.\n\n"
                                    "Copy-on-Write arrives in pandas 3.0.\n")
    (docs / "numpy.md").write_text("# NumPy notes\n\nNumPy 2.0 cleaned up its API.\n")
    projects = tmp_path_factory.mktemp("projects") / "projects.toml"
    projects.write_text('[defaults]\nweb_search = "index:missing"\n\n[projects.alpha]\nweb_search = "index:handbook"\n')
    srv = Server(data_dir("cove-offline"), {**_server_env(upstream, postgres), "COVE_PROJECTS_FILE": str(projects)})
    built = subprocess.run([str(Path(sys.executable).parent / "cove"), "search", "index", "handbook", str(docs)],
                           env=srv.env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    srv.start()
    yield srv, docs
    srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


def test_an_offline_index_answers_with_no_network_and_each_project_gets_its_own_engine(
        offline_server: tuple[Server, Path], upstream: ScriptedUpstream) -> None:
    server, docs = offline_server
    notes = (docs / "pandas.md").as_uri()
    find = {"url": notes, "pattern": "copy-on-write"}
    upstream.script([Reply(tool_calls=[ToolCall("web_search", json.dumps({"query": "pyarrow string dtype"}))]),
                     Reply(tool_calls=[ToolCall("find_in_page", json.dumps(find))]),
                     lambda body: Reply(text="Copy-on-Write arrives in 3.0 [1]." if "pandas 3.0" in tool_result(body)
                                        else "not found")])
    response = server.client("alpha").responses.create(model=MODEL, input="pandas?", tools=[{"type": "web_search"}],
                                                       include=["web_search_call.action.sources"])
    search, found, message = response.output
    assert (search.action.sources or [])[0].url == notes  # type: ignore[union-attr]
    assert found.status == "completed" and found.action.type == "find_in_page"  # type: ignore[union-attr]
    text = message.content[0]  # type: ignore[union-attr]
    assert text.text == "Copy-on-Write arrives in 3.0 [1]."
    assert [(a.url, text.text[a.start_index:a.end_index]) for a in text.annotations] == [(notes, "[1]")]
    with pytest.raises(openai.BadRequestError) as info:  # beta's engine is an index that was never built
        server.client("beta").responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}])
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == "tools[0]" and "missing" in body["message"], body
