"""Two ``cove serve`` replicas on one PostgreSQL (``docs/replicas.md``): a stream started on one is
followed from the other exactly once and in order, a background response survives the replica running
it being killed (the other takes it over), a cancel reaches the replica running the response, each
webhook event is delivered once, and a container is reached only through the replica holding it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from cove.api.console.sessions import COOKIE
from tests.api.test_console import sign_in_plain
from tests.conftest import Server, data_dir
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.responses.test_webhooks import HOOKS_HOST, Receiver
from tests.scripted_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.root  # each replica runs the container engine

MODEL = "scripted-model"
TEXT = "".join(f"word{n} " for n in range(150))


@pytest.fixture(scope="module")
def database(postgres: PostgresServer | None) -> Iterator[PostgresServer]:
    """The session's PostgreSQL (``COVE_TEST_DB=postgres``), else one of the module's own."""
    if postgres is not None:
        yield postgres
        return
    pg = PostgresServer().start()
    yield pg
    pg.stop()


@contextmanager
def two_replicas(database: PostgresServer, upstream: ScriptedUpstream, **env: str) -> Iterator[tuple[Server, Server]]:
    """Replicas ``a`` and ``b``: one database, one secrets key, each its own data dir (its own machine),
    heartbeats every 0.3 s and a 3 s lease so a killed replica is taken for dead quickly."""
    url = database.new_database()
    shared = data_dir("cove-replicas-key")
    servers = []
    for name in ("a", "b"):
        settings = {"COVE_UPSTREAM_URL": upstream.url, "COVE_DATABASE_URL": url, "COVE_REPLICA_ID": name,
                    "COVE_SECRETS_KEY_FILE": str(shared / "secrets.key"), "COVE_HEARTBEAT_SECONDS": "0.3",
                    "COVE_REPLICA_LEASE_SECONDS": "3", "COVE_WARM_POOL": "0", **env}
        servers.append(Server(data_dir(f"cove-replica-{name}"), settings))
    try:
        with ThreadPoolExecutor(2) as starting:  # at once: each takes seconds on a busy machine
            list(starting.map(Server.start, servers))
        yield servers[0], servers[1]
    finally:
        for srv in servers:
            if srv.proc is None:  # killed: started again, so its engine clears what the kill left
                srv.start()
            srv.stop()
            shutil.rmtree(srv.data_dir, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture(scope="module")
def replicas(database: PostgresServer, upstream: ScriptedUpstream) -> Iterator[tuple[Server, Server]]:
    """Replicas shared by the tests that leave both running."""
    with two_replicas(database, upstream) as servers:
        yield servers


@pytest.fixture
def own_replicas(database: PostgresServer, upstream: ScriptedUpstream) -> Iterator[tuple[Server, Server]]:
    """Replicas of the test's own, for one it kills."""
    with two_replicas(database, upstream) as servers:
        yield servers


def _start_streamed(http: httpx.Client, seen: list[dict[str, Any]], deltas: int) -> str:
    """Creates a streamed background response and reads its stream until ``deltas`` text deltas came."""
    with http.stream("POST", "/v1/responses", json={"model": MODEL, "input": "talk", "background": True,
                                                     "stream": True}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                seen.append(json.loads(line[6:]))
                if sum(e["type"] == "response.output_text.delta" for e in seen) >= deltas:
                    break
    return str(seen[0]["response"]["id"])


def _events(http: httpx.Client, response_id: str, starting_after: int = -1) -> list[dict[str, Any]]:
    with http.stream("GET", f"/v1/responses/{response_id}", timeout=120,
                     params={"stream": "true", "starting_after": starting_after}) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]


def _numbers(events: list[dict[str, Any]]) -> list[int]:
    return [e["sequence_number"] for e in events]


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def test_a_stream_started_on_one_replica_is_followed_from_the_other(
        replicas: tuple[Server, Server], upstream: ScriptedUpstream) -> None:
    a, b = replicas
    upstream.script([Reply(text=TEXT, chunk_delay=0.01)])
    seen: list[dict[str, Any]] = []
    with a.http() as on_a, b.http() as on_b:
        response_id = _start_streamed(on_a, seen, deltas=5)
        assert on_b.get(f"/v1/responses/{response_id}/progress").json()["replica"] == "a"
        cut = seen[-1]["sequence_number"]
        rest = _events(on_b, response_id, cut)  # followed live from b while a generates it
        assert _numbers(rest) == list(range(cut + 1, cut + 1 + len(rest))), _numbers(rest)[:10]
        assert rest[-1]["type"] == "response.completed", rest[-3:]
        assert _text(seen) + _text(rest) == TEXT
        whole = _events(on_b, response_id)  # and again from the start, from either replica
        assert _numbers(whole) == list(range(len(whole)))
        assert whole == _events(on_a, response_id)
        assert [(e["sequence_number"], e["type"]) for e in whole[cut + 1:]] == [
            (e["sequence_number"], e["type"]) for e in rest]
        final = on_b.get(f"/v1/responses/{response_id}").raise_for_status().json()
        assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == _text(whole)
    assert len([r for r in upstream.requests if "messages" in r]) == 1  # generated once: neither ran it twice


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_killed_replicas_background_response_is_finished_by_the_other(
        own_replicas: tuple[Server, Server], upstream: ScriptedUpstream, sig: int) -> None:
    """Killed: the other takes the response over once the lease ran out. Stopped (a rolling restart):
    the stopping replica stores what it has and leaves, and the other takes it over at once."""
    a, b = own_replicas
    upstream.script([Reply(text=TEXT, chunk_delay=0.05), Reply(text="finished on b")])
    seen: list[dict[str, Any]] = []
    with a.http() as on_a:
        response_id = _start_streamed(on_a, seen, deltas=20)
    on_b = b.http()
    assert on_b.get(f"/v1/responses/{response_id}/progress").json()["replica"] == "a"
    # What b has stored of it so far (events are written every 0.2 s): a reader that followed it up to here.
    stored = _stored(on_b, response_id)
    assert a.proc is not None
    os.kill(a.proc.pid, sig)  # in the middle of its model turn
    a.proc.wait(timeout=30)
    a.proc = None

    cut = stored[-1]["sequence_number"]
    rest = _events(on_b, response_id, cut)  # waits through the lease, then b's resumed run
    assert _numbers(rest) == list(range(cut + 1, cut + 1 + len(rest))), _numbers(rest)[:10]
    assert rest[-1]["type"] == "response.completed", rest[-3:]
    final = on_b.get(f"/v1/responses/{response_id}").raise_for_status().json()
    assert final["status"] == "completed", final
    cut_off, answer = final["output"]
    assert cut_off["status"] == "incomplete" and cut_off["content"][0]["text"].startswith("word0 word1")
    assert answer["content"][0]["text"] == "finished on b"
    progress = on_b.get(f"/v1/responses/{response_id}/progress").json()
    assert (progress["replica"], progress["resumes"]) == ("b", 1), progress
    whole = _events(on_b, response_id)
    assert _numbers(whole) == list(range(len(whole)))
    assert whole[:cut + 1] == stored
    on_b.close()


def _stored(http: httpx.Client, response_id: str) -> list[dict[str, Any]]:
    """The stored events up to the last one with text (a stream that stops there: ``starting_after``
    past the last stored event would wait for more)."""
    progress = http.get(f"/v1/responses/{response_id}/progress").json()
    assert progress["status"] == "in_progress", progress
    with http.stream("GET", f"/v1/responses/{response_id}", params={"stream": "true"}) as response:
        events: list[dict[str, Any]] = []
        for line in response.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
                if sum(e["type"] == "response.output_text.delta" for e in events) >= 10:
                    return events
    return []


def test_a_cancel_on_one_replica_stops_the_response_on_the_other(
        replicas: tuple[Server, Server], upstream: ScriptedUpstream) -> None:
    a, b = replicas
    upstream.script([Reply(text=TEXT, chunk_delay=0.05)])
    with a.http() as on_a, b.http() as on_b:
        response_id = _start_streamed(on_a, [], deltas=3)
        cancelled = on_b.post(f"/v1/responses/{response_id}/cancel").raise_for_status().json()
        assert cancelled["status"] == "cancelled", cancelled
        assert on_a.get(f"/v1/responses/{response_id}").json()["status"] == "cancelled"
        events = _events(on_b, response_id)  # the stream ends; nothing was added after the cancel
        assert _numbers(events) == list(range(len(events)))
        assert len(_text(events)) < len(TEXT) // 2


def _listeners(database: PostgresServer, *servers: Server) -> dict[str, str]:
    """The backends of the servers' LISTEN connections, by replica (``application_name``)."""
    dbname = servers[0].env["COVE_DATABASE_URL"].rsplit("/", 1)[1]
    names = ", ".join(f"'cove-listen:{srv.env['COVE_REPLICA_ID']}'" for srv in servers)
    rows = database.sql(f"SELECT application_name, pid FROM pg_stat_activity WHERE datname = '{dbname}' "
                        f"AND application_name IN ({names})")
    return dict(row.split("|") for row in rows)


def test_listening_connections_killed_by_postgres_are_opened_again(
        replicas: tuple[Server, Server], upstream: ScriptedUpstream, database: PostgresServer) -> None:
    """Both replicas' LISTEN backends are terminated while b follows a stream a generates: b's stream
    still has every event once and in order, both listeners come back (logged once each), and a cancel
    sent from b afterwards is heard by a, which only a working listener can do."""
    a, b = replicas
    upstream.script([Reply(text=TEXT, chunk_delay=0.02), Reply(text=TEXT, chunk_delay=0.05)])
    before = _listeners(database, a, b)
    assert set(before) == {"cove-listen:a", "cove-listen:b"}, before
    logged = [srv.log.read_text().count("LISTEN connection to PostgreSQL dropped") for srv in (a, b)]
    seen: list[dict[str, Any]] = []
    with a.http() as on_a, b.http() as on_b, ThreadPoolExecutor(1) as following:
        response_id = _start_streamed(on_a, seen, deltas=5)
        cut = seen[-1]["sequence_number"]
        rest_future = following.submit(_events, on_b, response_id, cut)
        killed = database.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN "
                              f"({', '.join(before.values())})")
        assert killed == ["t", "t"]
        rest = rest_future.result()
        assert _numbers(rest) == list(range(cut + 1, cut + 1 + len(rest))), _numbers(rest)[:10]
        assert rest[-1]["type"] == "response.completed", rest[-3:]
        assert _text(seen) + _text(rest) == TEXT

        def reopened() -> bool:
            now = _listeners(database, a, b)
            return set(now) == set(before) and not set(now.values()) & set(before.values())

        eventually(reopened, timeout=30, what="both replicas to open their LISTEN connections again")
        assert [srv.log.read_text().count("LISTEN connection to PostgreSQL dropped") for srv in (a, b)] == [
            count + 1 for count in logged]
        second = _start_streamed(on_a, [], deltas=3)
        cancelled = on_b.post(f"/v1/responses/{second}/cancel").raise_for_status().json()
        assert cancelled["status"] == "cancelled", cancelled


def test_a_cancel_sent_while_the_owners_listener_is_down_is_heard_once_it_is_back(
        replicas: tuple[Server, Server], upstream: ScriptedUpstream, database: PostgresServer) -> None:
    """a's LISTEN backend is terminated again and again (each reconnect killed) while b cancels a's
    response, so b's first notification reaches nobody; once a listens again, b's cancel still stops the
    response (b sends it again each second), long before the response would have ended by itself."""
    a, b = replicas
    upstream.script([Reply(text=TEXT, chunk_delay=0.1)])  # 150 chunks: 15 s if nothing stops it
    outage = 2.0

    def keep_a_deaf() -> int:
        """Terminates a's listening backend, and each one it opens again, for ``outage`` seconds."""
        kills, until = 0, time.monotonic() + outage
        while time.monotonic() < until:
            kills += database.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE application_name = 'cove-listen:a'").count("t")
        return kills

    with a.http() as on_a, b.http() as on_b, ThreadPoolExecutor(2) as pool:
        response_id = _start_streamed(on_a, [], deltas=3)
        killer = pool.submit(keep_a_deaf)
        eventually(lambda: not _listeners(database, a), timeout=10, what="a's listener to be down")
        started = time.monotonic()
        cancelling = pool.submit(lambda: on_b.post(f"/v1/responses/{response_id}/cancel").raise_for_status().json())
        assert killer.result() >= 1
        cancelled = cancelling.result(timeout=20)
        assert cancelled["status"] == "cancelled", cancelled
        assert time.monotonic() - started < 10  # heard once the listener was back, not at the response's end
        assert on_a.get(f"/v1/responses/{response_id}").json()["status"] == "cancelled"


def test_each_webhook_event_is_delivered_once_across_replicas(database: PostgresServer, upstream: ScriptedUpstream,
                                                             tmp_path: Path) -> None:
    receiver = Receiver()
    projects = tmp_path / "projects.toml"
    projects.write_text(f'[defaults]\nwebhook_urls = ["http://{HOOKS_HOST}:{receiver.port}/"]\n')
    try:
        with two_replicas(database, upstream, COVE_PROJECTS_FILE=str(projects),
                          COVE_EGRESS_TEST_HOSTS=f"{HOOKS_HOST}=127.0.0.1") as (a, b):
            clients = [a.client(), b.client()]
            clients[0].webhooks.create(name="done", url=receiver.url("/done"), event_types=["response.completed"])
            made = [clients[n % 2].responses.create(model=MODEL, input=f"hello {n}", background=True).id
                    for n in range(8)]
            with b.http() as on_b:
                def deliveries() -> list[dict[str, Any]] | None:
                    found = [d for rid in made for d in on_b.get(f"/v1/responses/{rid}/webhook_deliveries").json()[
                        "data"]]
                    done = len(found) == len(made) and all(d["status"] == "delivered" for d in found)
                    return found if done else None

                delivered = eventually(deliveries, timeout=120, what="every response's webhook delivered")
            assert sorted(json.loads(r.body)["data"]["id"] for r in receiver.received
                          if r.headers["webhook-id"] in {d["event_id"] for d in delivered}) == sorted(made)
            # Each attempt was made by one replica: as many POSTs of an event as its delivery counts attempts
            # (one, unless an attempt timed out on this busy machine and was retried).
            posts = Counter(r.headers["webhook-id"] for r in receiver.received)
            assert {d["event_id"]: d["attempts"] for d in delivered} == dict(posts), (delivered, posts)
    finally:
        receiver.close()


def test_background_running_bounds_a_project_across_replicas(database: PostgresServer, upstream: ScriptedUpstream,
                                                            tmp_path: Path) -> None:
    """With ``background_running = 1`` the project's queued responses run one at a time on both replicas
    together (each replica's own queue would let each run one), and every one still runs."""
    projects = tmp_path / "projects.toml"
    projects.write_text("[defaults]\nbackground_running = 1\n")
    upstream.script([Reply(text=TEXT, chunk_delay=0.01) for _ in range(4)])
    with two_replicas(database, upstream, COVE_PROJECTS_FILE=str(projects)) as (a, b):
        clients = [a.client(), b.client()]
        made = [clients[n % 2].responses.create(model=MODEL, input=f"hello {n}", background=True).id
                for n in range(4)]
        most = 0
        with b.http() as on_b:
            def all_done() -> bool:
                nonlocal most
                statuses = [on_b.get(f"/v1/responses/{rid}").json()["status"] for rid in made]
                most = max(most, statuses.count("in_progress"))
                return all(status == "completed" for status in statuses)

            eventually(all_done, timeout=120, what="the four responses to complete")
        assert most == 1  # each ran for over a second, so two at once would have been seen


def test_a_console_session_opened_on_one_replica_is_served_and_ended_on_the_other(
        replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    with httpx.Client(base_url=a.url, timeout=60) as on_a:
        csrf = sign_in_plain(on_a, a)
        cookie = on_a.cookies[COOKIE]
    with httpx.Client(base_url=b.url, timeout=60, cookies={COOKIE: cookie}) as on_b:
        assert on_b.get("/console/responses").status_code == 200
        assert on_b.post("/console/logout", data={"csrf": csrf}, headers={"Origin": b.url}).status_code == 303
    with httpx.Client(base_url=a.url, timeout=60, cookies={COOKIE: cookie}) as copied:
        answer = copied.get("/console/responses")  # signing out on b ended it everywhere
        assert (answer.status_code, answer.headers.get("location")) == (303, "/console/login")


def test_a_container_is_reached_through_the_replica_holding_it(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    with a.http() as on_a, b.http() as on_b:
        container = on_a.post("/v1/containers", json={"name": "held by a"}).raise_for_status().json()
        path = f"/v1/containers/{container['id']}"
        assert on_b.get(path).raise_for_status().json()["id"] == container["id"]  # its record is shared
        refused = on_b.post(f"{path}/exec", json={"commands": ["echo hi"]})
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "sandbox_unavailable" and "replica 'a'" in error["message"], error
        assert on_b.delete(path).status_code == 503
        ran = on_a.post(f"{path}/exec", json={"commands": ["echo hi"]}).raise_for_status().json()
        assert ran["output"][0]["stdout"] == "hi\n"
        assert on_a.delete(path).status_code == 200
