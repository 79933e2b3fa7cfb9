"""The commands of Anthropic's text editor (``text_editor_20250429``) carried out on a container's files.

Results and error messages are those of Anthropic's reference implementation (``edit.py`` in the
computer-use demo of anthropic-quickstarts), since that is the behaviour Claude models expect,
including its quirks: ``str_replace`` and ``insert`` expand tabs in the whole file, line counts
include the empty "line" after a trailing newline, and ``create`` refuses to overwrite.

Where we differ, it is on purpose: files are reached only through the workspace (symlinks resolve
inside the container), a file with CRLF line endings keeps them when edited (the reference reads in
universal-newline mode and writes LF), ``create`` makes missing parent directories, files over
10 MiB are refused, and a relative path gets a useful suggestion (``/`` + path). Files are replaced
atomically (keeping their mode), so a symlink at the edited path is replaced, never written through.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from pathlib import PurePosixPath

from cove.errors import CoveError
from cove.sandbox.base import Entry, normalize_path
from cove.tools.v4a import MAX_FILE_BYTES
from cove.tools.workspace import Workspace

TOOL_NAME = "str_replace_based_edit_tool"
COMMANDS = ("view", "create", "str_replace", "insert")
SNIPPET_LINES = 4
MAX_RESPONSE_LEN = 16000
TRUNCATED_MESSAGE = (
    "<response clipped><NOTE>To save on context only part of this file has been shown to you. You should "
    "retry this tool after you have searched inside the file with `grep -n` in order to find the line numbers "
    "of what you are looking for.</NOTE>"
)


class EditorError(Exception):
    """A failed command; ``message`` is the tool result text (an error result)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def run_command(workspace: Workspace, command: Mapping[str, object]) -> str:
    """Runs one tool call's input (``command``, ``path``, ...) and returns the result text."""
    name, raw = command.get("command"), command.get("path")
    if not isinstance(raw, str) or not raw:
        raise EditorError(f"Parameter `path` is required for command: {name}")
    path, entry = await _validate(workspace, str(name), raw)
    if name == "view":
        return await _view(workspace, path, entry, command.get("view_range"))
    if name == "create":
        text = command.get("file_text")
        if not isinstance(text, str):
            raise EditorError("Parameter `file_text` is required for command: create")
        await _write(workspace, path, text, crlf=False, mode=None)
        return f"File created successfully at: {path}"
    if name == "str_replace":
        old, new = command.get("old_str"), command.get("new_str")
        if not isinstance(old, str):
            raise EditorError("Parameter `old_str` is required for command: str_replace")
        return await _str_replace(workspace, path, old, new if isinstance(new, str) else "")
    if name == "insert":
        line, new = command.get("insert_line"), command.get("new_str")
        if line is None:
            raise EditorError("Parameter `insert_line` is required for command: insert")
        if not isinstance(new, str):
            raise EditorError("Parameter `new_str` is required for command: insert")
        return await _insert(workspace, path, line, new)
    raise EditorError(f"Unrecognized command {name}. The allowed commands for the {TOOL_NAME} tool are: "
                      f"{', '.join(COMMANDS)}")


async def _validate(workspace: Workspace, command: str, raw: str) -> tuple[str, Entry | None]:
    if not raw.startswith("/"):
        shown = PurePosixPath(raw)
        raise EditorError(f"The path {shown} is not an absolute path, it should start with `/`. "
                          f"Maybe you meant {'/' / shown}?")
    try:
        path = str(normalize_path(posixpath.normpath("/" + raw.lstrip("/"))))
        entry = await workspace.stat(path)
    except CoveError as exc:
        raise EditorError(exc.message) from exc
    except OSError as exc:
        raise EditorError(f"Ran into {exc} while trying to access {raw}") from exc
    if entry is None and command != "create":
        raise EditorError(f"The path {path} does not exist. Please provide a valid path.")
    if entry is not None and command == "create":
        raise EditorError(f"File already exists at: {path}. Cannot overwrite files using command `create`.")
    if entry is not None and entry.is_dir and command != "view":
        raise EditorError(f"The path {path} is a directory and only the `view` command can be used on directories")
    return path, entry


async def _view(workspace: Workspace, path: str, entry: Entry | None, view_range: object) -> str:
    if entry is not None and entry.is_dir:
        if view_range:
            raise EditorError("The `view_range` parameter is not allowed when `path` points to a directory.")
        return await _list(workspace, path)
    content, _crlf, _mode = await _read(workspace, path)
    first = 1
    if view_range:
        if not isinstance(view_range, list | tuple) or len(view_range) != 2 or \
                not all(type(i) is int for i in view_range):
            raise EditorError("Invalid `view_range`. It should be a list of two integers.")
        lines = content.split("\n")
        first, last = view_range
        shown = list(view_range)
        if first < 1 or first > len(lines):
            raise EditorError(f"Invalid `view_range`: {shown}. Its first element `{first}` should be within the "
                              f"range of lines of the file: {[1, len(lines)]}")
        if last > len(lines):
            raise EditorError(f"Invalid `view_range`: {shown}. Its second element `{last}` should be smaller than "
                              f"the number of lines in the file: `{len(lines)}`")
        if last != -1 and last < first:
            raise EditorError(f"Invalid `view_range`: {shown}. Its second element `{last}` should be larger or "
                              f"equal than its first `{first}`")
        content = "\n".join(lines[first - 1:] if last == -1 else lines[first - 1:last])
    return _numbered(content, path, first)


async def _list(workspace: Workspace, path: str) -> str:
    """What ``find {path} -maxdepth 2 -not -path '*/\\.*'`` prints, in name order."""
    try:
        entries = await workspace.list_dir(path, depth=2)
    except (CoveError, OSError) as exc:
        raise EditorError(f"find: '{path}': {getattr(exc, 'message', None) or exc}") from exc
    found = [p for p in (path, *(e.path for e in entries)) if "/." not in p]
    listing = _truncate("".join(f"{p}\n" for p in found))
    return f"Here's the files and directories up to 2 levels deep in {path}, excluding hidden items:\n{listing}\n"


async def _str_replace(workspace: Workspace, path: str, old: str, new: str) -> str:
    text, crlf, mode = await _read(workspace, path)
    content, old, new = text.expandtabs(), old.expandtabs(), new.expandtabs()
    occurrences = content.count(old)
    if occurrences == 0:
        raise EditorError(f"No replacement was performed, old_str `{old}` did not appear verbatim in {path}.")
    if occurrences > 1:
        lines = [i + 1 for i, line in enumerate(content.split("\n")) if old in line]
        raise EditorError(f"No replacement was performed. Multiple occurrences of old_str `{old}` in lines "
                          f"{lines}. Please ensure it is unique")
    updated = content.replace(old, new)
    await _write(workspace, path, updated, crlf=crlf, mode=mode)
    at = content.split(old)[0].count("\n") if old else 0  # "" is unique only in an empty file
    start, end = max(0, at - SNIPPET_LINES), at + SNIPPET_LINES + new.count("\n")
    snippet = "\n".join(updated.split("\n")[start:end + 1])
    return (f"The file {path} has been edited. " + _numbered(snippet, f"a snippet of {path}", start + 1)
            + "Review the changes and make sure they are as expected. Edit the file again if necessary.")


async def _insert(workspace: Workspace, path: str, line: object, new: str) -> str:
    text, crlf, mode = await _read(workspace, path)
    lines, added = text.expandtabs().split("\n"), new.expandtabs().split("\n")
    if type(line) is not int or line < 0 or line > len(lines):
        raise EditorError(f"Invalid `insert_line` parameter: {line}. It should be within the range of lines of "
                          f"the file: {[0, len(lines)]}")
    await _write(workspace, path, "\n".join(lines[:line] + added + lines[line:]), crlf=crlf, mode=mode)
    snippet = lines[max(0, line - SNIPPET_LINES):line] + added + lines[line:line + SNIPPET_LINES]
    return (f"The file {path} has been edited. "
            + _numbered("\n".join(snippet), "a snippet of the edited file", max(1, line - SNIPPET_LINES + 1))
            + "Review the changes and make sure they are as expected (correct indentation, no duplicate lines, "
            "etc). Edit the file again if necessary.")


async def _read(workspace: Workspace, path: str) -> tuple[str, bool, int]:
    """Text with universal newlines (as Python's ``read_text``), whether it had CRLF, and its mode."""
    try:
        content = await workspace.read(path, MAX_FILE_BYTES)
        text = content.data.decode()
    except CoveError as exc:
        raise EditorError(f"Ran into {exc.message.rstrip('.')} while trying to read {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EditorError(f"Ran into {exc} while trying to read {path}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n"), "\r\n" in text, content.mode


async def _write(workspace: Workspace, path: str, text: str, *, crlf: bool, mode: int | None) -> None:
    if crlf:
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    try:
        await workspace.write(path, text.encode(), mode)
    except CoveError as exc:
        raise EditorError(f"Ran into {exc.message.rstrip('.')} while trying to write to {path}") from None
    except (OSError, UnicodeEncodeError) as exc:
        raise EditorError(f"Ran into {exc} while trying to write to {path}") from None


def _truncate(content: str) -> str:
    return content if len(content) <= MAX_RESPONSE_LEN else content[:MAX_RESPONSE_LEN] + TRUNCATED_MESSAGE


def _numbered(content: str, descriptor: str, first: int) -> str:
    """``cat -n`` style: 6-wide right-aligned number, a tab, the line (tabs expanded)."""
    lines = _truncate(content).expandtabs().split("\n")
    body = "\n".join(f"{i + first:6}\t{line}" for i, line in enumerate(lines))
    return f"Here's the result of running `cat -n` on {descriptor}:\n{body}\n"
