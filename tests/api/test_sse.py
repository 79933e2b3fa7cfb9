"""The SSE encoding's fast path for long strings gives json's exact bytes."""

from __future__ import annotations

import json
import random

import pytest

from cove.api import sse

AWKWARD = 'ab "\\\n\r\t/\x00\x01\x08\x0c\x1f\x7f}{:,é\u2028あ'


@pytest.mark.parametrize("alphabet", ["a", 'ab "\\\n\r\t/{}', AWKWARD])
def test_json_string_is_json_dumps_byte_for_byte(alphabet: str) -> None:
    rng = random.Random(alphabet)
    for length in (0, 1, sse.LONG_TEXT - 1, sse.LONG_TEXT, 3 * sse.LONG_TEXT + 7, 200_000):
        for _ in range(5):
            text = "".join(rng.choice(alphabet) for _ in range(length))
            assert sse.json_string(text) == json.dumps(text).encode()


def test_each_escape_is_applied_once_in_long_text() -> None:
    text = ('\\"\\n\n\t\r"' * sse.LONG_TEXT)
    assert json.loads(sse.json_string(text)) == text
