"""What the egress proxy costs per HTTPS request: direct, tunnelled, and intercepted for a domain secret.

Everything runs on 127.0.0.1 in this process: a TLS origin (its certificate from a throwaway "internet"
CA), and Cove's ``EgressProxy`` with the test-name mapping. Each request opens a new connection, does
the TLS handshake and one GET, as curl does; then the same over one kept-alive connection, as
pip, git and API clients do:

* direct:      client -> origin
* tunnel:      client -> CONNECT through the proxy -> origin (the proxy relays bytes)
* intercepted: client -> CONNECT -> the proxy ends TLS with Cove's CA, puts the secret in, and opens
               its own verified TLS to the origin (two handshakes)

Prints p50/p95 and the ratios to direct. No target is asserted: this is what a secret costs.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from percentiles import p50_p95
from rich.console import Console
from rich.table import Table

from cove.egress.policy import DomainSecret, EgressPolicy
from cove.egress.proxy import EgressProxy, SecretsTLS
from cove.egress.resolver import Resolver
from cove.egress.tls import CertificateAuthority, upstream_context

REQUESTS = 300
WARMUP = 20
HOST, SECRET_HOST = "plain.bench.test", "secret.bench.test"
PLACEHOLDER = "cove_secret_" + "0" * 40
console = Console()
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers "ok" to each request on a connection until one says ``Connection: close``."""
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            close = b"Connection: close" in head
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + (b"Connection: close\r\n" if close else b"")
                         + b"\r\nok")
            await writer.drain()
            if close:
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, close: bool) -> None:
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {PLACEHOLDER}\r\n".encode()
                 + (b"Connection: close\r\n\r\n" if close else b"\r\n"))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or await reader.readexactly(2) != b"ok":
        raise RuntimeError(f"unexpected response: {head[:200]!r}")
    if close:
        writer.close()


async def _measure(label: str, once: Callable[[], Awaitable[None]]) -> list[float]:
    for _ in range(WARMUP):
        await once()
    samples = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        await once()
        samples.append((time.perf_counter() - started) * 1000)
    console.print(f"{label}: {len(samples)} requests")
    return samples


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        internet = CertificateAuthority(Path(directory) / "internet-ca")
        cove_ca = CertificateAuthority(Path(directory) / "cove-ca")
        origin = await asyncio.start_server(_origin, "127.0.0.1", 0, ssl=internet.server_context(HOST))
        secret_origin = await asyncio.start_server(_origin, "127.0.0.1", 0,
                                                   ssl=internet.server_context(SECRET_HOST))
        ports = {HOST: origin.sockets[0].getsockname()[1], SECRET_HOST: secret_origin.sockets[0].getsockname()[1]}
        proxy = EgressProxy(Resolver(hosts={HOST: "127.0.0.1", SECRET_HOST: "127.0.0.1"}),
                            on_decision=lambda decision: None, allowed_ports=ports.values(),
                            secrets_tls=SecretsTLS(cove_ca, upstream_context(str(internet.directory / "ca.pem"))))
        policy = EgressPolicy((HOST, SECRET_HOST), (DomainSecret(SECRET_HOST, "TOKEN", "v" * 40, PLACEHOLDER),))
        listening = socket.create_server(("127.0.0.1", 0))  # Cove binds this inside a container's network
        listening.setblocking(False)
        await proxy.listen_socket("bench", policy, listening)
        proxy_port = listening.getsockname()[1]
        trusts_internet = ssl.create_default_context(cafile=str(internet.directory / "ca.pem"))
        trusts_cove = ssl.create_default_context(cadata=cove_ca.cert_pem.decode())

        async def direct() -> Streams:
            return await asyncio.open_connection("127.0.0.1", ports[HOST], ssl=trusts_internet, server_hostname=HOST)

        def through_proxy(host: str, context: ssl.SSLContext) -> Callable[[], Awaitable[Streams]]:
            async def connect() -> Streams:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
                writer.write(f"CONNECT {host}:{ports[host]} HTTP/1.1\r\n\r\n".encode())
                await reader.readuntil(b"\r\n\r\n")
                await writer.start_tls(context, server_hostname=host)
                return reader, writer
            return connect

        paths = {"direct": (direct, HOST), "tunnel": (through_proxy(HOST, trusts_internet), HOST),
                 "intercepted": (through_proxy(SECRET_HOST, trusts_cove), SECRET_HOST)}
        results: dict[str, list[float]] = {}
        for name, (connect, host) in paths.items():
            async def fresh(connect: Callable[[], Awaitable[Streams]] = connect, host: str = host) -> None:
                await _get(*await connect(), host, close=True)
            results[f"{name}, new connection"] = await _measure(f"{name}, new connection", fresh)
        for name, (connect, host) in paths.items():
            reader, writer = await connect()

            async def again(reader: asyncio.StreamReader = reader, writer: asyncio.StreamWriter = writer,
                            host: str = host) -> None:
                await _get(reader, writer, host, close=False)
            results[f"{name}, kept alive"] = await _measure(f"{name}, kept alive", again)
            writer.close()
        await proxy.aclose()
        for server in (origin, secret_origin):
            server.close()
            await server.wait_closed()

    table = Table(title=f"HTTPS GET, {REQUESTS} sequential each (ms)")
    for column in ("path", "p50", "p95", "p50 / direct"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for name, samples in results.items():
        base = statistics.median(results["direct, " + name.split(", ")[1]])
        p50, p95 = p50_p95(samples)
        table.add_row(name, f"{p50:.2f}", f"{p95:.2f}", f"{p50 / base:.2f}x")
    console.print(table)


if __name__ == "__main__":
    asyncio.run(main())
