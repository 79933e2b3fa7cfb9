"""HTTP/1.1 request heads as the egress proxy reads and rewrites them.

Three forms arrive: ``CONNECT host:port`` and absolute URIs (``GET http://host/path``) from a
container, and, inside an intercepted tunnel, origin-form requests (``GET /path``) whose host the
tunnel already fixed. What goes upstream is always origin-form with the checked host in ``Host``,
hop-by-hop headers dropped; one request per connection, except inside an intercepted tunnel, where
the client's keep-alive is kept.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cove.egress.policy import DomainSecret

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                         "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "host"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.%]+\]|[^\[\]:/?#@\s]+)(?::(\d{1,5}))?")


class Reject(Exception):
    """The request is refused with HTTP ``status``; ``reason`` is safe to show and to record."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Request:
    method: str
    host: str
    port: int
    target: str
    headers: list[tuple[str, str]]
    tls: bool = False
    """Read inside an intercepted TLS tunnel (and so sent upstream over TLS)."""
    keep_alive: bool = False
    """More requests may follow on this connection (inside a tunnel only; otherwise one request each)."""
    upgrade: str | None = None
    """The protocol a request inside a tunnel asks to switch to (``websocket``); after it, bytes flow as they are."""
    upstream_head: bytes = b""
    body_length: int | None = 0


def parse_head(head: bytes, tunnel: Request | None = None) -> Request:
    """Parse a request head (ending in CRLFCRLF); inside ``tunnel`` it is origin-form for the tunnel's host.

    Raises Reject(400) when malformed.
    """
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise Reject(400, "malformed request line")
    method, target, version = parts
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name) or any(ch in value for ch in "\r\n\0"):
            raise Reject(400, "malformed header line")
        headers.append((name, value.strip(" \t")))
    if tunnel is not None:
        if method == "CONNECT" or not target.startswith("/"):
            raise Reject(400, "inside a tunnel, send origin-form requests (GET /path)")
        tokens = {token.strip().lower() for name, value in headers if name.lower() == "connection"
                  for token in value.split(",")}
        keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
        upgrade = next((value for name, value in headers if name.lower() == "upgrade"), None)
        return Request(method, tunnel.host, tunnel.port, target.partition("#")[0], headers, tls=True,
                       keep_alive=keep_alive, upgrade=upgrade if "upgrade" in tokens and upgrade else None)
    if method == "CONNECT":
        authority, path, default_port = target, "", None
    elif target[:7].lower() == "http://":
        rest = target[7:]
        cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, path, default_port = rest[:cut], rest[cut:].partition("#")[0], 80
        path = path if path.startswith("/") else "/" + path
    elif target[:8].lower() == "https://":
        raise Reject(400, "use CONNECT for https:// URLs")
    else:
        raise Reject(400, "this is a proxy: send CONNECT host:port or an absolute http:// URL")
    if "@" in authority:
        raise Reject(400, "credentials in the URL are not allowed")
    match = _AUTHORITY.fullmatch(authority)
    if match is None or (match.group(2) is None and default_port is None):
        raise Reject(400, "invalid host or port")
    port = int(match.group(2)) if match.group(2) is not None else default_port
    if port is None or not 0 < port < 65536:
        raise Reject(400, "invalid port")
    return Request(method, match.group(1), port, path, headers)


def substitute_secrets(request: Request, secrets: Iterable[DomainSecret]) -> list[str]:
    """Put each secret's value where its placeholder stands in the target or a header value.

    Returns the names of the secrets used. Only for requests inside an intercepted tunnel: the
    caller has checked that the secrets are for this request's host.
    """
    used: list[str] = []
    for secret in secrets:
        # Header lines are latin-1 on the wire; a UTF-8 value goes through as its bytes.
        value = secret.value.encode().decode("latin-1")
        found = secret.placeholder in request.target
        if found and any(not 0x21 <= ord(ch) < 0x7F for ch in value):
            raise Reject(400, f"secret {secret.name} has characters a URL cannot carry; send it in a header")
        request.target = request.target.replace(secret.placeholder, value)
        for index, (name, header) in enumerate(request.headers):
            if secret.placeholder in header:
                request.headers[index] = (name, header.replace(secret.placeholder, value))
                found = True
            elif name.lower() == "authorization" and (basic := _basic_with(header, secret)) is not None:
                request.headers[index] = (name, basic)
                found = True
        if found:
            used.append(secret.name)
    return used


def _basic_with(header: str, secret: DomainSecret) -> str | None:
    """``Basic`` credentials with the placeholder replaced, or None when it is not in them.

    Clients encode ``user:password`` from a URL (``https://user:$TOKEN@host/``) as Basic auth,
    so the placeholder arrives base64-encoded.
    """
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        credentials = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return None
    placeholder = secret.placeholder.encode()
    if placeholder not in credentials:
        return None
    replaced = credentials.replace(placeholder, secret.value.encode())
    return f"{scheme} {base64.b64encode(replaced).decode('ascii')}"


def upstream_head(request: Request) -> tuple[bytes, int | None]:
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
        raise Reject(400, "both Content-Length and Transfer-Encoding")
    if codings and codings != ["chunked"]:
        raise Reject(501, "only the chunked transfer-encoding is supported")
    if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
        raise Reject(400, "invalid Content-Length")
    length: int | None = int(next(iter(lengths))) if lengths else (None if codings else 0)
    default_port = 443 if request.tls else 80
    authority = request.host if request.port == default_port else f"{request.host}:{request.port}"
    lines = [f"{request.method} {request.target} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in request.headers
              if name.lower() not in _HOP_BY_HOP and name.lower() not in named and name.lower() != "content-length"]
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    if request.upgrade is not None:
        lines += [f"Upgrade: {request.upgrade}", "Connection: Upgrade"]
    elif not request.keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), length
