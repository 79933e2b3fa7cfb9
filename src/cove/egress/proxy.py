"""The egress proxy: an HTTP/1.1 forward proxy that lets a client reach only its allowlisted names.

One ``EgressProxy`` serves many clients; each ``listen`` call adds a listener with its own policy and
label (the container id), so a client is identified by where it connects, never by what it says.
It speaks ``CONNECT host:port`` (tunnels, for TLS) and absolute-URI requests (``GET http://host/``),
one request per client connection. For each request it checks, in order: the request parses, the
host is a name (raw IPs are refused), the name is allowlisted, the port is allowed, and every address
the name resolves to is public (see ``resolver.py``); then it connects to a checked address. Each
outcome is reported as a ``Decision``, which carries names, never paths, queries or header values.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from cove.egress.policy import EgressPolicy, is_ip_literal, normalize_host
from cove.egress.resolver import Refused, Resolver

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
_BUFFER = 64 * 1024
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                         "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "host"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.%]+\]|[^\[\]:/?#@\s]+)(?::(\d{1,5}))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")
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


class _Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _Request:
    method: str
    host: str
    port: int
    target: str
    headers: list[tuple[str, str]]
    upstream_head: bytes = b""
    body_length: int | None = 0


@dataclass
class _Listener:
    label: str
    policy: EgressPolicy
    server: asyncio.Server | None = None
    unix_path: str | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    closed: bool = False


@dataclass
class _Activity:
    last: float


def _printable(text: str) -> str:
    return "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in text)[:255]


def _parse_head(head: bytes) -> _Request:
    """Parse a request head (ending in CRLFCRLF) into a request for a host; _Reject(400) when malformed."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise _Reject(400, "malformed request line")
    method, target, _ = parts
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name) or any(ch in value for ch in "\r\n\0"):
            raise _Reject(400, "malformed header line")
        headers.append((name, value.strip(" \t")))
    if method == "CONNECT":
        authority, path, default_port = target, "", None
    elif target[:7].lower() == "http://":
        rest = target[7:]
        cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, path, default_port = rest[:cut], rest[cut:].partition("#")[0], 80
        path = path if path.startswith("/") else "/" + path
    elif target[:8].lower() == "https://":
        raise _Reject(400, "use CONNECT for https:// URLs")
    else:
        raise _Reject(400, "this is a proxy: send CONNECT host:port or an absolute http:// URL")
    if "@" in authority:
        raise _Reject(400, "credentials in the URL are not allowed")
    match = _AUTHORITY.fullmatch(authority)
    if match is None or (match.group(2) is None and default_port is None):
        raise _Reject(400, "invalid host or port")
    port = int(match.group(2)) if match.group(2) is not None else default_port
    if port is None or not 0 < port < 65536:
        raise _Reject(400, "invalid port")
    return _Request(method, match.group(1), port, path, headers)


def _upstream_head(request: _Request) -> tuple[bytes, int | None]:
    """The head to send upstream (origin-form, hop-by-hop headers dropped) and the body length (None: chunked)."""
    named: set[str] = set()
    lengths: set[str] = set()
    codings: list[str] = []
    for name, value in request.headers:
        lower = name.lower()
        if lower == "connection":
            named.update(token.strip().lower() for token in value.split(","))
        elif lower == "content-length":
            lengths.add(value)
        elif lower == "transfer-encoding":
            codings += [token.strip().lower() for token in value.split(",") if token.strip()]
    if codings and lengths:
        raise _Reject(400, "both Content-Length and Transfer-Encoding")
    if codings and codings != ["chunked"]:
        raise _Reject(501, "only the chunked transfer-encoding is supported")
    if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
        raise _Reject(400, "invalid Content-Length")
    length: int | None = int(next(iter(lengths))) if lengths else (None if codings else 0)
    host = request.host
    authority = host if request.port == 80 else f"{host}:{request.port}"
    lines = [f"{request.method} {request.target} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in request.headers
              if name.lower() not in _HOP_BY_HOP and name.lower() not in named and name.lower() != "content-length"]
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), length


class EgressProxy:
    """Serves any number of listeners, each with its own policy and client label."""

    def __init__(self, resolver: Resolver | None = None, *, on_decision: Callable[[Decision], None] | None = None,
                 allowed_ports: Iterable[int] = (80, 443), max_connections: int = 64,
                 connect_timeout: float = 10.0, header_timeout: float = 30.0,
                 idle_timeout: float = 300.0, total_timeout: float = 3600.0) -> None:
        self.resolver = resolver or Resolver()
        self.on_decision = on_decision
        self.allowed_ports = frozenset(allowed_ports)
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.total_timeout = total_timeout
        self._listeners: dict[str, _Listener] = {}

    async def listen(self, label: str, policy: EgressPolicy, host: str = "127.0.0.1",
                     port: int = 0) -> tuple[str, int]:
        """Accept connections on ``host:port`` for client ``label``; returns the bound address."""
        listener = self._add(label, policy)
        try:
            listener.server = await asyncio.start_server(functools.partial(self._handle, listener),
                                                         host, port, limit=MAX_HEAD)
        except BaseException:
            del self._listeners[label]
            raise
        name = listener.server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def listen_socket(self, label: str, policy: EgressPolicy, sock: socket.socket) -> None:
        """Accept connections on a listening socket made elsewhere (inside a container's network)."""
        listener = self._add(label, policy)
        try:
            listener.server = await asyncio.start_server(functools.partial(self._handle, listener), sock=sock,
                                                         limit=MAX_HEAD)
        except BaseException:
            del self._listeners[label]
            raise

    async def listen_unix(self, label: str, policy: EgressPolicy, path: str) -> str:
        """Like ``listen`` on a Unix socket, which a container reaches through a bind mount, not a route."""
        listener = self._add(label, policy)
        try:
            listener.server = await asyncio.start_unix_server(functools.partial(self._handle, listener),
                                                              path, limit=MAX_HEAD)
        except BaseException:
            del self._listeners[label]
            raise
        listener.unix_path = path
        return path

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
        if listener.unix_path is not None:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(listener.unix_path).st_mode):
                    os.unlink(listener.unix_path)

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
        request: _Request | None = None
        try:
            try:
                async with asyncio.timeout(self.header_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError as exc:
                raise _Reject(431, f"request head larger than {MAX_HEAD} bytes") from exc
            except asyncio.IncompleteReadError as exc:
                if not exc.partial.strip():
                    return  # connected and left without a request: nothing to decide
                raise _Reject(400, "incomplete request head") from exc
            except TimeoutError as exc:
                raise _Reject(408, "request head not received in time") from exc
            request = _parse_head(head)
            upstream = await self._connect(listener, request)
        except _Reject as exc:
            method, host, port = (request.method, request.host, request.port) if request else ("", "", None)
            self._decide(listener, method, host, port, False, exc.reason)
            await self._refuse(reader, writer, exc.status, exc.reason)
            return
        up_reader, up_writer = upstream
        try:
            async with asyncio.timeout(self.total_timeout):
                if request.method == "CONNECT":
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await writer.drain()
                    await self._tunnel(reader, writer, up_reader, up_writer)
                else:
                    await self._forward(request, reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()

    async def _connect(self, listener: _Listener,
                       request: _Request) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Check ``request`` against the policy and connect to a checked address; _Reject says why not."""
        if is_ip_literal(request.host):
            raise _Reject(403, "raw IP addresses are not allowed")
        try:
            request.host = normalize_host(request.host)
        except ValueError as exc:
            raise _Reject(400, f"invalid host name: {exc}") from exc
        if not listener.policy.allows(request.host):
            raise _Reject(403, f"{request.host} is not in the allowlist")
        if request.port not in self.allowed_ports:
            raise _Reject(403, f"port {request.port} is not allowed")
        if request.method != "CONNECT":
            request.upstream_head, request.body_length = _upstream_head(request)
        try:
            resolution = await self.resolver.resolve(request.host, request.port)
        except Refused as exc:
            raise _Reject(exc.status, exc.reason) from exc
        failure = _Reject(502, f"cannot connect to {request.host}:{request.port}")
        for address in resolution.addresses:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    streams = await asyncio.open_connection(address, request.port, limit=MAX_HEAD)
            except TimeoutError:
                failure = _Reject(504, f"connecting to {request.host}:{request.port} timed out")
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
                    if not await reader.read(_BUFFER):
                        break

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        activity = _Activity(asyncio.get_running_loop().time())
        await self._together(self._pipe(reader, up_writer, activity), self._pipe(up_reader, writer, activity),
                             first_ends=False)

    async def _forward(self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        up_writer.write(request.upstream_head)
        activity = _Activity(asyncio.get_running_loop().time())
        # The response is relayed while the body is still being sent, so "100 Continue" reaches the client.
        await self._together(self._pipe(up_reader, writer, activity, half_close=False),
                             self._send_body(reader, up_writer, request.body_length, activity), first_ends=True)

    async def _together(self, first: Coroutine[Any, Any, None], second: Coroutine[Any, Any, None], *,
                        first_ends: bool) -> None:
        """Run both; stop at the first failure, or when ``first`` ends if ``first_ends``."""
        tasks = (asyncio.create_task(first), asyncio.create_task(second))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if not any(task.exception() for task in done) and not (first_ends and tasks[0] in done):
                await asyncio.wait(tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: _Activity,
                    half_close: bool = True) -> None:
        """Copy until EOF (then half-close) or until neither direction moved for ``idle_timeout``."""
        loop = asyncio.get_running_loop()
        while True:
            remaining = activity.last + self.idle_timeout - loop.time()
            if remaining <= 0:
                raise TimeoutError("idle")
            try:
                async with asyncio.timeout(remaining):
                    data = await reader.read(_BUFFER)
            except TimeoutError:
                continue
            if not data:
                break
            activity.last = loop.time()
            writer.write(data)
            await writer.drain()
        if half_close and writer.can_write_eof():
            writer.write_eof()

    async def _send_body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int | None,
                         activity: _Activity) -> None:
        """Copy a request body of ``length`` bytes, or chunk by chunk when it is chunked (None)."""
        loop = asyncio.get_running_loop()

        async def copy(count: int) -> None:
            while count > 0:
                data = await reader.read(min(count, _BUFFER))
                if not data:
                    raise asyncio.IncompleteReadError(b"", count)
                count -= len(data)
                activity.last = loop.time()
                writer.write(data)
                await writer.drain()

        if length is not None:
            await copy(length)
            return
        while True:
            line = await reader.readuntil(b"\r\n")
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise ValueError("malformed chunk size line")
            writer.write(line)
            size = int(match.group(1), 16)
            if size == 0:
                break
            await copy(size)
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("malformed chunk")
            writer.write(b"\r\n")
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
            writer.write(line)
        writer.write(b"\r\n")
        await writer.drain()
