"""Signed tokens (``service/tokens.py``): the one module the live view, terminals and preview URLs
check their tokens with."""

from __future__ import annotations

import pytest

from cove.errors import AuthenticationError
from cove.service.tokens import Tokens


def tokens(purpose: str = "pty") -> Tokens:
    return Tokens(purpose, 60, "refused", code="invalid_token")


def test_a_token_opens_its_subject_only_unexpired_and_only_on_its_server() -> None:
    signer = tokens()
    good = signer.make("alpha", "cntr_1")
    assert signer.project_of(good.token, "cntr_1") == "alpha"
    forged_payload = good.token.split(".")[0][:-2] + "AA." + good.token.split(".")[1]
    for token, subject in ((signer.make("alpha", "cntr_1", seconds=-1).token, "cntr_1"),  # expired
                           (good.token, "cntr_2"),  # another container's
                           (tokens().make("alpha", "cntr_1").token, "cntr_1"),  # another server's
                           (forged_payload, "cntr_1"),
                           ("é.é", "cntr_1"), ("", "cntr_1"), ("...", "cntr_1")):
        with pytest.raises(AuthenticationError) as refused:
            signer.project_of(token, subject)
        assert refused.value.code == "invalid_token"


def test_a_token_of_one_purpose_never_opens_another() -> None:
    pty = tokens("pty")
    preview = tokens("preview")
    preview._key = pty._key  # even under one key, the purpose in the payload tells them apart
    with pytest.raises(AuthenticationError):
        preview.project_of(pty.make("alpha", "cntr_1").token, "cntr_1")
