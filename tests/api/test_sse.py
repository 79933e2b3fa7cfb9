"""The SSE encoding's fast path for long strings gives json's exact bytes."""

from __future__ import annotations

import json
import random

import pytest

from cove.api import sse

AWKWARD = 'ab "\\\n\r\t/\x00\x01\x08\x0c\x1f\x7f}{:,é\u2028あ'


@pytest.mark.parametrize("rare", ['"\\\n', '\n\r\t', AWKWARD])
def test_json_escaped_is_json_dumps_byte_for_byte(rare: str) -> None:
    """Mostly plain text with a character from ``rare`` now and then, at every density around the
    fast path's limit; whenever it takes the fast path it gives json's bytes."""
    rng = random.Random(rare)
    fast = 0
    for length in (0, 1, sse.LONG_TEXT - 1, sse.LONG_TEXT, 3 * sse.LONG_TEXT + 7, 200_000):
        for every in (8, 16, 32, 100, 10_000):
            text = "".join(rng.choice(rare) if rng.randrange(every) == 0 else rng.choice("abc {}:,")
                           for _ in range(length))
            escaped = sse.json_escaped(text)
            fast += escaped is not None
            assert escaped is None or b'"' + escaped + b'"' == json.dumps(text).encode()
    assert fast >= (0 if rare == AWKWARD else 6)


def test_long_ascii_text_sparse_in_escapes_takes_the_fast_path_and_the_rest_goes_to_json() -> None:
    for line in ("plain", f'a "quoted" C:\\dir\\ {"and more words " * 5}\n', f"log\t{'line ' * 10}\r\n"):
        text = line * sse.LONG_TEXT
        escaped = sse.json_escaped(text)
        assert escaped is not None and json.loads(b'"' + escaped + b'"') == text
    for text in ("x" * (sse.LONG_TEXT - 1), "é" * sse.LONG_TEXT, "bell\x07" * sse.LONG_TEXT, "1\n" * sse.LONG_TEXT,
                 'a"\\\t\n' * sse.LONG_TEXT):
        assert sse.json_escaped(text) is None
