"""Reading a client's requests with h11: where each head, each body and the next request begin.

The proxy parses only what clients send; answers are relayed as bytes. h11 reads the request line,
the header fields and the body's framing (Content-Length, chunked), so where a request ends is
decided by a well-tested library rather than by hand-written code, and malformed framing is refused
instead of guessed at. Where h11 is laxer or stricter than a proxy should be, the raw head is
settled here first:

- a head ends at its first CRLFCRLF, is at most ``MAX_HEAD`` bytes (else 431) and has no bare LF,
  which h11 would accept as a line end where a server might not;
- obsolete line folding (a line starting with a space or a tab) is refused: h11 unfolds it
  silently, while a server might read the folded line as a header field of its own;
- h11 insists on ``Host`` in HTTP/1.1 requests (python-hyper/h11#105), which a proxy ignores (the
  checked host goes upstream) and clients leave out of CONNECT: a head without one gets an empty
  one for h11's sake, dropped like every client ``Host``.

h11 follows a whole connection, and wants an answer sent through it before it reads the next
request; answers are relayed as bytes, so each request gets a fresh ``h11.Connection``, fed with the
bytes that came after the previous request (its ``trailing_data``).

The body goes upstream re-framed from h11's ``Data`` events: as they came under a Content-Length,
one chunk each when chunked. Whatever part of the body arrived with the head is parsed before the
request goes anywhere, so a malformed body sent along with its head is refused with a 400 before
the proxy connects upstream; one that turns malformed later ends the connection (``relay.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import h11

from cove.egress.http1 import Reject, Request, body_length, parse_request

MAX_HEAD = 64 * 1024
BUFFER = 64 * 1024
_H11_STATUS = {400: "malformed request", 431: "too large", 501: "not supported"}  # h11's status hints


class RequestReader:
    """The requests on one client connection, read one at a time: ``next``, then its ``body``."""

    def __init__(self, reader: asyncio.StreamReader, tunnel: Request | None = None) -> None:
        self.reader = reader
        self.tunnel = tunnel
        """Inside an intercepted tunnel, requests are origin-form for its host."""
        self.current: Request | None = None
        """The request being read, from when its head parsed (so that refusing its body can name it)."""
        self._pending = bytearray()  # received and not yet parsed: the start of the next request
        self._parser = h11.Connection(h11.SERVER)
        self._chunked = False
        self._ready: list[bytes] = []  # body parsed and framed for upstream, not yet taken
        self._complete = True  # the current body is parsed to its end

    async def wait(self) -> bool:
        """Wait, with no time limit, until the client sends more (True) or closes (False)."""
        if not self._pending:
            self._pending += await self.reader.read(BUFFER)
        return bool(self._pending)

    async def next(self, header_timeout: float) -> Request | None:
        """The next request, its head parsed and the part of its body that came along checked.

        None when the client closed without starting one. Raises Reject when the request is malformed,
        its head too large (431) or not complete within ``header_timeout`` (408).
        """
        self.current = None
        try:
            async with asyncio.timeout(header_timeout):
                head = await self._head()
        except TimeoutError as exc:
            raise Reject(408, "request head not received in time") from exc
        if head is None:
            return None
        self._parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._parser.receive_data(_for_h11(head) + self._pending)
        self._pending = bytearray()
        event = self._event()
        assert isinstance(event, h11.Request)  # h11 had a whole head: a request, or RemoteProtocolError
        self.current = request = parse_request(event, self.tunnel)
        request.body_length = body_length(event)
        self._chunked = request.body_length is None
        self._ready = []
        self._complete = self._parse_body()
        return request

    async def body(self) -> AsyncIterator[bytes]:
        """The current request's body as it arrives, framed for upstream. Raises Reject when malformed."""
        while True:
            if self._ready:
                yield b"".join(self._ready)
                self._ready = []
            if self._complete:
                return
            data = await self.reader.read(BUFFER)
            if not data:
                raise ConnectionResetError("the client closed in the middle of a request body")
            self._parser.receive_data(data)
            self._complete = self._parse_body()

    def rest(self) -> bytes:
        """What the client sent after the current request: a tunnel's or an upgraded connection's first bytes."""
        rest, self._pending = bytes(self._pending), bytearray()
        return rest

    async def _head(self) -> bytes | None:
        """The next head, through its CRLFCRLF, taken from the bytes received; None if the client closed first."""
        searched = 0
        while (end := self._pending.find(b"\r\n\r\n", searched)) < 0 and len(self._pending) <= MAX_HEAD:
            searched = max(0, len(self._pending) - 3)
            data = await self.reader.read(BUFFER)
            if not data:
                if self._pending.strip():
                    raise Reject(400, "incomplete request head")
                return None
            self._pending += data
        if end < 0 or end + 4 > MAX_HEAD:
            raise Reject(431, f"request head larger than {MAX_HEAD} bytes")
        head = bytes(self._pending[:end + 4])
        del self._pending[:end + 4]
        return head

    def _parse_body(self) -> bool:
        """Parse the body received so far into ``_ready``; True once it is complete."""
        while True:
            event = self._event()
            if isinstance(event, h11.Data):
                if not self._chunked:
                    self._ready.append(bytes(event.data))
                elif event.data:  # never an empty chunk: upstream, it would end the body
                    self._ready.append(b"%x\r\n%b\r\n" % (len(event.data), event.data))
            elif isinstance(event, h11.EndOfMessage):
                if self._chunked:  # the last chunk, with the trailer fields h11 read
                    self._ready.append(b"0\r\n" + b"".join(b"%b: %b\r\n" % (name, value) for name, value
                                                           in event.headers.raw_items()) + b"\r\n")
                self._pending = bytearray(self._parser.trailing_data[0])
                return True
            else:
                return False  # NEED_DATA: the rest of the body has not arrived

    def _event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            return self._parser.next_event()
        except h11.RemoteProtocolError as exc:
            # h11 ends some messages with the offending bytes (": b'...'", ": bytearray(...)"), which may
            # hold header values; a reason never does.
            reason = str(exc).split(": b", 1)[0]
            status = exc.error_status_hint if exc.error_status_hint in _H11_STATUS else 400
            raise Reject(status, f"{_H11_STATUS[status]}: {reason}") from exc


def _for_h11(head: bytes) -> bytes:
    """``head`` refused for what h11 would let through, and given the ``Host`` h11 insists on."""
    if head.count(b"\n") != head.count(b"\r\n"):
        raise Reject(400, "a line of the request head does not end in CRLF")
    if b"\r\n " in head or b"\r\n\t" in head:
        raise Reject(400, "obsolete line folding in the request head")
    if b"\r\nhost:" not in head.lower():
        head = head[:-2] + b"Host: \r\n\r\n"
    return head
