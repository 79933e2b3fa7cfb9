"""Sealing for values the store must keep but never show: domain secrets.

A container's secrets have to outlive a restart (the proxy needs them whenever it starts again)
and a background response's have to wait in the queue, so they are stored; sealed with a key kept
outside the database (Fernet: AES-128-CBC with HMAC-SHA256), a copy or backup of the database holds
none of them in the clear.

Each value is sealed for one purpose (``container:<id>``, ``response:<id>``) and opens only for
that purpose, so a sealed value lifted from one row (or one tenant) opens nowhere else. Values
sealed before purposes existed open for any purpose: they can only come from the server's own
rows, since every API input refuses a sealed value.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED_PREFIX = "cove-sealed:"


class SealingError(Exception):
    """A sealed value could not be opened: another install's key, another purpose, or damaged data."""


class Sealer:
    def __init__(self, key_file: Path) -> None:
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            # Written whole beside it, then linked into place: a server sharing the directory that
            # starts at the same moment sees either no key file or a complete one, never an empty one.
            fd, draft = tempfile.mkstemp(dir=key_file.parent, prefix=".key-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(Fernet.generate_key())
                with contextlib.suppress(FileExistsError):  # another server made it first: theirs holds
                    os.link(draft, key_file)
            finally:
                os.unlink(draft)
        self._key = key_file.read_bytes().strip()
        self._fernet = Fernet(self._key)

    def derive_key(self, label: str) -> bytes:
        """A 32-byte key for ``label`` (HKDF-SHA256 of the sealing key): what servers sharing the key
        file sign with agree, and no derived key tells anything of the sealing key or of another."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"cove:{label}".encode()).derive(self._key)

    def seal(self, text: str, purpose: str) -> str:
        payload = json.dumps({"for": purpose, "value": text})
        return SEALED_PREFIX + self._fernet.encrypt(payload.encode()).decode("ascii")

    def open(self, sealed: str, purpose: str) -> str:
        if not sealed.startswith(SEALED_PREFIX):
            raise SealingError("not a sealed value")
        try:
            plain = self._fernet.decrypt(sealed[len(SEALED_PREFIX):].encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise SealingError("a sealed value cannot be opened with this server's key") from exc
        try:
            payload = json.loads(plain)
        except ValueError:
            return plain  # sealed before purposes (a plain string)
        if not isinstance(payload, dict) or "for" not in payload:
            return plain  # sealed before purposes (a container's JSON list)
        if payload["for"] != purpose:
            raise SealingError("a sealed value was sealed for something else")
        return str(payload["value"])


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)
