"""The egress proxy: an HTTP/1.1 forward proxy that lets a client reach only its allowlisted names.

One ``EgressProxy`` serves many clients; each ``listen_socket`` call adds a listener (a socket Cove
bound inside the client's network) with its own policy and label (the container id), so a client is
identified by where it connects, never by what it says.
It speaks ``CONNECT host:port`` (tunnels, for TLS) and absolute-URI requests (``GET http://host/``),
one request per client connection. For each request it checks, in order: the request parses, the
host is a name (raw IPs are refused), the name is allowlisted, the port is allowed, and every address
the name resolves to is public (see ``resolver.py``); then it connects to a checked address. Each
outcome is reported as a ``Decision``, which carries names, never paths, queries or header values.

A tunnel to a name that has domain secrets is not passed through blindly: with ``secrets_tls`` set,
the proxy ends the client's TLS with a certificate from Cove's CA (``tls.py``), opens its own
verified TLS to the server, and forwards the client's requests (kept alive as the client asks) with
each secret's placeholder replaced by its value. Plain-HTTP requests never get secrets: a secret
does not travel unencrypted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cove.egress.http1 import Reject, Request, substitute_secrets, upstream_head
from cove.egress.policy import DomainSecret, EgressPolicy, is_ip_literal, normalize_host
from cove.egress.reader import BUFFER, MAX_HEAD, RequestReader
from cove.egress.relay import Relay
from cove.egress.resolver import Refused, Resolver
from cove.egress.tls import CertificateAuthority

log = logging.getLogger(__name__)

_STATUS = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 431: "Request Header Fields Too Large",
           501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass(frozen=True)
class Decision:
    """One request's outcome; ``allowed`` is True only when the request was forwarded."""

    time: float
    client: str
    method: str
    host: str
    port: int | None
    allowed: bool
    reason: str
    address: str | None = None


@dataclass
class _Listener:
    label: str
    policy: EgressPolicy
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    closed: bool = False


@dataclass(frozen=True)
class SecretsTLS:
    """What interception needs: the CA that signs for secret domains, and how to trust real servers."""

    authority: CertificateAuthority
    upstream: ssl.SSLContext


def _printable(text: str) -> str:
    return "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in text)[:255]


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or "certificate verification failed"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    return "timed out" if isinstance(exc, TimeoutError) else "connection lost"


class EgressProxy:
    """Serves any number of listeners, each with its own policy and client label."""

    def __init__(self, resolver: Resolver | None = None, *, on_decision: Callable[[Decision], None] | None = None,
                 allowed_ports: Iterable[int] = (80, 443), max_connections: int = 64,
                 connect_timeout: float = 10.0, header_timeout: float = 30.0,
                 idle_timeout: float = 300.0, total_timeout: float = 3600.0,
                 secrets_tls: SecretsTLS | None = None) -> None:
        self.resolver = resolver or Resolver()
        self.secrets_tls = secrets_tls
        self.on_decision = on_decision
        self.allowed_ports = frozenset(allowed_ports)
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.header_timeout = header_timeout
        self._relay = Relay(idle_timeout)
        self.total_timeout = total_timeout
        self._listeners: dict[str, _Listener] = {}

    async def listen_socket(self, label: str, policy: EgressPolicy, sock: socket.socket) -> None:
        """Accept connections on a listening socket made elsewhere (inside a container's network)."""
        listener = self._add(label, policy)
        try:
            listener.server = await asyncio.start_server(functools.partial(self._handle, listener), sock=sock,
                                                         limit=MAX_HEAD)
        except BaseException:
            del self._listeners[label]
            raise

    def connections(self, label: str) -> int:
        """How many connections of ``label``'s client are open now (the cap is ``max_connections``)."""
        listener = self._listeners.get(label)
        return len(listener.tasks) if listener is not None else 0

    async def remove(self, label: str) -> None:
        """Stop listening for ``label`` and cut its open connections and tunnels."""
        listener = self._listeners.pop(label, None)
        if listener is None:
            return
        listener.closed = True
        if listener.server is not None:
            listener.server.close()
        for task in list(listener.tasks):
            task.cancel()
        await asyncio.gather(*listener.tasks, return_exceptions=True)
        if listener.server is not None:
            await listener.server.wait_closed()

    async def aclose(self) -> None:
        for label in list(self._listeners):
            await self.remove(label)

    def _add(self, label: str, policy: EgressPolicy) -> _Listener:
        if label in self._listeners:
            raise ValueError(f"a listener for {label!r} already exists")
        listener = self._listeners[label] = _Listener(label, policy)
        return listener

    def _decide(self, listener: _Listener, method: str, host: str, port: int | None, allowed: bool,
                reason: str, address: str | None = None) -> None:
        decision = Decision(time.time(), listener.label, method, _printable(host), port, allowed, reason, address)
        if self.on_decision is None:
            log.info("egress %s", decision)
            return
        try:
            self.on_decision(decision)
        except Exception:
            log.exception("on_decision failed")

    async def _handle(self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        listener.tasks.add(task)
        # asyncio turns Nagle off only for sockets made with proto=IPPROTO_TCP, and a socket bound inside a
        # container's network is not: without this, a small write waits ~40 ms for a delayed ACK.
        client = writer.get_extra_info("socket")
        if client is not None:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if listener.closed:
                return
            if len(listener.tasks) > self.max_connections:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1):
                        await reader.readuntil(b"\r\n\r\n")
                self._decide(listener, "", "", None, False, "too many connections")
                await self._refuse(reader, writer, 503, "too many connections")
                return
            await self._serve(listener, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
            log.debug("egress connection for %s ended: %r", listener.label, exc)
        except Exception:
            log.exception("egress connection for %s failed", listener.label)
        except asyncio.CancelledError:
            pass  # remove() or shutdown; the task ends here, and 3.11's streams log cancelled handlers as errors
        finally:
            listener.tasks.discard(task)
            writer.close()

    async def _serve(self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests = RequestReader(reader)
        try:
            request = await requests.next(self.header_timeout)
            if request is None:
                return  # connected and left without a request: nothing to decide
            upstream = await self._connect(listener, request)
        except Reject as exc:
            self._refused(listener, requests, exc)
            await self._refuse(reader, writer, exc.status, exc.reason)
            return
        up_reader, up_writer = upstream
        try:
            async with asyncio.timeout(self.total_timeout):
                if request.method == "CONNECT":
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await writer.drain()
                    secrets = listener.policy.secrets_for(request.host)
                    if secrets and self.secrets_tls is not None:
                        # A TLS client waits for the 200 before its handshake; bytes sent sooner cannot be
                        # part of the TLS session and are dropped (the handshake then fails and is recorded).
                        await self._intercept(listener, request, secrets, reader, writer, up_reader, up_writer)
                    else:
                        up_writer.write(requests.rest())  # what the client sent without waiting for the 200
                        await self._relay.tunnel(reader, writer, up_reader, up_writer)
                else:
                    await self._forward(listener, request, requests, writer, up_reader, up_writer)
        finally:
            up_writer.close()

    async def _forward(self, listener: _Listener, first: Request, requests: RequestReader,
                       writer: asyncio.StreamWriter, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                       following: Callable[[], Awaitable[Request | None]] | None = None) -> None:
        """Relay ``first`` and any ``following``; one refused after a head went upstream ends the connection."""
        try:
            await self._relay.forward(first, requests, writer, up_reader, up_writer, following)
        except Reject as exc:
            self._refused(listener, requests, exc)

    def _refused(self, listener: _Listener, requests: RequestReader, refusal: Reject) -> None:
        """Record a refusal, naming the request as far as it was read (inside a tunnel, at least its host)."""
        request, tunnel = requests.current, requests.tunnel
        method = request.method if request else ""
        host, port = (request.host, request.port) if request else (tunnel.host, tunnel.port) if tunnel else ("", None)
        self._decide(listener, method, host, port, False, refusal.reason)

    async def _connect(self, listener: _Listener,
                       request: Request) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Check ``request`` against the policy and connect to a checked address; Reject says why not."""
        if is_ip_literal(request.host):
            raise Reject(403, "raw IP addresses are not allowed")
        try:
            request.host = normalize_host(request.host)
        except ValueError as exc:
            raise Reject(400, f"invalid host name: {exc}") from exc
        if not listener.policy.allows(request.host):
            raise Reject(403, f"{request.host} is not in the allowlist")
        if request.port not in self.allowed_ports:
            raise Reject(403, f"port {request.port} is not allowed")
        if request.method != "CONNECT":
            request.upstream_head = upstream_head(request)
        try:
            resolution = await self.resolver.resolve(request.host, request.port)
        except Refused as exc:
            raise Reject(exc.status, exc.reason) from exc
        failure = Reject(502, f"cannot connect to {request.host}:{request.port}")
        for address in resolution.addresses:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    streams = await asyncio.open_connection(address, request.port, limit=MAX_HEAD)
            except TimeoutError:
                failure = Reject(504, f"connecting to {request.host}:{request.port} timed out")
                continue
            except OSError:
                continue
            self._decide(listener, request.method, request.host, request.port, True, "allowed", address)
            return streams
        raise failure

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int,
                      reason: str) -> None:
        """Answer ``status`` and close gently: drain what the client still sends so it reads the answer."""
        body = (reason + "\n").encode()
        writer.write(f"HTTP/1.1 {status} {_STATUS[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        with contextlib.suppress(Exception):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(2):
                for _ in range(64):
                    if not await reader.read(BUFFER):
                        break

    async def _intercept(self, listener: _Listener, tunnel: Request, secrets: tuple[DomainSecret, ...],
                         reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        """Serve the client's requests inside its tunnel over TLS of our own, with the secrets put in."""
        assert self.secrets_tls is not None
        host, port = tunnel.host, tunnel.port
        try:
            async with asyncio.timeout(self.header_timeout):
                await writer.start_tls(self.secrets_tls.authority.server_context(host))
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            self._decide(listener, "CONNECT", host, port, False,
                         f"the client's TLS handshake failed (it must trust Cove's CA): {_ssl_reason(exc)}")
            return
        requests = RequestReader(reader, tunnel)
        try:
            request = await requests.next(self.header_timeout)
            if request is None:
                return
            used = self._prepare(request, secrets)
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await up_writer.start_tls(self.secrets_tls.upstream, server_hostname=host)
            except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
                raise Reject(502, f"TLS to {host}:{port} failed: {_ssl_reason(exc)}") from exc
        except Reject as exc:
            self._refused(listener, requests, exc)
            await self._refuse(reader, writer, exc.status, exc.reason)
            return
        self._allow_intercepted(listener, request, used)

        async def following() -> Request | None:
            # The next request may come long after this one (a slow download is still flowing back):
            # only the relay's idle timeout bounds the wait for its first byte.
            if not await requests.wait() or (next_request := await requests.next(self.header_timeout)) is None:
                return None
            self._allow_intercepted(listener, next_request, self._prepare(next_request, secrets))
            return next_request

        await self._forward(listener, request, requests, writer, up_reader, up_writer, following)

    @staticmethod
    def _prepare(request: Request, secrets: tuple[DomainSecret, ...]) -> list[str]:
        """Put the secrets into an intercepted request and write its head for upstream; the names of those used."""
        used = substitute_secrets(request, secrets)
        request.upstream_head = upstream_head(request)
        return used

    def _allow_intercepted(self, listener: _Listener, request: Request, used: list[str]) -> None:
        reason = f"allowed with secrets {', '.join(used)}" if used else "allowed (decrypted for secrets; none used)"
        self._decide(listener, request.method, request.host, request.port, True, reason)
