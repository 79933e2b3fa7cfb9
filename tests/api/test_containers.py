"""The Containers API through the official SDK, against real containers."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from cove.api import sse
from tests.conftest import Server
from tests.helpers import run

pytestmark = pytest.mark.root


def test_create_get_list_delete(client: openai.OpenAI) -> None:
    created = client.containers.create(name="crud", expires_after={"anchor": "last_active_at", "minutes": 5})
    assert created.id.startswith("cntr_")
    assert created.status == "running"
    assert created.memory_limit == "1g"
    assert created.expires_after is not None and created.expires_after.minutes == 5
    assert created.network_policy is not None and created.network_policy.type == "disabled"
    fetched = client.containers.retrieve(created.id)
    assert fetched.id == created.id and fetched.name == "crud"
    listed = client.containers.list(name="crud")
    assert [c.id for c in listed.data] == [created.id]
    client.containers.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve(created.id)


def test_list_pagination(client: openai.OpenAI) -> None:
    ids = [client.containers.create(name="page-test").id for _ in range(3)]
    first = client.containers.list(name="page-test", limit=2, order="asc")
    assert [c.id for c in first.data] == ids[:2]
    assert first.has_more
    second = client.containers.list(name="page-test", limit=2, order="asc", after=ids[1])
    assert [c.id for c in second.data] == ids[2:]
    assert not second.has_more
    newest = client.containers.list(name="page-test", limit=1)
    assert newest.data[0].id == ids[-1]
    all_pages = [c.id for c in client.containers.list(name="page-test", limit=1, order="asc")]
    assert all_pages == ids
    for cid in ids:
        client.containers.delete(cid)


def test_exec_basics(client: openai.OpenAI, http: httpx.Client) -> None:
    cid = client.containers.create(name="exec").id
    out = run(http, cid, "echo hello; echo oops >&2; exit 3", "pwd", "echo $FOO", env={"FOO": "bar"},
              workdir="/tmp")
    assert out[0] == {"stdout": "hello\n", "stderr": "oops\n", "outcome": {"type": "exit", "exit_code": 3}}
    assert out[1]["stdout"] == "/tmp\n"
    assert out[2]["stdout"] == "bar\n"
    for workdir in ("/no/such/dir", "/etc/hostname"):  # found missing only once the start failed
        missing = run(http, cid, "true", workdir=workdir)[0]
        assert missing == {"stdout": "", "stderr": f"cove: working directory {workdir!r} does not exist\n",
                           "outcome": {"type": "exit", "exit_code": 1}}


def test_timeout_kills_whole_tree(client: openai.OpenAI, http: httpx.Client) -> None:
    cid = client.containers.create(name="timeout").id
    out = run(http, cid, "sleep 1000 & (sleep 1001 &) ; setsid sleep 1002 & echo started; sleep 1003",
              timeout_ms=700)
    assert out[0]["outcome"] == {"type": "timeout"}
    assert out[0]["stdout"] == "started\n"
    left = run(http, cid, "ps -eo args | grep -c '^sleep 100[013]' || true")[0]
    assert left["stdout"] == "0\n"


def test_output_is_capped_head_and_tail(client: openai.OpenAI, http: httpx.Client) -> None:
    cid = client.containers.create(name="flood").id
    out = run(http, cid, "echo BEGIN; yes 0123456789 | head -c 50000000; echo; echo END",
              max_output_length=1000)[0]
    stdout = str(out["stdout"])
    assert stdout.startswith("BEGIN\n")
    assert stdout.endswith("END\n")
    assert "characters truncated" in stdout
    assert len(stdout) < 1100
    assert out["outcome"] == {"type": "exit", "exit_code": 0}


def test_background_server_reachable_from_next_call(client: openai.OpenAI, http: httpx.Client) -> None:
    cid = client.containers.create(name="bg").id
    first = run(http, cid, "cd /tmp && echo served > index.html && python3 -m http.server 8000 &", timeout_ms=5000)
    assert first[0]["outcome"] == {"type": "exit", "exit_code": 0}
    second = run(http, cid, "for i in $(seq 100); do curl -s localhost:8000/index.html && break; sleep 0.1; done")
    assert second[0]["stdout"] == "served\n"
    # The server's log lines go to a pipe Cove still drains: it keeps serving.
    third = run(http, cid, "curl -s localhost:8000/index.html")
    assert third[0]["stdout"] == "served\n"


def test_streaming_exec_delivers_output_while_running(client: openai.OpenAI, server: Server) -> None:
    cid = client.containers.create(name="stream").id
    events = []
    with server.http() as http, http.stream(
        "POST", f"/v1/containers/{cid}/exec",
        json={"commands": ["echo first; sleep 1; echo second >&2"], "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event_name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event_name = line[len("event: "):]
            elif line.startswith("data: "):
                data = line[len("data: "):]
                if data == "[DONE]":
                    break
                payload = json.loads(data)
                assert payload["type"] == event_name
                events.append((payload, threading.get_ident()))
    types = [e["type"] for e, _ in events]
    assert types[0] == "container.exec.started"
    assert types[-1] == "container.exec.completed"
    deltas = [e["delta"] for e, _ in events if e["type"] == "container.exec.output.delta"]
    assert deltas == [{"stdout": "first\n"}, {"stderr": "second\n"}]
    assert [e["sequence_number"] for e, _ in events] == list(range(len(events)))
    done = [e for e, _ in events if e["type"] == "container.exec.command.done"]
    assert done[0]["output"]["stdout"] == "first\n"


def test_bad_input(client: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.containers.retrieve("cntr_nope")
    assert info.value.body["code"] == "container_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.containers.create(name="x", memory_limit="2g")  # type: ignore[arg-type]
    assert bad.value.body["param"] == "memory_limit"  # type: ignore[index]
    response = http.post("/v1/containers", json={"name": "x", "cpu_limit": 1000})
    assert response.status_code == 400 and response.json()["error"]["param"] == "cpu_limit"
    response = http.post("/v1/containers", json={"name": "x", "image": "no-such-image"})
    assert response.status_code == 404 and response.json()["error"]["param"] == "image"
    response = http.post("/v1/containers", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    response = http.post("/v1/containers", json={"name": "x", "bogus": 1})
    assert response.status_code == 400 and response.json()["error"]["param"] == "bogus"
    response = http.post("/v1/containers/cntr_nope/exec", json={"commands": ["true"]})
    assert response.status_code == 404
    cid = client.containers.create(name="bad-exec").id
    response = http.post(f"/v1/containers/{cid}/exec", json={"commands": []})
    assert response.status_code == 400 and response.json()["error"]["param"] == "commands"
    response = http.post(f"/v1/containers/{cid}/exec", json={"commands": ["true"], "timeout_ms": 0})
    assert response.status_code == 400 and response.json()["error"]["param"] == "timeout_ms"
    response = http.post(f"/v1/containers/{cid}/exec", json={"commands": ["true"], "env": {"A=B": "x"}})
    assert response.status_code == 400 and response.json()["error"]["param"] == "env"


def test_projects_are_isolated(server: Server) -> None:
    alpha, beta = server.client("alpha"), server.client("beta")
    cid = alpha.containers.create(name="mine").id
    with pytest.raises(openai.NotFoundError):
        beta.containers.retrieve(cid)
    with pytest.raises(openai.NotFoundError):
        beta.containers.delete(cid)
    assert cid not in [c.id for c in beta.containers.list()]
    with server.http("beta") as http:
        assert http.post(f"/v1/containers/{cid}/exec", json={"commands": ["true"]}).status_code == 404
        assert http.get(f"/v1/containers/{cid}/files").status_code == 404
    assert alpha.containers.retrieve(cid).id == cid
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0) as bad, \
            pytest.raises(openai.AuthenticationError):
        bad.containers.list()


def test_many_containers_with_concurrent_execs(client: openai.OpenAI, server: Server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(lambda i: client.containers.create(name=f"fleet-{i}").id, range(20)))

    def work(job: tuple[str, int]) -> str:
        cid, n = job
        with server.http() as http:
            return str(run(http, cid, f"echo {cid}-{n}; sleep 0.2")[0]["stdout"])

    jobs = [(cid, n) for cid in ids for n in range(5)]
    with ThreadPoolExecutor(100) as pool:
        outputs = list(pool.map(work, jobs))
    assert outputs == [f"{cid}-{n}\n" for cid, n in jobs]
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(client.containers.delete, ids))


def test_delete_frees_processes_mounts_cgroups_and_disk(client: openai.OpenAI, server: Server) -> None:
    import subprocess
    from pathlib import Path

    cid = client.containers.create(name="free").id
    with server.http() as http:
        run(http, cid, "sleep 424242 >/dev/null 2>&1 &")
    link = server.data_dir / "containers" / cid
    directory = link.resolve()  # a started container from the warm pool, adopted under this id
    runtime = directory.name
    cgroups = [p / "cove" / runtime for p in Path("/sys/fs/cgroup").iterdir() if (p / "cove" / runtime).exists()]
    assert directory.exists() and cgroups
    client.containers.delete(cid)
    assert not directory.exists() and not link.is_symlink()
    assert str(directory) not in Path("/proc/self/mountinfo").read_text()
    assert not [p for p in cgroups if p.exists()]
    assert "sleep 424242" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def test_pid1_reaps_orphans(client: openai.OpenAI, http: httpx.Client) -> None:
    cid = client.containers.create(name="reaper").id
    run(http, cid, "for i in $(seq 20); do (sleep 0.1 &) ; done; sleep 0.5")
    out = run(http, cid, "ps -eo stat --no-headers | grep -c '^Z' || true")[0]
    assert out["stdout"] == "0\n"


def test_streaming_exec_carries_awkward_text_in_big_chunks_exactly(client: openai.OpenAI, server: Server) -> None:
    """Long deltas sparse in escapes take a faster JSON encoding (``sse.json_escaped``), others json's
    own: each kind, in large chunks, arrives exactly as printed."""
    cid = client.containers.create(name="awkward").id
    words = "and some more words " * 4
    patterns = [f'say "hi" to C:\\dir\\ {words}', f"col\t{words}\r", 'say "hi" \\ C:\\x\tcol\r',
                "bell\x07 esc\x1b[0m", "caf\u00e9 \u2028 \u3042"]
    repeat = 20_000
    # Written to a file first, so that cat writes it in large blocks.
    commands = [f'yes -- "$P{index}" | head -n {repeat} > /tmp/out; cat /tmp/out' for index in range(len(patterns))]
    body = {"commands": commands, "env": {f"P{index}": pattern for index, pattern in enumerate(patterns)},
            "max_output_length": 10_000_000, "stream": True}
    with server.http() as http, http.stream("POST", f"/v1/containers/{cid}/exec", json=body) as response:
        assert response.status_code == 200
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    deltas = [e for e in events if e["type"] == "container.exec.output.delta"]
    for index, pattern in enumerate(patterns):
        chunks = [e["delta"]["stdout"] for e in deltas if e["command_index"] == index]
        assert "".join(chunks) == (pattern + "\n") * repeat
    fast = [e["delta"]["stdout"] for e in deltas if e["command_index"] < 2]
    assert any(sse.json_escaped(chunk) is not None for chunk in fast)  # the fast path was taken
