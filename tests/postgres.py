"""A throwaway PostgreSQL server for the test session (installed by ``make test`` with apt)."""

from __future__ import annotations

import glob
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.polling import eventually


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `make test` installs it (apt package postgresql)")
    return Path(found[-1]).parent


class PostgresServer:
    """``initdb`` into a temp dir, ``postgres`` on a free loopback port, one database per caller."""

    def __init__(self) -> None:
        self.bin = _bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="cove-pg-", dir="/var/tmp"))
        shutil.chown(self.dir, "postgres", "postgres")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    def _as_postgres(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args]

    def start(self) -> PostgresServer:
        data = self.dir / "data"
        subprocess.run(self._as_postgres(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"),
                       check=True, capture_output=True)
        with (self.dir / "log").open("wb") as log:
            self.proc = subprocess.Popen(
                self._as_postgres(str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port), "-k",
                                  str(self.dir), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
                                  "-c", "fsync=off"),
                stdout=subprocess.DEVNULL, stderr=log)
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not start: {(self.dir / 'log').read_text()[-2000:]}")
            return subprocess.run(self._as_postgres(str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p",
                                                    str(self.port)), capture_output=True).returncode == 0

        eventually(ready, timeout=30, what="PostgreSQL to accept connections")
        return self

    def new_database(self) -> str:
        """A fresh database; returns its SQLAlchemy async URL."""
        name = f"cove_{secrets.token_hex(4)}"
        subprocess.run(self._as_postgres(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                                         "postgres", "-c", f"CREATE DATABASE {name}"), check=True, capture_output=True)
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def sql(self, query: str, database: str = "postgres") -> list[str]:
        """``query``'s rows through ``psql`` (unaligned, one line each), as the superuser."""
        out = subprocess.run(self._as_postgres(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                                               "postgres", "-d", database, "-Atc", query),
                             check=True, capture_output=True, text=True).stdout
        return out.splitlines()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
