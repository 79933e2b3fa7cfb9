"""A compaction item's ``encrypted_content`` opens only as the summary it was sealed as, for its project."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cove.errors import InvalidRequest
from cove.service.compaction import CompactionSeal
from cove.store.sealing import SEALED_PREFIX, Sealer


def test_a_summary_opens_for_its_project_only(tmp_path: Path) -> None:
    sealer = Sealer(tmp_path / "key")
    alpha, beta = CompactionSeal(sealer, "alpha"), CompactionSeal(sealer, "beta")
    sealed = alpha.seal("the plan")
    assert "the plan" not in sealed
    assert alpha.open({"encrypted_content": sealed}, "input[0].encrypted_content") == "the plan"
    with pytest.raises(InvalidRequest) as refused:
        beta.open({"encrypted_content": sealed}, "input[3].encrypted_content")
    assert refused.value.param == "input[3].encrypted_content"


@pytest.mark.parametrize("value", ["plain text", SEALED_PREFIX + "damaged"])
def test_made_up_values_are_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(InvalidRequest):
        CompactionSeal(Sealer(tmp_path / "key"), "alpha").open({"encrypted_content": value}, "input[0]")


def test_other_sealed_values_never_open_as_a_summary(tmp_path: Path) -> None:
    """A domain secret sealed for a response, or one sealed before purposes existed (which opens for any
    purpose), lifted from a copy of the database, must not come back to the model as a summary."""
    sealer = Sealer(tmp_path / "key")
    seal = CompactionSeal(sealer, "alpha")
    for lifted in (sealer.seal("sk-domain-secret", "response:resp_1"),
                   SEALED_PREFIX + sealer._fernet.encrypt(b"sk-domain-secret").decode("ascii")):
        with pytest.raises(InvalidRequest):
            seal.open({"encrypted_content": lifted}, "input[0].encrypted_content")


def test_a_window_without_compaction_is_left_as_it_is(tmp_path: Path) -> None:
    seal = CompactionSeal(Sealer(tmp_path / "key"), "alpha")
    earlier = [{"type": "message", "role": "user", "content": "a", "id": "u1"}]
    new = [{"type": "message", "role": "assistant", "content": "b", "id": "m1"}]
    assert asyncio.run(seal.window(earlier, new, "previous_response_id")) == ([*earlier, *new], None)
