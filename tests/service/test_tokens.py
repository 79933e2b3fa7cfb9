"""Signed tokens (``service/tokens.py``): the one module the live view, terminals and preview URLs
check their tokens with; their keys come from the sealing key, which replicas share."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import AuthenticationError
from cove.service.tokens import Tokens
from cove.store.sealing import Sealer


def tokens(key_file: Path, purpose: str = "pty") -> Tokens:
    return Tokens(purpose, Sealer(key_file), 60, "refused", code="invalid_token")


def test_a_token_opens_its_subject_only_unexpired_and_only_under_its_key(tmp_path: Path) -> None:
    signer = tokens(tmp_path / "secrets.key")
    good = signer.make("alpha", "cntr_1")
    assert signer.project_of(good.token, "cntr_1") == "alpha"
    forged_payload = good.token.split(".")[0][:-2] + "AA." + good.token.split(".")[1]
    for token, subject in ((signer.make("alpha", "cntr_1", seconds=-1).token, "cntr_1"),  # expired
                           (good.token, "cntr_2"),  # another container's
                           (tokens(tmp_path / "other.key").make("alpha", "cntr_1").token, "cntr_1"),  # another key's
                           (forged_payload, "cntr_1"),
                           ("é.é", "cntr_1"), ("", "cntr_1"), ("...", "cntr_1")):
        with pytest.raises(AuthenticationError) as refused:
            signer.project_of(token, subject)
        assert refused.value.code == "invalid_token"


def test_servers_sharing_the_key_file_accept_each_others_tokens(tmp_path: Path) -> None:
    """Two replicas (or a server before and after a restart): each makes its own ``Sealer`` of the one
    key file, and what one signs the other opens."""
    first, second = tokens(tmp_path / "secrets.key"), tokens(tmp_path / "secrets.key")
    assert second.project_of(first.make("alpha", "cntr_1").token, "cntr_1") == "alpha"
    assert first.project_of(second.make("beta", "cntr_2").token, "cntr_2") == "beta"
    assert tokens(tmp_path / "secrets.key", "preview")._key != first._key  # each purpose its own key


def test_a_token_of_one_purpose_never_opens_another(tmp_path: Path) -> None:
    pty = tokens(tmp_path / "secrets.key", "pty")
    preview = tokens(tmp_path / "secrets.key", "preview")
    preview._key = pty._key  # even under one key, the purpose in the payload tells them apart
    with pytest.raises(AuthenticationError):
        preview.project_of(pty.make("alpha", "cntr_1").token, "cntr_1")
