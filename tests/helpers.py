"""Small helpers shared by the API tests."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import zipfile
from pathlib import Path
from typing import Any

import httpx
from pypdf import PdfWriter
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.uri import parse_uri


def run(http: httpx.Client, container_id: str, *commands: str, **options: object) -> list[dict[str, object]]:
    """Runs commands through the exec extension; returns the output entries."""
    response = http.post(f"/v1/containers/{container_id}/exec", json={"commands": list(commands), **options})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "container.exec"
    return list(body["output"])


def running_commands(commands: list[str]) -> set[str]:
    """Which of ``commands`` some host process runs (container processes included)."""
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:  # it ended while we looked
                continue
    return {command for command in commands if any(f"{command} " in line or line.endswith(command)
                                                   for line in lines)}


def stream_response(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Creates a response with ``stream: true`` and returns its events (without ``[DONE]``)."""
    events = []
    with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    return events


def make_wheel(name: str, version: str) -> tuple[str, bytes]:
    """A minimal pure-Python wheel, so ``pip install`` works with no network."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {version!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: cove-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return f"{name}-{version}-py3-none-any.whl", buf.getvalue()


def greet_skill() -> dict[str, Any]:
    """An inline skill, as the ``openai`` SDK's ``inline_skill`` types it: ``greet``, whose ``hello.sh``
    prints ``hello from a skill``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("greet/SKILL.md", "---\nname: greet\ndescription: Says hello.\n---\nRun hello.sh\n")
        archive.writestr("greet/hello.sh", "#!/bin/sh\necho hello from a skill\n")
    data = base64.b64encode(out.getvalue()).decode()
    return {"type": "inline", "name": "greet", "description": "Says hello.",
            "source": {"type": "base64", "media_type": "application/zip", "data": data}}


def pdf_bytes(text: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica, written out by hand (pypdf does not lay out text)."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def encrypted(pdf: bytes) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(pdf))
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


class IdleWebSocket:
    """A WebSocket client that reads only when told to (websockets' sans-I/O protocol over a plain
    socket with a small receive buffer): the SDK's and websockets' own clients read on in a thread."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        uri = parse_uri(url)
        self.protocol = ClientProtocol(uri, max_size=None)
        self.sock = socket.create_connection((uri.host, uri.port))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        request = self.protocol.connect()
        for name, value in headers.items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self._flush()
        self.pending: list[Any] = []
        assert self._next() is not None  # the handshake's response

    def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.protocol.send_text(message.encode())
        else:
            self.protocol.send_binary(message)
        self._flush()

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            self.sock.sendall(data)

    def _next(self) -> Any:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                self.protocol.receive_eof()
                return None
            self.protocol.receive_data(data)
            self.pending.extend(self.protocol.events_received())
        return self.pending.pop(0)

    def frame(self) -> Frame | None:
        event = self._next()
        assert event is None or isinstance(event, Frame)
        return event

    def close_code(self, timeout: float = 60) -> int | None:
        """Reads everything the server sent up to its close frame; that frame's code (None if the
        connection ended without one)."""
        self.sock.settimeout(timeout)
        while (frame := self.frame()) is not None:
            if frame.opcode is Opcode.CLOSE:
                return Close.parse(frame.data).code
        return None

    def recv(self, timeout: float) -> bytes:
        """The next data frame's payload (the shape of websockets' ``recv`` that ``Rfb`` reads with)."""
        self.sock.settimeout(timeout)
        frame = self.frame()
        assert frame is not None
        return bytes(frame.data)
