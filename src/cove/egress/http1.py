"""HTTP/1.1 requests as the egress proxy interprets and rewrites them, once h11 has read them.

Three forms arrive: ``CONNECT host:port`` and absolute URIs (``GET http://host/path``) from a
container, and, inside an intercepted tunnel, origin-form requests (``GET /path``) whose host the
tunnel already fixed. h11 reads the request line, header fields and body framing (``reader.py``);
this module checks what a proxy needs beyond that (the HTTP version, the target's form, framing
headers that could be read two ways) and writes what goes upstream: always origin-form with the
checked host in ``Host``, hop-by-hop headers dropped; one request per connection, except inside an
intercepted tunnel, where the client's keep-alive is kept.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

import h11

from cove.egress.policy import DomainSecret

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                         "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "host"})
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
    """The body's length; None when it is chunked."""


def parse_request(event: h11.Request, tunnel: Request | None = None) -> Request:
    """The request h11 read, in the form a proxy serves; inside ``tunnel`` it is origin-form for the tunnel's host.

    Raises Reject(400) for what h11 accepts but a proxy does not. The body's framing is ``body_length``'s.
    """
    if event.http_version not in (b"1.0", b"1.1"):
        raise Reject(400, f"HTTP/{event.http_version.decode()} is not supported")
    # h11 checked the method (a token), the target (visible ASCII) and every header field.
    method, target = event.method.decode("ascii"), event.target.decode("ascii")
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers.raw_items()]
    if tunnel is not None:
        if method == "CONNECT" or not target.startswith("/"):
            raise Reject(400, "inside a tunnel, send origin-form requests (GET /path)")
        tokens = {token.strip().lower() for name, value in headers if name.lower() == "connection"
                  for token in value.split(",")}
        keep_alive = "keep-alive" in tokens if event.http_version == b"1.0" else "close" not in tokens
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


def body_length(event: h11.Request) -> int | None:
    """The body's length by the framing headers h11 checked (one valid Content-Length, Transfer-Encoding
    only ``chunked``); None when it is chunked.

    Raises Reject(400) when both came: h11 would go by Transfer-Encoding, a server might go by the
    length, and the bytes between would be a request of their own. A CONNECT has no body: what
    follows it is the tunnel's.
    """
    names = {name for name, _ in event.headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        raise Reject(400, "both Content-Length and Transfer-Encoding")
    length = None if b"transfer-encoding" in names else next(
        (int(value) for name, value in event.headers if name == b"content-length"), 0)
    if event.method == b"CONNECT" and length != 0:
        raise Reject(400, "a CONNECT request has no body")
    return length


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


def upstream_head(request: Request) -> bytes:
    """The head to send upstream: origin-form, hop-by-hop headers dropped, the body framed as it came."""
    named = {token.strip().lower() for name, value in request.headers if name.lower() == "connection"
             for token in value.split(",")}
    default_port = 443 if request.tls else 80
    authority = request.host if request.port == default_port else f"{request.host}:{request.port}"
    lines = [f"{request.method} {request.target} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in request.headers
              if name.lower() not in _HOP_BY_HOP and name.lower() not in named and name.lower() != "content-length"]
    length = request.body_length
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    if request.upgrade is not None:
        lines += [f"Upgrade: {request.upgrade}", "Connection: Upgrade"]
    elif not request.keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
