"""TLS interception for domain secrets, against a real TLS origin server on 127.0.0.1.

The origin presents a certificate from a test CA (tests/internet.py); the client trusts Cove's CA
(or, where a test says so, only the test CA) and talks through a real ``EgressProxy``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cove.egress.policy import DomainSecret, EgressPolicy
from cove.egress.proxy import Decision, EgressProxy, SecretsTLS
from cove.egress.resolver import Resolver
from cove.egress.tls import CertificateAuthority, upstream_context
from tests.egress.test_proxy import _http_handler, body_of, listen, read_body, run, status_of
from tests.internet import NAMES, make_certificates
from tests.polling import eventually_async

VALUE = "real-s3cr3t-value"
PLACEHOLDER = "cove_secret_" + "ab" * 20


@dataclass
class Setup:
    port: int
    origin_port: int
    authority: CertificateAuthority
    test_ca: Path
    decisions: list[Decision]

    def client_context(self, trust_cove: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if trust_cove:
            context.load_verify_locations(cadata=self.authority.cert_pem.decode())
        else:
            context.load_verify_locations(cafile=self.test_ca)
        return context

    async def open(self, host: str, trust_cove: bool = True) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TLS connection to ``host`` through the proxy's CONNECT tunnel."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"CONNECT {host}:{self.origin_port} HTTP/1.1\r\n\r\n".encode())
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
        await writer.start_tls(self.client_context(trust_cove), server_hostname=host)
        return reader, writer

    async def request(self, host: str, head: str, body: bytes = b"", trust_cove: bool = True) -> bytes:
        reader, writer = await self.open(host, trust_cove)
        try:
            writer.write(head.encode() + body)
            await writer.drain()
            return await reader.read(-1)
        finally:
            writer.close()


async def _keep_alive_origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             seen: list[str] | None = None) -> None:
    """Answers every request on the connection, numbering them, until the client says close; notes them in ``seen``."""
    number = 0
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            number += 1
            lines = head.decode("latin-1").split("\r\n")[:-2]
            if seen is not None:
                seen.append(lines[0])
            headers = {name.strip().lower(): value.strip() for name, value in
                       (line.split(":", 1) for line in lines[1:])}
            received, _ = await read_body(reader, headers)
            close = headers.get("connection", "").lower() == "close"
            body = json.dumps({"number": number, "request_line": lines[0], "headers": headers,
                               "body": received.decode()}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (
                len(body), b"Connection: close\r\n" if close else b"") + body)
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _slow_origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request with 10 chunks of a 100-byte body, 0.1 s apart."""
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(10):
                writer.write(b"x" * 100)
                await writer.drain()
                await asyncio.sleep(0.1)  # the scenario: a slow download
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _websocket_origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Switches protocols when asked, says which credentials it got, then echoes bytes."""
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers = {n.strip().lower(): v.strip() for n, v in (line.split(":", 1) for line in head.split("\r\n")[1:-2])}
        assert headers["upgrade"] == "websocket" and headers["connection"].lower() == "upgrade"
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                     + f"auth={headers['authorization']}\n".encode())
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> dict[str, Any]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return dict(json.loads(await reader.readexactly(length)))


@asynccontextmanager
async def setup(tmp_path: Path, value: str = VALUE, trust_origin: bool = True,
                handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] = _http_handler,
                header_timeout: float = 30.0) -> AsyncIterator[Setup]:
    test_ca, cert, key = make_certificates(tmp_path)
    origin_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    origin_tls.load_cert_chain(cert, key)
    origin = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=origin_tls)
    origin_port = origin.sockets[0].getsockname()[1]
    authority = CertificateAuthority(tmp_path / "cove-ca")
    decisions: list[Decision] = []
    proxy = EgressProxy(Resolver(hosts=dict.fromkeys(NAMES, "127.0.0.1")), on_decision=decisions.append,
                        allowed_ports=(origin_port,), header_timeout=header_timeout,
                        secrets_tls=SecretsTLS(authority, upstream_context(str(test_ca) if trust_origin else None)))
    policy = EgressPolicy(("api.cove.test", "other.cove.test"),
                          (DomainSecret("api.cove.test", "TOKEN", value, PLACEHOLDER),))
    try:
        port = await listen(proxy, "c1", policy)
        yield Setup(port, origin_port, authority, test_ca, decisions)
    finally:
        await proxy.aclose()
        origin.close()
        await origin.wait_closed()


def test_placeholders_become_values_in_headers_and_target(tmp_path: Path) -> None:
    async def main() -> None:
        async with setup(tmp_path) as env:
            response = await env.request("api.cove.test", (
                f"GET /v1/items?key={PLACEHOLDER} HTTP/1.1\r\nHost: spoofed.test\r\n"
                f"Authorization: Bearer {PLACEHOLDER}\r\nX-Both: {PLACEHOLDER}-{PLACEHOLDER}\r\n\r\n"))
            assert status_of(response) == 200
            seen = body_of(response)
            assert seen["request_line"] == f"GET /v1/items?key={VALUE} HTTP/1.1"
            headers = dict(seen["headers"])
            assert headers["Authorization"] == f"Bearer {VALUE}"
            assert headers["X-Both"] == f"{VALUE}-{VALUE}"
            assert headers["Host"] == f"api.cove.test:{env.origin_port}"  # the tunnel's host, not the header's
            assert [(d.method, d.allowed, d.reason) for d in env.decisions] == [
                ("CONNECT", True, "allowed"), ("GET", True, "allowed with secrets TOKEN")]
            assert VALUE not in repr(env.decisions) and PLACEHOLDER not in repr(env.decisions)
    run(main)


def test_placeholders_in_basic_credentials_are_replaced(tmp_path: Path) -> None:
    async def main() -> None:
        async with setup(tmp_path) as env:
            basic = base64.b64encode(f"x-token:{PLACEHOLDER}".encode()).decode()
            other = base64.b64encode(b"user:password").decode()
            for sent, expected in ((basic, base64.b64encode(f"x-token:{VALUE}".encode()).decode()),
                                   (other, other), ("%%%", "%%%")):
                response = await env.request("api.cove.test", f"GET / HTTP/1.1\r\nAuthorization: Basic {sent}\r\n\r\n")
                assert dict(body_of(response)["headers"])["Authorization"] == f"Basic {expected}"
    run(main)


def test_kept_alive_connections_get_secrets_in_every_request(tmp_path: Path) -> None:
    async def main() -> None:
        async with setup(tmp_path, handler=_keep_alive_origin) as env:
            reader, writer = await env.open("api.cove.test")
            request = f"GET /n HTTP/1.1\r\nHost: api.cove.test\r\nX-Key: {PLACEHOLDER}\r\n"
            writer.write((request + "\r\n").encode())
            first = await _read_response(reader)
            writer.write((request + "Content-Length: 4\r\n\r\nbody" + request + "\r\n").encode())  # pipelined
            second, third = await _read_response(reader), await _read_response(reader)
            writer.write((request + "Connection: close\r\n\r\n").encode())
            last = await _read_response(reader)
            assert await reader.read(-1) == b""  # the server closed, and so did the proxy
            writer.close()
            assert [r["number"] for r in (first, second, third, last)] == [1, 2, 3, 4]  # one upstream connection
            assert all(r["headers"]["x-key"] == VALUE for r in (first, second, third, last))
            assert "connection" not in first["headers"] and last["headers"]["connection"] == "close"
            assert [d.reason for d in env.decisions] == ["allowed"] + ["allowed with secrets TOKEN"] * 4
    run(main)


def test_pipelined_requests_go_to_the_server_one_after_the_other(tmp_path: Path) -> None:
    async def main() -> None:
        async with setup(tmp_path, handler=_keep_alive_origin) as env:
            reader, writer = await env.open("api.cove.test")
            writer.write((f"POST /a HTTP/1.1\r\nX-Key: {PLACEHOLDER}\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                          f"GET /b HTTP/1.1\r\nX-Key: {PLACEHOLDER}\r\nConnection: close\r\n\r\n").encode())
            first, second = await _read_response(reader), await _read_response(reader)
            assert await reader.read(-1) == b""
            writer.close()
            assert [(r["number"], r["request_line"], r["body"]) for r in (first, second)] == [
                (1, "POST /a HTTP/1.1", "hello world"), (2, "GET /b HTTP/1.1", "")]
            assert first["headers"]["x-key"] == second["headers"]["x-key"] == VALUE
            assert [d.reason for d in env.decisions] == ["allowed"] + ["allowed with secrets TOKEN"] * 2
    run(main)


def test_a_smuggling_attempt_in_a_tunnel_never_reaches_the_server(tmp_path: Path) -> None:
    seen: list[str] = []
    smuggle = (f"POST / HTTP/1.1\r\nX-Key: {PLACEHOLDER}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
               "0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n")

    async def main() -> None:
        async with setup(tmp_path, handler=functools.partial(_keep_alive_origin, seen=seen)) as env:
            first = await env.request("api.cove.test", smuggle)  # as the tunnel's first request
            assert status_of(first) == 400 and b"both Content-Length and Transfer-Encoding" in first
            reader, writer = await env.open("api.cove.test")
            writer.write(b"GET /n HTTP/1.1\r\n\r\n")
            assert (await _read_response(reader))["number"] == 1
            writer.write(smuggle.encode())  # as the next request on a kept-alive connection
            assert await reader.read(-1) == b""  # refused by ending the connection
            writer.close()
            assert seen == ["GET /n HTTP/1.1"]
            assert [(d.method, d.allowed, d.reason) for d in env.decisions] == [
                ("CONNECT", True, "allowed"), ("POST", False, "both Content-Length and Transfer-Encoding"),
                ("CONNECT", True, "allowed"), ("GET", True, "allowed (decrypted for secrets; none used)"),
                ("POST", False, "both Content-Length and Transfer-Encoding")]
    run(main)


def test_a_slow_answer_on_a_kept_alive_connection_is_not_cut(tmp_path: Path) -> None:
    async def main() -> None:
        async with setup(tmp_path, handler=_slow_origin, header_timeout=0.3) as env:
            reader, writer = await env.open("api.cove.test")
            for _ in range(2):  # each answer takes 1 s, far past the 0.3 s a request head may take
                writer.write(f"GET /big HTTP/1.1\r\nX-Key: {PLACEHOLDER}\r\n\r\n".encode())
                await reader.readuntil(b"\r\n\r\n")
                assert await reader.readexactly(1000) == b"x" * 1000
            writer.close()
            assert [d.allowed for d in env.decisions] == [True, True, True]
    run(main)


def test_an_upgraded_connection_gets_the_secret_in_its_handshake_then_relays_bytes(tmp_path: Path) -> None:
    async def main() -> None:
        async with setup(tmp_path, handler=_websocket_origin) as env:
            reader, writer = await env.open("api.cove.test")
            writer.write(f"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Authorization: Bearer {PLACEHOLDER}\r\n\r\nearly".encode())  # a frame right behind
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            assert await reader.readline() == f"auth=Bearer {VALUE}\n".encode()
            assert await reader.readexactly(5) == b"early"
            frames = f"GET /not-http HTTP/1.1\r\n\r\n{PLACEHOLDER}\x00\xff".encode("latin-1")
            writer.write(frames)
            assert await reader.readexactly(len(frames)) == frames  # relayed as they are, never parsed
            writer.close()
    run(main)


def test_bodies_pass_through_unchanged(tmp_path: Path) -> None:
    async def main() -> None:
        async with setup(tmp_path) as env:
            chunked = await env.request("api.cove.test", (
                f"POST /upload HTTP/1.1\r\nHost: api.cove.test\r\nX-Key: {PLACEHOLDER}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"), f"5\r\nhello\r\n{len(PLACEHOLDER):x}\r\n{PLACEHOLDER}\r\n"
                                                      "0\r\n\r\n".encode())
            seen = body_of(chunked)
            assert dict(seen["headers"])["X-Key"] == VALUE
            assert seen["body"] == "hello" + PLACEHOLDER  # only the head is rewritten
    run(main)


def test_names_without_secrets_are_tunnelled_untouched(tmp_path: Path) -> None:
    async def main() -> None:
        async with setup(tmp_path) as env:
            # Trusting only the real server's CA works: the proxy does not stand in for this name.
            response = await env.request("other.cove.test", (
                f"GET / HTTP/1.1\r\nHost: other.cove.test\r\nAuthorization: {PLACEHOLDER}\r\n\r\n"),
                trust_cove=False)
            assert dict(body_of(response)["headers"])["Authorization"] == PLACEHOLDER
            with pytest.raises(ssl.SSLCertVerificationError):  # Cove's CA cannot stand in for this name
                await env.open("other.cove.test", trust_cove=True)
    run(main)


def test_a_client_that_does_not_trust_coves_ca_gets_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with setup(tmp_path) as env:
            with pytest.raises(ssl.SSLCertVerificationError):  # the proxy's certificate is not the server's
                await env.open("api.cove.test", trust_cove=False)
            await eventually_async(lambda: len(env.decisions) == 2, timeout=5,
                                   what="the failed handshake to be recorded")
            assert not env.decisions[-1].allowed
            assert "TLS handshake failed" in env.decisions[-1].reason
    run(main)


def test_an_origin_the_proxy_cannot_verify_gets_no_secret(tmp_path: Path) -> None:
    async def main() -> None:
        async with setup(tmp_path, trust_origin=False) as env:
            response = await env.request("api.cove.test", f"GET / HTTP/1.1\r\nX-Key: {PLACEHOLDER}\r\n\r\n")
            assert status_of(response) == 502
            assert b"certificate verify failed" in response or b"unable to get local issuer" in response
            assert env.decisions[-1].allowed is False
    run(main)


def test_a_secret_that_cannot_go_into_a_url_is_refused_there(tmp_path: Path) -> None:
    async def main() -> None:
        async with setup(tmp_path, value="has space") as env:
            in_url = await env.request("api.cove.test", f"GET /?k={PLACEHOLDER} HTTP/1.1\r\n\r\n")
            assert status_of(in_url) == 400 and b"send it in a header" in in_url
            in_header = await env.request("api.cove.test", f"GET / HTTP/1.1\r\nX-Key: {PLACEHOLDER}\r\n\r\n")
            assert dict(body_of(in_header)["headers"])["X-Key"] == "has space"
    run(main)


def test_the_ca_is_kept_private_and_reused(tmp_path: Path) -> None:
    first = CertificateAuthority(tmp_path / "ca")
    assert (tmp_path / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ca").stat().st_mode & 0o777 == 0o700
    assert CertificateAuthority(tmp_path / "ca").cert_pem == first.cert_pem
    assert first.server_context("a.test") is first.server_context("a.test")  # minted once, cached
    assert sorted(p.name for p in (tmp_path / "ca").iterdir()) == ["ca.key", "ca.pem"]  # no leaf keys left
