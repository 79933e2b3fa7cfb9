"""One stand-in internet host, run inside a network namespace the tests made (see tests/internet.py).

Serves ``--root`` over HTTP on port 80 and HTTPS on port 443 (static files: a package index, a git
repository), answers ``/echo`` with the request it received as JSON, and appends every request it
gets to ``--log`` as a JSON line, so tests can see exactly what reached "the internet".
"""

from __future__ import annotations

import argparse
import functools
import json
import ssl
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_log_lock = threading.Lock()


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_path: Path

    def _record(self) -> dict[str, object]:
        entry: dict[str, object] = {"scheme": "https" if isinstance(self.connection, ssl.SSLSocket) else "http",
                 "method": self.command, "path": self.path, "headers": [list(h) for h in self.headers.items()]}
        with _log_lock, self.log_path.open("a") as log:
            log.write(json.dumps(entry) + "\n")
        return entry

    def do_GET(self) -> None:
        entry = self._record()
        if self.path.startswith("/echo"):
            body = json.dumps(entry).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def do_HEAD(self) -> None:
        self._record()
        super().do_HEAD()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    Handler.log_path = args.log
    handler = functools.partial(Handler, directory=str(args.root))
    plain = ThreadingHTTPServer(("0.0.0.0", 80), handler)
    secure = ThreadingHTTPServer(("0.0.0.0", 443), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    print("ready", flush=True)
    secure.serve_forever()


if __name__ == "__main__":
    main()
