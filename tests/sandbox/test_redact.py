"""Secret values are replaced by their placeholders in command output, whole or streamed in any split."""

from __future__ import annotations

import random

from cove.sandbox.base import CommandOutput, ExitOutcome
from cove.sandbox.redact import Redactor

SECRETS = {"sk-live-0123456789": "cove_secret_aaaa", "tok": "cove_secret_bbbb"}


def test_whole_output_is_redacted() -> None:
    output = CommandOutput(stdout="a sk-live-0123456789 b tok", stderr="tok!", outcome=ExitOutcome(exit_code=0))
    redacted = Redactor(SECRETS).output(output)
    assert redacted.stdout == "a cove_secret_aaaa b cove_secret_bbbb"
    assert redacted.stderr == "cove_secret_bbbb!"


def test_streamed_output_is_redacted_however_it_is_split() -> None:
    text = "start sk-live-0123456789 middle tok sk-live-012345678 tail sk-live-0123456789"
    expected = Redactor(SECRETS).text(text)
    assert "sk-live-0123456789" not in expected and "sk-live-012345678 " in expected
    rng = random.Random(7)
    for _ in range(500):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, 12)))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        redactor = Redactor(SECRETS)
        seen: list[tuple[str, str]] = []

        def collect(stream: str, chunk: str, seen: list[tuple[str, str]] = seen) -> None:
            seen.append((stream, chunk))
        callback = redactor.stream(collect)
        for chunk in chunks:
            callback("stdout", chunk)
            callback("stderr", chunk.upper())
        redactor.flush(collect)
        assert "".join(c for s, c in seen if s == "stdout") == expected
        assert "".join(c for s, c in seen if s == "stderr") == text.upper()  # no secret in upper case
        assert all(chunk for _, chunk in seen)
