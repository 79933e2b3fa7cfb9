"""What the egress proxy costs per HTTPS request: direct, tunnelled, and intercepted for a domain secret.

Everything runs on 127.0.0.1 in this process: a TLS origin (its certificate from a throwaway "internet"
CA), and Cove's ``EgressProxy`` with the test-name mapping. Each request opens a new connection, does
the TLS handshake and one GET, as curl, pip and git do per connection:

* direct:      client -> origin
* tunnel:      client -> CONNECT through the proxy -> origin (the proxy relays bytes)
* intercepted: client -> CONNECT -> the proxy ends TLS with Cove's CA, puts the secret in, and opens
               its own verified TLS to the origin (two handshakes)

Prints p50/p95 and the ratios to direct. No target is asserted: this is what a secret costs.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

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


async def _origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {PLACEHOLDER}\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read(-1)
    writer.close()
    if not response.endswith(b"ok"):
        raise RuntimeError(f"unexpected response: {response[:200]!r}")


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
        proxy_port = (await proxy.listen("bench", policy))[1]
        trusts_internet = ssl.create_default_context(cafile=str(internet.directory / "ca.pem"))
        trusts_cove = ssl.create_default_context(cadata=cove_ca.cert_pem.decode())

        async def direct() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", ports[HOST], ssl=trusts_internet,
                                                           server_hostname=HOST)
            await _get(reader, writer, HOST)

        def through_proxy(host: str, context: ssl.SSLContext) -> Callable[[], Awaitable[None]]:
            async def once() -> None:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
                writer.write(f"CONNECT {host}:{ports[host]} HTTP/1.1\r\n\r\n".encode())
                await reader.readuntil(b"\r\n\r\n")
                await writer.start_tls(context, server_hostname=host)
                await _get(reader, writer, host)
            return once

        results = {"direct": await _measure("direct", direct),
                   "tunnel": await _measure("tunnel", through_proxy(HOST, trusts_internet)),
                   "intercepted": await _measure("intercepted", through_proxy(SECRET_HOST, trusts_cove))}
        await proxy.aclose()
        for server in (origin, secret_origin):
            server.close()
            await server.wait_closed()

    base = statistics.median(results["direct"])
    table = Table(title=f"HTTPS request on a new connection, {REQUESTS} sequential each (ms)")
    for column in ("path", "p50", "p95", "p50 / direct"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for name, samples in results.items():
        p50, p95 = statistics.median(samples), statistics.quantiles(samples, n=20, method="inclusive")[18]
        table.add_row(name, f"{p50:.2f}", f"{p95:.2f}", f"{p50 / base:.2f}x")
    console.print(table)


if __name__ == "__main__":
    asyncio.run(main())
