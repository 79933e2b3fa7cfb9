"""Short-lived signed tokens that stand in for the API key where a key cannot or must not go.

A browser cannot put a key on a WebSocket handshake, and a key must never be put in a URL (it ends in
histories, logs and ``Referer`` headers). Instead the holder of the key asks for a token naming the
project, what it opens (a container, or a container's port) and an expiry, signed by the server: the
live view (``service/displays.py``), terminals (``service/terminals.py``) and preview URLs
(``service/previews.py``) all check theirs here. Each purpose has its own key and its name in the
payload, so a token made for one never opens another.

The keys are derived from the sealing key (``store/sealing.py``), which replicas share: a token minted
by one replica opens on another, and after a restart (they last minutes to days; a preview URL may be
handed on). Replacing the key file voids them all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from cove.errors import AuthenticationError
from cove.store.sealing import Sealer


@dataclass(frozen=True)
class SignedToken:
    token: str
    expires_at: int


class Tokens:
    """Signs and checks the tokens of one purpose: ``payload.signature``, the payload naming purpose,
    project, subject and expiry, the signature an HMAC-SHA256 of it."""

    def __init__(self, purpose: str, sealer: Sealer, seconds: int, refusal: str, code: str) -> None:
        self.purpose = purpose
        self.seconds = seconds
        self._refusal = refusal
        self._code = code
        self._key = sealer.derive_key(f"tokens:{purpose}")

    def make(self, project: str, subject: str, seconds: int | None = None) -> SignedToken:
        expires_at = int(time.time()) + (self.seconds if seconds is None else seconds)
        # A nonce makes every token its own: one handed to a page is told apart from one made for it.
        payload = _b64(json.dumps([self.purpose, project, subject, expires_at, secrets.token_hex(8)],
                                  separators=(",", ":")).encode())
        return SignedToken(f"{payload}.{self._sign(payload)}", expires_at)

    def project_of(self, token: str, subject: str) -> str:
        """The project a token was made for, if it is this server's, of this purpose, unexpired and for
        ``subject``; else a 401 that does not say which check failed."""
        payload, _, signature = token.partition(".")
        if hmac.compare_digest(self._sign(payload).encode(), signature.encode(errors="replace")):
            try:
                purpose, project, made_for, expires_at, _nonce = json.loads(_unb64(payload))
            except (ValueError, binascii.Error, TypeError):
                pass
            else:
                if (purpose == self.purpose and made_for == subject and isinstance(expires_at, int)
                        and time.time() < expires_at):
                    return str(project)
        raise AuthenticationError(self._refusal, code=self._code)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(errors="replace"), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
