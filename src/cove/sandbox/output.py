"""Bounded capture of command output: the head and the tail are kept, the middle is cut.

A command may print gigabytes; Cove keeps at most ``limit`` characters of each end of each stream
in memory and, when the output is too long, replaces the middle with a marker that says how much
was cut, as OpenAI's shell tool does.
"""

from __future__ import annotations

import codecs
from collections import deque


def marker(cut: int) -> str:
    return f"\n[... {cut} characters truncated ...]\n"


class CappedText:
    """Incrementally decoded UTF-8 text that remembers only its first and last ``limit`` characters."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._head: list[str] = []
        self._head_len = 0
        self._tail: deque[str] = deque()
        self._tail_len = 0

    def feed(self, data: bytes, *, final: bool = False) -> str:
        """Add raw bytes; returns the newly decoded text (for streaming)."""
        text = self._decoder.decode(data, final)
        if not text:
            return text
        self.total += len(text)
        room = self.limit - self._head_len
        if room > 0:
            self._head.append(text[:room])
            self._head_len += min(room, len(text))
            text_rest = text[room:]
        else:
            text_rest = text
        if text_rest:
            self._tail.append(text_rest)
            self._tail_len += len(text_rest)
            while self._tail_len - len(self._tail[0]) >= self.limit:
                self._tail_len -= len(self._tail.popleft())
        return text

    def render(self, budget: int) -> str:
        """The text cut to at most ``budget`` characters (plus the marker) by dropping the middle."""
        head = "".join(self._head)
        tail = "".join(self._tail)
        if self.total <= budget:
            return head + tail
        keep_head = budget // 2
        keep_tail = budget - keep_head
        if self.total <= 2 * self.limit:
            # Nothing was dropped yet: the whole text is still here.
            whole = head + tail
            end = whole[len(whole) - keep_tail:] if keep_tail else ""
            return whole[:keep_head] + marker(self.total - budget) + end
        end = tail[len(tail) - keep_tail:] if keep_tail else ""
        return head[:keep_head] + marker(self.total - budget) + end


def split_budget(lengths: tuple[int, int], limit: int) -> tuple[int, int]:
    """Share ``limit`` characters between stdout and stderr; a short stream gives its rest away."""
    out, err = lengths
    if out + err <= limit:
        return out, err
    half = limit // 2
    if out <= half:
        return out, limit - out
    if err <= half:
        return limit - err, err
    return half, limit - half
