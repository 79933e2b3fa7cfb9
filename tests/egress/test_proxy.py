"""The egress proxy against real servers on 127.0.0.1, reached through the trusted test name mapping.

Only loopback traffic: test servers listen on 127.0.0.1, the proxy resolves test names through its
static mapping, and refused destinations are never connected to.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from cove.egress.policy import EgressPolicy
from cove.egress.proxy import Decision, EgressProxy
from cove.egress.resolver import Refused, Resolver, check_address, parse_test_hosts
from tests.polling import eventually_async

TEST_NAMES = ["allowed.test", "a.test", "b.test", "example.test", "a.example.test", "a.b.example.test",
              "evil.test"]


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(30):
            await main()
    asyncio.run(bounded())


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> tuple[bytes, list[str]]:
    """A request body as an origin reads it from the proxy (strictly framed), and its trailer fields."""
    if headers.get("transfer-encoding") != "chunked":
        return await reader.readexactly(int(headers.get("content-length", "0"))), []
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        body += await reader.readexactly(size)
        assert await reader.readexactly(2) == b"\r\n"
    trailers = []
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        trailers.append(line[:-2].decode("latin-1"))
    return body, trailers


async def _http_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A tiny origin server: answers with what it received, as JSON."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = [[part.strip() for part in line.split(":", 1)] for line in lines[1:]]
        named = {name.lower(): value for name, value in headers}
        if named.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body, trailers = await read_body(reader, named)
        payload = json.dumps({"request_line": lines[0], "headers": headers, "body": body.decode(),
                              "trailers": trailers}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the proxy cut a request short
    finally:
        writer.close()


async def _echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@dataclass
class Env:
    proxy: EgressProxy
    http_port: int
    echo_port: int
    decisions: list[Decision] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    origin_connections: list[object] = field(default_factory=list)
    """One entry per connection the HTTP origin accepted."""

    async def listen(self, label: str, *domains: str) -> int:
        self.ports[label] = await listen(self.proxy, label, EgressPolicy(domains))
        return self.ports[label]


async def listen(proxy: EgressProxy, label: str, policy: EgressPolicy) -> int:
    """Serve ``label`` on a new listening socket on 127.0.0.1, as Cove does inside a container; returns its port."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        await proxy.listen_socket(label, policy, sock)
    except BaseException:
        sock.close()
        raise
    return int(sock.getsockname()[1])


@asynccontextmanager
async def environment(**options: Any) -> AsyncIterator[Env]:
    origin_connections: list[object] = []

    async def http_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        origin_connections.append(writer.get_extra_info("peername"))
        await _http_handler(reader, writer)

    http = await asyncio.start_server(http_handler, "127.0.0.1", 0)
    echo = await asyncio.start_server(_echo_handler, "127.0.0.1", 0)
    http_port, echo_port = (server.sockets[0].getsockname()[1] for server in (http, echo))
    decisions: list[Decision] = []
    resolver = Resolver(hosts=dict.fromkeys(TEST_NAMES, "127.0.0.1"))
    options.setdefault("allowed_ports", (80, 443, http_port, echo_port))
    proxy = EgressProxy(resolver, on_decision=decisions.append, **options)
    try:
        yield Env(proxy, http_port, echo_port, decisions, origin_connections=origin_connections)
    finally:
        await proxy.aclose()
        for server in (http, echo):
            server.close()
            await server.wait_closed()


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` to the proxy and read its answer until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await reader.read(-1)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> Any:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


def test_plain_http_get_is_forwarded_in_origin_form_without_hop_by_hop_headers() -> None:
    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "allowed.test")
            response = await exchange(port, (
                f"GET http://allowed.test:{env.http_port}/path/x?token=query-s3cr3t HTTP/1.1\r\n"
                f"Host: allowed.test:{env.http_port}\r\nAuthorization: Bearer header-s3cr3t\r\n"
                "Proxy-Authorization: Basic proxy-s3cr3t\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"
                "X-Keep: yes\r\n\r\n").encode())
            assert status_of(response) == 200
            seen = body_of(response)
            assert seen["request_line"] == "GET /path/x?token=query-s3cr3t HTTP/1.1"
            names = {name.lower(): value for name, value in seen["headers"]}
            assert names["host"] == f"allowed.test:{env.http_port}"
            assert names["authorization"] == "Bearer header-s3cr3t"  # end-to-end headers pass
            assert names["x-keep"] == "yes"
            assert names["connection"] == "close"
            assert "proxy-authorization" not in names and "x-drop" not in names
            [decision] = env.decisions
            assert (decision.client, decision.method, decision.host, decision.port) == (
                "c1", "GET", "allowed.test", env.http_port)
            assert decision.allowed and decision.address == "127.0.0.1"
            assert "s3cr3t" not in repr(env.decisions)
    run(main)


def test_request_bodies_are_streamed_with_content_length_and_chunked() -> None:
    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "allowed.test")
            url = f"http://allowed.test:{env.http_port}/upload"
            sized = await exchange(port, f"POST {url} HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world".encode())
            assert body_of(sized)["body"] == "hello world"
            chunked = await exchange(port, (f"POST {url} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                            "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n").encode())
            assert body_of(chunked)["body"] == "hello world"
            expect = await exchange(port, f"PUT {url} HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"
                                    .encode())
            assert expect.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
            smuggle = await exchange(port, (f"POST {url} HTTP/1.1\r\nContent-Length: 3\r\n"
                                            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").encode())
            assert status_of(smuggle) == 400
    run(main)


# Each would let the proxy and a server disagree on where the request ends (the bytes between being a
# request of their own), or is malformed framing: (header fields, body, status, reason).
SMUGGLING = {
    "CL.TE": ("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nG", 400,
              "both Content-Length and Transfer-Encoding"),
    "TE.CL": ("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "8\r\nSMUGGLED\r\n0\r\n\r\n", 400,
              "both Content-Length and Transfer-Encoding"),
    "differing Content-Lengths": ("Content-Length: 3\r\nContent-Length: 29\r\n",
                                  "abcGET /smuggled HTTP/1.1\r\n\r\n", 400, "conflicting Content-Length"),
    "a Content-Length list": ("Content-Length: 3, 29\r\n", "abcGET /smuggled HTTP/1.1\r\n\r\n", 400,
                              "conflicting Content-Length"),
    "a folded Transfer-Encoding": ("Content-Length: 5\r\nX-Padding: x\r\n\tTransfer-Encoding: chunked\r\n",
                                   "0\r\n\r\nG", 400, "obsolete line folding"),
    "a bare LF in the head": ("X-Padding: x\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n", 400,
                              "does not end in CRLF"),
    "a chunk size that is not hex": ("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n", 400,
                                     "illegal chunk header"),
    "a chunk size too long": ("Transfer-Encoding: chunked\r\n", "1" + "0" * 20 + "\r\nhello\r\n0\r\n\r\n", 400,
                              "illegal chunk header"),
    "a bare LF after a chunk size": ("Transfer-Encoding: chunked\r\n", "5\nhello\r\n0\r\n\r\n", 400,
                                     "illegal chunk header"),
    "a bad chunk terminator": ("Transfer-Encoding: chunked\r\n", "5\r\nhelloXX0\r\n\r\n", 400,
                               "malformed chunk footer"),
    "a transfer coding other than chunked": ("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n", 501,
                                             "not supported: Only Transfer-Encoding: chunked"),
}


@pytest.mark.parametrize(("fields", "body", "status", "reason"), SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggling_attempts_are_refused_before_anything_reaches_the_server(fields: str, body: str, status: int,
                                                                           reason: str) -> None:
    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "allowed.test")
            response = await exchange(port, (f"POST http://allowed.test:{env.http_port}/upload HTTP/1.1\r\n"
                                             f"{fields}\r\n{body}").encode())
            assert status_of(response) == status
            [decision] = env.decisions
            assert not decision.allowed and reason in decision.reason
            assert env.origin_connections == []
    run(main)


async def chunked_upload(env: Env) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sent the head of a chunked upload through the proxy and got "100 Continue"."""
    port = await env.listen("c1", "allowed.test")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST http://allowed.test:{env.http_port}/upload HTTP/1.1\r\nExpect: 100-continue\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    return reader, writer


def test_a_chunked_body_is_forwarded_as_it_arrives() -> None:
    """The client waits for "100 Continue", then sends its body in pieces; the server gets it re-chunked."""
    async def main() -> None:
        async with environment() as env:
            reader, writer = await chunked_upload(env)
            for piece in (b"5\r\nhel", b"lo\r\n6;ext=1\r\n wor", b"ld\r\n0\r\nX-Checksum: 42\r\n\r\n"):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.05)  # the scenario: a body that arrives in separate pieces
            seen = body_of(await reader.read(-1))
            writer.close()
            assert seen["body"] == "hello world" and seen["trailers"] == ["X-Checksum: 42"]
            names = {name.lower(): value for name, value in seen["headers"]}
            assert names["transfer-encoding"] == "chunked" and "content-length" not in names
            assert [d.allowed for d in env.decisions] == [True]
    run(main)


def test_a_body_turning_malformed_after_its_head_went_upstream_ends_the_connection() -> None:
    """The server has the head and may be answering: the client gets no 400 of the proxy's, the connection ends."""
    async def main() -> None:
        async with environment() as env:
            reader, writer = await chunked_upload(env)  # the server's "100 Continue" came back
            writer.write(b"5\r\nhello\r\nzz\r\n")
            assert await reader.read(-1) == b""
            writer.close()
            assert [(d.method, d.allowed, d.reason) for d in env.decisions] == [
                ("POST", True, "allowed"), ("POST", False, "malformed request: illegal chunk header")]
    run(main)


def test_connect_tunnels_bytes_both_ways_and_passes_half_close() -> None:
    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "allowed.test")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"CONNECT allowed.test:{env.echo_port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
            writer.write(b"ping through the tunnel")
            assert await reader.readexactly(23) == b"ping through the tunnel"
            writer.write_eof()  # the echo server sees EOF, closes, and the tunnel ends
            assert await reader.read(-1) == b""
            writer.close()
            assert [(d.method, d.host, d.allowed) for d in env.decisions] == [("CONNECT", "allowed.test", True)]
    run(main)


def test_bytes_sent_right_after_connect_go_into_the_tunnel() -> None:
    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "allowed.test")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"CONNECT allowed.test:{env.echo_port} HTTP/1.1\r\n\r\nsent without waiting".encode())
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
            assert await reader.readexactly(20) == b"sent without waiting"
            writer.close()
    run(main)


def test_names_outside_the_allowlist_are_refused_and_recorded() -> None:
    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "allowed.test")
            get = await exchange(port, f"GET http://evil.test:{env.http_port}/?k=s3cr3t HTTP/1.1\r\n\r\n".encode())
            connect = await exchange(port, f"CONNECT evil.test:{env.echo_port} HTTP/1.1\r\n\r\n".encode())
            assert status_of(get) == 403 and status_of(connect) == 403
            assert b"evil.test is not in the allowlist" in get
            assert [(d.client, d.method, d.host, d.allowed, d.address) for d in env.decisions] == [
                ("c1", "GET", "evil.test", False, None), ("c1", "CONNECT", "evil.test", False, None)]
            assert "s3cr3t" not in repr(env.decisions)
    run(main)


@pytest.mark.parametrize("request_line", [
    "CONNECT 127.0.0.1:443", "GET http://10.0.0.1/", "CONNECT [::1]:443", "GET http://2130706433/",
    "GET http://127.1:80/", "CONNECT 0x7f000001:443"])
def test_raw_ip_destinations_are_refused(request_line: str) -> None:
    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "allowed.test")
            response = await exchange(port, f"{request_line} HTTP/1.1\r\n\r\n".encode())
            assert status_of(response) == 403
            assert b"raw IP addresses are not allowed" in response
            assert env.decisions[0].reason == "raw IP addresses are not allowed"
    run(main)


def test_allowlisted_name_resolving_to_loopback_is_refused() -> None:
    """``localhost`` is not in the trusted mapping, so the system answer (loopback) is checked and refused."""
    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "localhost", "allowed.test")
            response = await exchange(port, b"GET http://localhost/ HTTP/1.1\r\n\r\n")
            assert status_of(response) == 403
            assert b"loopback" in response
            assert not env.decisions[0].allowed and env.decisions[0].address is None
            with pytest.raises(Refused, match="loopback"):
                await Resolver().resolve("localhost", 443)
    run(main)


def test_wildcards_through_the_proxy() -> None:
    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "*.example.test")
            for host, expected in [("a.example.test", 200), ("a.b.example.test", 200), ("example.test", 403)]:
                response = await exchange(port, f"GET http://{host}:{env.http_port}/ HTTP/1.1\r\n\r\n".encode())
                assert status_of(response) == expected, host
    run(main)


@pytest.mark.parametrize("head", [
    b"garbage\r\n\r\n", b"GET /relative HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\nno colon here\r\n\r\n", b"GET http://allowed.test/ HTTP/2.0\r\n\r\n",
    b"CONNECT allowed.test HTTP/1.1\r\n\r\n", b"GET http://user:pw@allowed.test/ HTTP/1.1\r\n\r\n",
    b"GET http://allowed.test:99999/ HTTP/1.1\r\n\r\n", b"GET http://bad_host!.test/ HTTP/1.1\r\n\r\n",
    b"GET https://allowed.test/ HTTP/1.1\r\n\r\n", b"GET http://allowed.test/ HTTP/1.1\r\n Folded: x\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\nX-Key s3cr3t\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\nX-Key: \x00s3cr3t\r\n\r\n",
    b"CONNECT allowed.test:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"])
def test_malformed_requests_get_400(head: bytes) -> None:
    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "allowed.test")
            response = await exchange(port, head)
            assert status_of(response) == 400
            assert not env.decisions[0].allowed
            assert b"s3cr3t" not in response and "s3cr3t" not in repr(env.decisions)  # reasons never echo the request
    run(main)


def test_header_flood_gets_431() -> None:
    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "allowed.test")
            flood = b"".join(b"X-Flood-%d: %s\r\n" % (i, b"a" * 100) for i in range(700))
            response = await exchange(port, b"GET http://allowed.test/ HTTP/1.1\r\n" + flood + b"\r\n")
            assert status_of(response) == 431
    run(main)


def test_ports_outside_the_allowed_set_are_refused() -> None:
    async def main() -> None:
        async with environment(allowed_ports=(443,)) as env:
            port = await env.listen("c1", "allowed.test")
            response = await exchange(port, f"CONNECT allowed.test:{env.echo_port} HTTP/1.1\r\n\r\n".encode())
            assert status_of(response) == 403
            assert f"port {env.echo_port} is not allowed".encode() in response
    run(main)


def test_each_listener_has_its_own_policy_and_label() -> None:
    async def main() -> None:
        async with environment() as env:
            port_a, port_b = await env.listen("ctr_a", "a.test"), await env.listen("ctr_b", "b.test")
            for port, host, expected in [(port_a, "a.test", 200), (port_a, "b.test", 403),
                                         (port_b, "b.test", 200), (port_b, "a.test", 403)]:
                response = await exchange(port, f"GET http://{host}:{env.http_port}/ HTTP/1.1\r\n\r\n".encode())
                assert status_of(response) == expected, (port, host)
            assert [(d.client, d.host, d.allowed) for d in env.decisions] == [
                ("ctr_a", "a.test", True), ("ctr_a", "b.test", False),
                ("ctr_b", "b.test", True), ("ctr_b", "a.test", False)]
            with pytest.raises(ValueError, match="already"):
                await listen(env.proxy, "ctr_a", EgressPolicy(("a.test",)))
    run(main)


def test_remove_cuts_open_tunnels_and_stops_listening() -> None:
    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "allowed.test")
            other = await env.listen("c2", "allowed.test")
            tunnels = []
            for listener_port in (port, other):
                reader, writer = await asyncio.open_connection("127.0.0.1", listener_port)
                writer.write(f"CONNECT allowed.test:{env.echo_port} HTTP/1.1\r\n\r\n".encode())
                await reader.readuntil(b"\r\n\r\n")
                tunnels.append((reader, writer))
            await env.proxy.remove("c1")
            assert await tunnels[0][0].read(-1) == b""  # cut
            tunnels[1][1].write(b"still here")
            assert await tunnels[1][0].readexactly(10) == b"still here"  # the other client is untouched
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)
            for _, writer in tunnels:
                writer.close()
    run(main)


def test_connections_beyond_the_cap_get_503() -> None:
    async def main() -> None:
        async with environment(max_connections=2) as env:
            port = await env.listen("c1", "allowed.test")
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            await eventually_async(lambda: env.proxy.connections("c1") == 2, timeout=5,
                                   what="the proxy to accept both idle connections")
            response = await exchange(port, f"GET http://allowed.test:{env.http_port}/ HTTP/1.1\r\n\r\n".encode())
            assert status_of(response) == 503
            assert env.decisions[-1].reason == "too many connections"
            for _, writer in idle:
                writer.close()
            await eventually_async(lambda: env.proxy.connections("c1") == 0, timeout=5,
                                   what="the proxy to see the idle clients leave")
            ok = await exchange(port, f"GET http://allowed.test:{env.http_port}/ HTTP/1.1\r\n\r\n".encode())
            assert status_of(ok) == 200
    run(main)


def test_idle_tunnels_are_closed() -> None:
    async def main() -> None:
        async with environment(idle_timeout=0.3) as env:
            port = await env.listen("c1", "allowed.test")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"CONNECT allowed.test:{env.echo_port} HTTP/1.1\r\n\r\n".encode())
            await reader.readuntil(b"\r\n\r\n")
            for _ in range(3):  # activity keeps it open past the idle timeout
                await asyncio.sleep(0.2)  # the scenario: traffic spaced under the idle timeout
                writer.write(b"x")
                assert await reader.readexactly(1) == b"x"
            async with asyncio.timeout(3):
                assert await reader.read(-1) == b""
            writer.close()
    run(main)


def test_tunnels_end_at_the_total_timeout_even_when_busy() -> None:
    async def main() -> None:
        async with environment(total_timeout=0.5) as env:
            port = await env.listen("c1", "allowed.test")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"CONNECT allowed.test:{env.echo_port} HTTP/1.1\r\n\r\n".encode())
            await reader.readuntil(b"\r\n\r\n")
            started = asyncio.get_running_loop().time()
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                while True:
                    writer.write(b"x")
                    await reader.readexactly(1)
                    await asyncio.sleep(0.05)  # the scenario: a tunnel busy until the total timeout
            assert 0.3 < asyncio.get_running_loop().time() - started < 2
            writer.close()
    run(main)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_as_a_real_client() -> None:
    env_vars = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}

    async def curl(proxy_port: int, *args: str) -> tuple[str, str]:
        process = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--noproxy", "", "--proxy", f"http://127.0.0.1:{proxy_port}", "-w", "\n%{http_code}",
            "--max-time", "10", *args, env=env_vars, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        body, _, code = out.decode().rpartition("\n")
        return body, code or err.decode()

    async def main() -> None:
        async with environment() as env:
            port = await env.listen("c1", "allowed.test")
            body, code = await curl(port, f"http://allowed.test:{env.http_port}/hello?q=1")
            assert code == "200" and json.loads(body)["request_line"] == "GET /hello?q=1 HTTP/1.1"
            body, code = await curl(port, "-p", f"http://allowed.test:{env.http_port}/tunnelled")  # via CONNECT
            assert code == "200" and json.loads(body)["request_line"] == "GET /tunnelled HTTP/1.1"
            body, code = await curl(port, "-d", "payload", f"http://allowed.test:{env.http_port}/post")
            assert code == "200" and json.loads(body)["body"] == "payload"
            body, code = await curl(port, f"http://evil.test:{env.http_port}/")
            assert code == "403" and "not in the allowlist" in body
            assert [(d.method, d.host, d.allowed) for d in env.decisions] == [
                ("GET", "allowed.test", True), ("CONNECT", "allowed.test", True), ("POST", "allowed.test", True),
                ("GET", "evil.test", False)]
    run(main)


@pytest.mark.parametrize("ip", [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "100.127.255.254", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1", "::1", "::",
    "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1", "fec0::1", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::1", "64:ff9b::a00:1", "2001:db8::1", "::7f00:1"])
def test_check_address_refuses_internal_addresses(ip: str) -> None:
    assert check_address(ip) is not None


@pytest.mark.parametrize(("ip", "kind"), [
    ("100.64.0.1", "carrier-grade NAT"), ("10.1.2.3", "private"), ("169.254.169.254", "link-local"),
    ("::ffff:127.0.0.1", "loopback"), ("fd12:3456::1", "private"), ("0.0.0.0", "unspecified"),
    ("240.0.0.1", "reserved"), ("ff02::1", "multicast")])
def test_check_address_says_why(ip: str, kind: str) -> None:
    assert kind in (check_address(ip) or "")


def test_check_address_accepts_public_and_refuses_forbidden() -> None:
    public = ["203.0.114.7", "2a0b:4000::5", "::ffff:203.0.114.7"]
    for ip in public:
        assert check_address(ip) is None, ip
    assert check_address("203.0.114.7", forbidden=["203.0.114.7"]) == "203.0.114.7, a Cove's own address"
    assert check_address("::ffff:203.0.114.7", forbidden=["203.0.114.0/24"]) is not None
    assert check_address("not-an-ip") is not None


def test_resolver_trusts_only_its_test_mapping() -> None:
    async def main() -> None:
        resolver = Resolver(hosts=parse_test_hosts("Allowed.Test.=127.0.0.1, v6.test=::1"))
        assert (await resolver.resolve("allowed.test", 80)).addresses == ("127.0.0.1",)
        assert (await resolver.resolve("V6.test.", 80)).trusted
        with pytest.raises(Refused, match="raw IP"):
            await resolver.resolve("127.0.0.1", 80)
        with pytest.raises(Refused) as info:
            await resolver.resolve("bad name", 80)
        assert info.value.status == 400
    run(main)
    with pytest.raises(ValueError):
        parse_test_hosts("allowed.test")
