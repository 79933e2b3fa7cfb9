"""Preview URLs: ``/v1/containers/{id}/ports/{port}/...`` proxies HTTP and WebSocket to a port inside the
container (``service/previews.py`` says how it is reached and who may).

The path opens with the key (``Authorization: Bearer``), or carries a preview token as its first
segment (``/ports/{port}/~{token}/...``, what ``POST .../ports/{port}/url`` hands out), so that a
browser following the app's relative links keeps the token. The app is code of the container, so
what crosses is filtered both ways:

- to the app: never the key, the token or Cove's cookies (``Authorization``, ``Cookie`` and
  hop-by-hop headers are dropped); the path after the prefix, as the client sent it; ``Host`` is
  ``127.0.0.1:{port}``, the original in ``X-Forwarded-Host``, the prefix in ``X-Forwarded-Prefix``.
- from the app: no ``Set-Cookie`` (the app shares Cove's origin: its cookies would reach every other
  path there), no hop-by-hop headers, a ``Location`` on the app's root kept under the prefix, and
  ``Content-Security-Policy: sandbox ...`` without ``allow-same-origin``, so its pages run in an
  opaque origin: their scripts cannot read Cove's pages or cookies (the web console's among them);
  ``Referrer-Policy: no-referrer`` so a token in the path does not leak to the sites it links to.

Responses stream both ways (an upload or a download of any length holds one read at a time). HTTP is
spoken to the app by ``httpcore`` (httpx's own transport, strict HTTP/1.1 parsing by ``h11``: a
response with smuggled or malformed framing is a 502, never passed on) over the socket made inside
the container's network; WebSockets by ``websockets`` over such a socket. Each request and
WebSocket session is audited (``service/previews.py``): this side counts what crosses.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpcore
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from cove.api.auth import project_of
from cove.errors import CoveError
from cove.service.previews import Exchange, PortUnreachable, PreviewService

router = APIRouter(prefix="/v1/containers", tags=["containers"])
Project = Annotated[str, Depends(project_of)]

PREVIEW_PATH = "/v1/containers/{container_id}/ports/{port:int}/{rest:path}"
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"transfer-encoding", b"upgrade", b"host"})
NOT_TO_APP = HOP_BY_HOP | {b"authorization", b"cookie", b"forwarded", b"x-forwarded-for", b"x-forwarded-host",
                           b"x-forwarded-proto", b"x-forwarded-prefix"}
NOT_FROM_APP = HOP_BY_HOP | {b"set-cookie", b"content-security-policy", b"referrer-policy"}
SANDBOX = (b"sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads "
           b"allow-popups-to-escape-sandbox")
TIMEOUTS = {"connect": 10.0, "read": 300.0, "write": 60.0, "pool": 10.0}
"""A slow app (a build, a long poll) may take minutes to answer; a read that long with no byte is a 502."""
WS_MAX_MESSAGE = 16 << 20
MAX_AUDITED_PATH = 2048
"""An app's path is kept in the audit trail up to this many characters."""
WS_HEADERS_NOT_TO_APP = NOT_TO_APP | {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
                                      b"sec-websocket-protocol"}


class PreviewUrlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_in: int = 3600
    """Seconds the URL opens the port (1 to 7 days)."""


class PreviewUrl(BaseModel):
    object: Literal["container.preview_url"] = "container.preview_url"
    url: str
    """A path on this server (prefix it with the server's address): the app's root, token included."""
    expires_at: int


@router.post("/{container_id}/ports/{port}/url")
async def preview_url(container_id: str, port: int, request: Request, project: Project,
                      body: PreviewUrlRequest | None = None) -> PreviewUrl:
    """A signed, expiring URL for the app on ``port`` in this container, to open in a browser."""
    service: PreviewService = request.app.state.previews
    expires_in = body.expires_in if body is not None else 3600
    token = await service.url_token(project, container_id, port, expires_in)
    return PreviewUrl(url=f"/v1/containers/{container_id}/ports/{port}/~{token.token}/", expires_at=token.expires_at)


class Target:
    """Who asked and for what: the project (by key or token), the public prefix (token included) and the
    app's path."""

    def __init__(self, project: str, via: Literal["api_key", "token"], prefix: str, path: bytes) -> None:
        self.project = project
        self.via = via
        self.prefix = prefix
        self.path = path

    def exchange(self, method: str, websocket: bool = False) -> Exchange:
        """What the audit trail keeps of this request: the path without its query."""
        path = self.path.partition(b"?")[0].decode(errors="replace")[:MAX_AUDITED_PATH]
        return Exchange(method=method, path=path, via=self.via, websocket=websocket)


async def _target(scope: Scope) -> Target | str:
    """The request's target, or the URL to redirect to (a token without its trailing slash)."""
    service: PreviewService = scope["app"].state.previews
    container_id, port = scope["path_params"]["container_id"], scope["path_params"]["port"]
    prefix = f"/v1/containers/{container_id}/ports/{port}"
    raw: bytes = scope.get("raw_path") or b""
    if raw.startswith(prefix.encode()):  # the path after the prefix exactly as the client sent it
        rest = raw[len(prefix):]
    else:  # the prefix was spelled otherwise (percent-encoded, a leading zero): from the decoded path
        tail: str = scope["path"].split("/ports/", 1)[1]  # "8000/..." or "8000"
        rest = quote(tail[tail.index("/"):]).encode() if "/" in tail else b""
    query = scope.get("query_string", b"")
    via: Literal["api_key", "token"] = "token" if rest.startswith(b"/~") else "api_key"
    if via == "token":
        token, slash, after = rest[2:].partition(b"/")
        project = service.project_of(token.decode(errors="replace"), container_id, port)
        prefix = f"{prefix}/~{token.decode()}"
        if not slash:
            return prefix + "/" + (f"?{query.decode(errors='replace')}" if query else "")
        rest = b"/" + after
    else:
        project = await project_of(HTTPConnection(scope))
    path = (rest or b"/") + (b"?" + query if query else b"")
    return Target(project, via, prefix, path)


def _forwarded(scope: Scope, target: Target, port: int, drop: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    headers = [(key.lower(), value) for key, value in scope["headers"] if key.lower() not in drop]
    host = dict(scope["headers"]).get(b"host", b"")
    headers += [(b"host", f"127.0.0.1:{port}".encode()), (b"x-forwarded-host", host),
                (b"x-forwarded-proto", scope.get("scheme", "http").replace("ws", "http").encode()),
                (b"x-forwarded-prefix", target.prefix.encode())]
    return headers


class HttpProxy:
    """The HTTP route, as an ASGI app (Starlette would wrap a function as request-to-response), so the
    connection to the app stays open while the body streams."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await proxy_http(scope, receive, send)


async def proxy_http(scope: Scope, receive: Receive, send: Send) -> None:
    headers = {key.lower(): value for key, value in scope["headers"]}
    service: PreviewService = scope["app"].state.previews
    port: int = scope["path_params"]["port"]
    started = False
    try:
        target = await _target(scope)
        if isinstance(target, str):
            await RedirectResponse(target, status_code=307)(scope, receive, send)
            return
        outgoing = _forwarded(scope, target, port, NOT_TO_APP)
        if b"transfer-encoding" in headers and b"content-length" not in headers:
            outgoing.append((b"transfer-encoding", b"chunked"))  # h11 re-chunks the body the client streams
        exchange = target.exchange(scope["method"])
        async with service.connect(target.project, scope["path_params"]["container_id"], port, exchange) as sock:
            connection = httpcore.AsyncHTTPConnection(httpcore.Origin(b"http", b"127.0.0.1", port),
                                                  network_backend=_Backend(sock))
            request = httpcore.Request(scope["method"].encode(), httpcore.URL(
                scheme=b"http", host=b"127.0.0.1", port=port, target=target.path), headers=outgoing,
                content=_body(receive, exchange), extensions={"timeout": TIMEOUTS})
            try:
                response = await connection.handle_async_request(request)
                try:
                    exchange.status = response.status
                    await send({"type": "http.response.start", "status": response.status,
                                "headers": _from_app(response.headers, target.prefix)})
                    started = True
                    async for chunk in response.aiter_stream():
                        exchange.bytes_out += len(chunk)
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                finally:
                    await response.aclose()
            except (httpcore.ProtocolError, httpcore.NetworkError, httpcore.TimeoutException) as exc:
                raise PortUnreachable(f"The app on port {port} broke off or answered badly ({type(exc).__name__}).") \
                    from None
            finally:
                await connection.aclose()
    except CoveError as exc:
        if started:  # the status is out: all that is left is to cut the body short
            raise
        await JSONResponse(exc.to_dict(), status_code=exc.status_code)(scope, receive, send)


async def _body(receive: Receive, exchange: Exchange) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        if body := message.get("body", b""):
            exchange.bytes_in += len(body)
            yield body
        if not message.get("more_body"):
            return


def _from_app(headers: list[tuple[bytes, bytes]], prefix: str) -> list[tuple[bytes, bytes]]:
    kept = []
    for key, value in headers:
        name = key.lower()
        if name in NOT_FROM_APP:
            continue
        if name == b"location" and value.startswith(b"/") and not value.startswith(b"//"):
            value = prefix.encode() + value  # the app's own root is under the prefix here
        kept.append((name, value))
    return [*kept, (b"content-security-policy", SANDBOX), (b"referrer-policy", b"no-referrer")]


async def proxy_websocket(websocket: WebSocket) -> None:
    """The WebSocket route: the app's handshake first (its refusal is a 502 before the upgrade), then
    messages both ways until either side closes."""
    scope = websocket.scope
    service: PreviewService = websocket.app.state.previews
    port: int = websocket.path_params["port"]
    headers = {key.lower(): value for key, value in scope["headers"]}
    try:
        target = await _target(scope)
        if isinstance(target, str):
            raise PortUnreachable("A preview WebSocket needs the path after the token.")
        exchange = target.exchange("GET", websocket=True)
        async with service.connect(target.project, websocket.path_params["container_id"], port, exchange) as sock:
            offered = [p.strip() for p in headers.get(b"sec-websocket-protocol", b"").decode().split(",") if p.strip()]
            extra = [(key.decode("latin-1"), value.decode("latin-1"))
                     for key, value in _forwarded(scope, target, port, WS_HEADERS_NOT_TO_APP) if key != b"host"]
            try:
                app = await connect(f"ws://127.0.0.1:{port}{target.path.decode('latin-1')}", sock=sock,
                                    additional_headers=extra, subprotocols=offered or None,
                                    max_size=WS_MAX_MESSAGE, open_timeout=TIMEOUTS["connect"], close_timeout=2,
                                    proxy=None)
            except (InvalidHandshake, OSError, TimeoutError) as exc:
                raise PortUnreachable(f"The app on port {port} refused the WebSocket ({exc}).") from None
            async with app:
                await websocket.accept(subprotocol=app.subprotocol)
                exchange.status = 101
                await _relay(websocket, app, exchange)
    except CoveError as exc:
        if websocket.application_state == WebSocketState.CONNECTING:
            await websocket.send_denial_response(JSONResponse(exc.to_dict(), status_code=exc.status_code))
            return
    if websocket.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.close(1000)


async def _relay(websocket: WebSocket, app: ClientConnection, exchange: Exchange) -> None:
    async def to_app() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                await app.close(message.get("code", 1000))
                return
            data = message.get("bytes")
            exchange.bytes_in += len(data if data is not None else (message.get("text") or "").encode())
            await app.send(data if data is not None else message.get("text") or "")

    async def to_client() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in app:
                exchange.bytes_out += len(data if isinstance(data, bytes) else data.encode())
                if isinstance(data, bytes):
                    await websocket.send_bytes(data)
                else:
                    await websocket.send_text(data)
        code = app.close_code or 1000
        with contextlib.suppress(Exception):
            await websocket.close(code if 1000 <= code < 5000 and code not in (1005, 1006, 1015) else 1011)

    tasks = [asyncio.create_task(to_app()), asyncio.create_task(to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except (WebSocketDisconnect, ConnectionClosed):
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Stream(httpcore.AsyncNetworkStream):
    """httpcore's view of the socket made inside the container's network."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 (httpcore's)
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("The app did not answer in time.") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109 (httpcore's)
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("The app did not read in time.") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from None

    async def aclose(self) -> None:
        self._writer.close()

    def get_extra_info(self, info: str) -> Any:
        return None


class _Backend(httpcore.AsyncNetworkBackend):
    """Connects httpcore to the one socket already made (never a name or an address of its own)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        reader, writer = await asyncio.open_connection(sock=self._sock)
        return _Stream(reader, writer)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Previews connect only inside the container.")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
