"""OpenAI's V4A diffs (what the ``apply_patch`` tool carries), applied to files inside a container.

The matching rules follow ``agents/apply_diff.py`` (OpenAI's own client-side applier) so that a diff
a model would get applied by the SDK applies here the same way; the error messages are ours and say
enough (hunk, diff line, the closest region of the file) for the model to fix its diff and retry.

Line endings: an updated file keeps CRLF if it already contained any (the SDK's rule), otherwise LF;
a created file uses CRLF only if its diff did. Trailing newlines: updates keep the file's state
(the last line is only touched by a hunk that changes it); created files end with a newline, like
POSIX text files and Codex's applier (the SDK leaves it off; we think that is an oversight).
``create_file`` refuses an existing path, as the SDK's sandbox editor does. Files are replaced
atomically through the workspace (keeping their mode), so a symlink at the path itself is replaced
by a regular file, never written through.
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from cove.errors import CoveError
from cove.sandbox.base import normalize_path
from cove.tools.workspace import Workspace

MAX_FILE_BYTES = 10 * 1024 * 1024
_STOPS = ("*** End Patch", "*** Update File:", "*** Delete File:", "*** Add File:")
_EOF = "*** End of File"
_BOM = "\ufeff"


class PatchError(Exception):
    """A patch that could not be applied; ``message`` is meant for the model that wrote it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class _Hunk:
    number: int
    line: int  # 1-based line of the diff the hunk starts on
    context: list[str] = field(default_factory=list)  # the old lines: context and removed lines
    changes: list[tuple[int, int, list[str]]] = field(default_factory=list)  # (offset, removed, added)
    eof: bool = False


def _diff_lines(diff: str) -> list[str]:
    lines = [line.rstrip("\r") for line in diff.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def parse_create(diff: str) -> str:
    """The content of a new file from a ``create_file`` diff (every line prefixed with ``+``)."""
    newline = "\r\n" if "\r\n" in diff else "\n"
    out: list[str] = []
    for number, line in enumerate(_diff_lines(diff), 1):
        if line.startswith(_STOPS):
            break
        if not line.startswith("+"):
            raise PatchError(f"Line {number} of the diff is not valid: {line!r}. "
                             "Every line of a create_file diff must start with '+'.")
        out.append(line[1:])
    return newline.join(out) + newline if out else ""


def apply_update(text: str, diff: str) -> str:
    """``text`` with the hunks of an ``update_file`` diff applied."""
    newline = "\r\n" if "\r\n" in (text if "\n" in text else diff) else "\n"
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    cursor, previous = 0, 0
    for hunk, start in _locate(lines, _diff_lines(diff)):
        for offset, removed, added in hunk.changes:
            if start + offset < cursor:
                raise PatchError(f"Hunk {hunk.number} (diff line {hunk.line}) changes line {start + offset + 1}, "
                                 f"which hunk {previous} already changed; hunks must not overlap.")
            out += lines[cursor:start + offset] + added
            cursor = start + offset + removed
        previous = hunk.number
    return newline.join(out + lines[cursor:])


def _locate(lines: list[str], diff: list[str]) -> list[tuple[_Hunk, int]]:
    """Each hunk with the file line index its context starts at, in diff order."""
    located: list[tuple[_Hunk, int]] = []
    pos = cursor = 0
    while pos < len(diff) and not diff[pos].startswith((*_STOPS, _EOF)):
        number, start_line = len(located) + 1, pos + 1
        anchors: list[str] = []
        while pos < len(diff) and (diff[pos] == "@@" or diff[pos].startswith("@@ ")):
            if diff[pos][3:].strip():
                anchors.append(diff[pos][3:])
            pos += 1
        headers = pos - start_line + 1
        if headers == 0 and cursor != 0:
            raise PatchError(f"Line {pos + 1} of the diff is not valid: {diff[pos]!r}. "
                             f"Hunk {number} must start with an '@@' line.")
        for i, anchor in enumerate(anchors):
            cursor = _seek_anchor(lines, anchor, cursor, forward_only=i > 0, required=headers > 1,
                                  where=f"Hunk {number} (diff line {start_line})")
        hunk, pos = _read_hunk(diff, pos, number, start_line)
        start = _find(lines, hunk.context, cursor, hunk.eof)
        if start < 0:
            raise PatchError(_mismatch(lines, hunk, cursor))
        located.append((hunk, start))
        cursor = start + len(hunk.context)
    return located


def _seek_anchor(lines: list[str], anchor: str, cursor: int, *, forward_only: bool, required: bool,
                 where: str) -> int:
    """The SDK's anchor rule: stay put if the anchor occurs before the cursor, else jump past it."""
    for key in (_same, str.strip):
        target = key(anchor)
        if not forward_only and any(key(line) == target for line in lines[:cursor]):
            return cursor
        for i in range(cursor, len(lines)):
            if key(lines[i]) == target:
                return i + 1
    if required:
        near = _closest(lines, [anchor], cursor)
        raise PatchError(f"{where}: the '@@ {anchor}' line was not found in the file"
                         f"{f' after line {cursor}' if cursor else ''}.{near}")
    return cursor


def _read_hunk(diff: list[str], pos: int, number: int, start_line: int) -> tuple[_Hunk, int]:
    hunk, first = _Hunk(number, start_line), pos
    removed: list[str] = []
    added: list[str] = []

    def flush() -> None:
        if removed or added:
            hunk.changes.append((len(hunk.context) - len(removed), len(removed), list(added)))
            removed.clear()
            added.clear()

    while pos < len(diff):
        raw = diff[pos]
        if raw.startswith(("@@", *_STOPS, _EOF)) or raw == "***":
            break
        line = raw or " "
        if raw.startswith("***") or line[0] not in "+- ":
            raise PatchError(f"Line {pos + 1} of the diff is not valid: {raw!r}. In hunk {number}, every line must "
                             "start with ' ' (context), '-' (removed) or '+' (added); hunks start with '@@'.")
        pos += 1
        if line[0] == " ":
            flush()
        if line[0] == "+":
            added.append(line[1:])
            continue
        if line[0] == "-":
            removed.append(line[1:])
        hunk.context.append(line[1:])
    flush()
    if pos < len(diff) and diff[pos] == _EOF:
        hunk.eof = True
        pos += 1
    elif pos == first:
        raise PatchError(f"Hunk {number} (diff line {start_line}) has no lines"
                         f"{f'; line {pos + 1} is {diff[pos]!r}' if pos < len(diff) else ''}.")
    return hunk, pos


def _same(value: str) -> str:
    return value


def _find(lines: list[str], context: list[str], start: int, eof: bool) -> int:
    if eof:  # match at the very end first; "a\n".split("\n") has a phantom "" that is no line
        body = lines[:-1] if lines and lines[-1] == "" else lines
        at = _scan(body, context, max(0, len(body) - len(context)))
        return at if at >= 0 else _scan(body, context, min(start, len(body)))
    return _scan(lines, context, start)


def _scan(lines: list[str], context: list[str], start: int) -> int:
    """First match at or after ``start``: exact, then ignoring trailing, then all surrounding whitespace."""
    if not context:
        return start
    for key in (_same, str.rstrip, str.strip):
        wanted = [key(line) for line in context]
        for i in range(start, len(lines) - len(context) + 1):
            if all(key(lines[i + k]) == wanted[k] for k in range(len(context))):
                return i
    return -1


def _mismatch(lines: list[str], hunk: _Hunk, cursor: int) -> str:
    shown = "\n".join(f"  | {line}" for line in hunk.context[:20])
    where = " at its end" if hunk.eof else f" after line {cursor}" if cursor else ""
    message = (f"Hunk {hunk.number} (diff line {hunk.line}) did not apply: its context and '-' lines were not "
               f"found in the file{where}:\n{shown}")
    earlier = _scan(lines[:cursor + len(hunk.context)], hunk.context, 0) if cursor else -1
    if 0 <= earlier < cursor:
        return (f"{message}\nThey occur at line {earlier + 1}, before the end of the previous hunk (line {cursor}): "
                "hunks must follow the order of the file and must not overlap.")
    return message + _closest(lines, hunk.context, cursor)


def _closest(lines: list[str], context: list[str], cursor: int) -> str:
    """The region of the file most like ``context``, numbered, with differing lines marked."""
    index: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        if line.strip():
            index.setdefault(line.strip(), []).append(i)
    scores: dict[int, int] = {}
    for k, line in enumerate(context):
        for i in index.get(line.strip(), []) if line.strip() else []:
            scores[i - k] = scores.get(i - k, 0) + 1
    if not scores:
        probe = next((line.strip() for line in context if line.strip()), "")
        close = difflib.get_close_matches(probe, list(index), n=1, cutoff=0.6) if probe else []
        if not close:
            return "\nNo similar lines were found in the file."
        k = next(k for k, line in enumerate(context) if line.strip() == probe)
        scores = {i - k: 0 for i in index[close[0]]}
    best = max(scores, key=lambda s: (scores[s], -abs(s - cursor)))
    first, last = max(0, best), min(len(lines), best + len(context))
    rows = []
    for i in range(first, min(last, first + 20)):
        expected = context[i - best] if 0 <= i - best < len(context) else None
        mark = " " if expected is not None and expected.strip() == lines[i].strip() else "!"
        rows.append(f"{mark}{i + 1:6} | {lines[i]}")
    span = f"line {first + 1}" if last == first + 1 else f"lines {first + 1}-{last}"
    return f"\nThe closest region of the file is {span} (lines marked '!' differ):\n" + "\n".join(rows)


def container_path(path: object, workdir: str = "/") -> str:
    """An absolute, clean container path; relative paths are taken from ``workdir``."""
    if not isinstance(path, str) or not path.strip():
        raise PatchError("The operation has no path.")
    joined = posixpath.join(workdir, path)
    try:
        return str(normalize_path(posixpath.normpath("/" + joined.lstrip("/"))))
    except CoveError as exc:
        raise PatchError(exc.message) from exc


async def apply_operation(workspace: Workspace, operation: Mapping[str, object], workdir: str = "/") -> str:
    """Carries out one ``apply_patch_call`` operation; the result is the call output's text."""
    kind, path = operation.get("type"), container_path(operation.get("path"), workdir)
    try:
        if kind == "delete_file":
            entry = await workspace.stat(path)
            if entry is None or entry.is_dir:
                raise PatchError(f"Cannot delete {path}: {'it is a directory' if entry else 'no such file'}.")
            await workspace.delete(path)
            return f"Deleted {path}"
        diff = operation.get("diff")
        if kind not in ("create_file", "update_file"):
            raise PatchError(f"Unknown operation type {kind!r}; use create_file, update_file or delete_file.")
        if not isinstance(diff, str):
            raise PatchError(f"The {kind} operation for {path} has no diff.")
        if kind == "create_file":
            if await workspace.stat(path) is not None:
                raise PatchError(f"Cannot create {path}: it already exists. "
                                 "Use an update_file operation to change an existing file.")
            await workspace.write(path, parse_create(diff).encode())
            return f"Created {path}"
        if await workspace.stat(path) is None:
            raise PatchError(f"Cannot update {path}: no such file. Use a create_file operation to create it.")
        content = await workspace.read(path, MAX_FILE_BYTES)
        if b"\x00" in content.data:
            raise PatchError(f"Cannot update {path}: it is a binary file.")
        try:
            text = content.data.decode()
        except UnicodeDecodeError as exc:
            raise PatchError(f"Cannot update {path}: it is not UTF-8 text ({exc}).") from exc
        bom = _BOM if text.startswith(_BOM) else ""
        try:
            updated = apply_update(text.removeprefix(_BOM), diff)
        except PatchError as exc:
            raise PatchError(f"Could not update {path}. {exc.message}") from exc
        await workspace.write(path, (bom + updated).encode(), content.mode)
        return f"Updated {path}"
    except CoveError as exc:
        raise PatchError(f"Cannot apply the {kind} operation to {path}: {exc.message}") from exc
    except OSError as exc:
        raise PatchError(f"Cannot apply the {kind} operation to {path}: {exc.strerror or exc}.") from exc
    except UnicodeError as exc:  # a diff holding lone surrogates cannot be written as UTF-8
        raise PatchError(f"Cannot apply the {kind} operation to {path}: {exc}.") from exc
