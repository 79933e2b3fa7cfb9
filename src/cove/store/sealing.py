"""Sealing for values the store must keep but never show: domain secrets.

A container's secrets have to outlive a restart (the proxy needs them whenever it starts again)
and a background response's have to wait in the queue, so they are stored; sealed with a key kept
outside the database (Fernet: AES-128-CBC with HMAC-SHA256), a copy or backup of the database holds
none of them in the clear.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

SEALED_PREFIX = "cove-sealed:"


class SealingError(Exception):
    """A sealed value could not be opened: another install's key, or damaged data."""


class Sealer:
    def __init__(self, key_file: Path) -> None:
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another server sharing the directory made it first
            else:
                with os.fdopen(fd, "wb") as out:
                    out.write(Fernet.generate_key())
        self._fernet = Fernet(key_file.read_bytes().strip())

    def seal(self, text: str) -> str:
        return SEALED_PREFIX + self._fernet.encrypt(text.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        if not sealed.startswith(SEALED_PREFIX):
            raise SealingError("not a sealed value")
        try:
            return self._fernet.decrypt(sealed[len(SEALED_PREFIX):].encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise SealingError("a sealed value cannot be opened with this server's key") from exc
