"""The text editor tool (Anthropic's text_editor_20250429) on a real directory standing in for a container root.

Expected strings are written out by hand from Anthropic's reference implementation.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from cove.sandbox.linux.fs import ContainerFS
from cove.tools.editor_commands import EditorError, run_command
from cove.tools.workspace import Workspace

REVIEW = "Review the changes and make sure they are as expected. Edit the file again if necessary."
REVIEW_INSERT = ("Review the changes and make sure they are as expected (correct indentation, no duplicate lines, "
                 "etc). Edit the file again if necessary.")


@pytest.fixture
def fresh_script() -> None:
    """Shadows the package conftest's autouse fixture: these tests need no server or upstream."""




def run(workspace: Workspace, **command: object) -> str:
    return asyncio.run(run_command(workspace, command))


def error(workspace: Workspace, **command: object) -> str:
    with pytest.raises(EditorError) as info:
        run(workspace, **command)
    return info.value.message


# --- view -------------------------------------------------------------------------------------

def test_view_numbers_lines_like_cat_n(workspace: Workspace, root: Path) -> None:
    (root / "app/x.py").write_text("def f():\n\treturn 1\n")
    assert run(workspace, command="view", path="/app/x.py") == (
        "Here's the result of running `cat -n` on /app/x.py:\n"
        "     1\tdef f():\n"
        "     2\t        return 1\n"  # tabs are expanded
        "     3\t\n"  # the reference counts the empty "line" after the final newline
    )


@pytest.mark.parametrize(("view_range", "numbers"), [([2, 3], [2, 3]), ([3, -1], [3, 4, 5]), ([5, 5], [5])])
def test_view_range(workspace: Workspace, root: Path, view_range: list[int], numbers: list[int]) -> None:
    texts = {1: "l1", 2: "l2", 3: "l3", 4: "l4", 5: ""}
    (root / "app/x.txt").write_text("l1\nl2\nl3\nl4\n")
    body = "".join(f"{n:6}\t{texts[n]}\n" for n in numbers)
    assert run(workspace, command="view", path="/app/x.txt", view_range=view_range) == (
        f"Here's the result of running `cat -n` on /app/x.txt:\n{body}")


@pytest.mark.parametrize(("view_range", "message"), [
    ([0, 2], "Invalid `view_range`: [0, 2]. Its first element `0` should be within the range of lines of the file: "
             "[1, 4]"),
    ([5, 5], "Invalid `view_range`: [5, 5]. Its first element `5` should be within the range of lines of the file: "
             "[1, 4]"),
    ([1, 5], "Invalid `view_range`: [1, 5]. Its second element `5` should be smaller than the number of lines in "
             "the file: `4`"),
    ([3, 2], "Invalid `view_range`: [3, 2]. Its second element `2` should be larger or equal than its first `3`"),
    ([1], "Invalid `view_range`. It should be a list of two integers."),
    (["1", "2"], "Invalid `view_range`. It should be a list of two integers."),
])
def test_invalid_view_ranges(workspace: Workspace, root: Path, view_range: list[object], message: str) -> None:
    (root / "app/x.txt").write_text("a\nb\nc\n")
    assert error(workspace, command="view", path="/app/x.txt", view_range=view_range) == message


def test_view_truncates_long_files(workspace: Workspace, root: Path) -> None:
    (root / "app/long.txt").write_text("x" * 20000)
    assert run(workspace, command="view", path="/app/long.txt") == (
        "Here's the result of running `cat -n` on /app/long.txt:\n     1\t" + "x" * 16000
        + "<response clipped><NOTE>To save on context only part of this file has been shown to you. You should retry "
        "this tool after you have searched inside the file with `grep -n` in order to find the line numbers of what "
        "you are looking for.</NOTE>\n")


def test_view_directory_lists_two_levels_without_hidden_items(workspace: Workspace, root: Path, tmp_path: Path) -> None:
    for name in ("app/b.txt", "app/a.py", "app/pkg/__init__.py", "app/pkg/sub/deep.py", "app/.git/config",
                 "app/pkg/.env"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    (tmp_path / "hostdir").mkdir()
    (tmp_path / "hostdir/secret.txt").write_text("")
    (root / "app/hostlink").symlink_to(tmp_path / "hostdir")  # listed, never followed
    assert run(workspace, command="view", path="/app/") == (
        "Here's the files and directories up to 2 levels deep in /app, excluding hidden items:\n"
        "/app\n/app/a.py\n/app/b.txt\n/app/hostlink\n/app/pkg\n/app/pkg/__init__.py\n/app/pkg/sub\n\n"
    )


def test_view_range_is_not_allowed_on_a_directory(workspace: Workspace) -> None:
    assert error(workspace, command="view", path="/app", view_range=[1, 2]) == (
        "The `view_range` parameter is not allowed when `path` points to a directory.")


def test_list_dir_goes_depth_first_by_name_and_does_not_follow_symlinks(fs: ContainerFS, root: Path) -> None:
    (root / "app/z/y").mkdir(parents=True)
    (root / "app/z/y/deep").write_text("")
    (root / "app/a").write_text("12345")
    (root / "app/link").symlink_to("/app/z")
    entries = fs.list_dir("/app", depth=3)
    assert [(e.path, e.is_dir) for e in entries] == [
        ("/app/a", False), ("/app/link", False), ("/app/z", True), ("/app/z/y", True), ("/app/z/y/deep", False)]
    assert entries[0].size == 5
    assert [e.path for e in fs.list_dir("/app")] == ["/app/a", "/app/link", "/app/z"]


# --- create -----------------------------------------------------------------------------------

def test_create_writes_file_text_verbatim_and_makes_parents(workspace: Workspace, root: Path) -> None:
    assert run(workspace, command="create", path="/app/new/dir/f.txt", file_text="no newline\tat end") == (
        "File created successfully at: /app/new/dir/f.txt")
    assert (root / "app/new/dir/f.txt").read_bytes() == b"no newline\tat end"


def test_create_refuses_to_overwrite(workspace: Workspace, root: Path) -> None:
    (root / "app/f.txt").write_text("keep")
    assert error(workspace, command="create", path="/app/f.txt", file_text="new") == (
        "File already exists at: /app/f.txt. Cannot overwrite files using command `create`.")
    assert error(workspace, command="create", path="/app", file_text="new") == (
        "File already exists at: /app. Cannot overwrite files using command `create`.")
    assert (root / "app/f.txt").read_text() == "keep"


def test_create_requires_file_text(workspace: Workspace) -> None:
    assert error(workspace, command="create", path="/app/f.txt") == (
        "Parameter `file_text` is required for command: create")


# --- str_replace ------------------------------------------------------------------------------

def test_str_replace_edits_and_shows_a_snippet(workspace: Workspace, root: Path) -> None:
    (root / "app/x.txt").write_text("a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n")
    assert run(workspace, command="str_replace", path="/app/x.txt", old_str="f\n", new_str="F1\nF2\n") == (
        "The file /app/x.txt has been edited. Here's the result of running `cat -n` on a snippet of /app/x.txt:\n"
        "     2\tb\n     3\tc\n     4\td\n     5\te\n     6\tF1\n     7\tF2\n     8\tg\n     9\th\n    10\ti\n"
        "    11\tj\n    12\t\n"
        f"{REVIEW}"
    )
    assert (root / "app/x.txt").read_text() == "a\nb\nc\nd\ne\nF1\nF2\ng\nh\ni\nj\n"


def test_str_replace_without_new_str_deletes(workspace: Workspace, root: Path) -> None:
    (root / "app/x.txt").write_text("keep\ndrop me\nkeep too\n")
    out = run(workspace, command="str_replace", path="/app/x.txt", old_str="drop me\n")
    assert out.startswith("The file /app/x.txt has been edited. Here's the result of running `cat -n` on a snippet "
                          "of /app/x.txt:\n     1\tkeep\n     2\tkeep too\n     3\t\n")
    assert (root / "app/x.txt").read_text() == "keep\nkeep too\n"


def test_str_replace_not_found(workspace: Workspace, root: Path) -> None:
    (root / "app/x.txt").write_text("alpha\n")
    assert error(workspace, command="str_replace", path="/app/x.txt", old_str="beta", new_str="x") == (
        "No replacement was performed, old_str `beta` did not appear verbatim in /app/x.txt.")


def test_str_replace_must_be_unique(workspace: Workspace, root: Path) -> None:
    (root / "app/x.txt").write_text("x = 1\ny = 2\nx = 1\n")
    assert error(workspace, command="str_replace", path="/app/x.txt", old_str="x = 1", new_str="x = 3") == (
        "No replacement was performed. Multiple occurrences of old_str `x = 1` in lines [1, 3]. Please ensure it is "
        "unique")
    assert (root / "app/x.txt").read_text() == "x = 1\ny = 2\nx = 1\n"


def test_str_replace_requires_old_str(workspace: Workspace, root: Path) -> None:
    (root / "app/x.txt").write_text("x\n")
    assert error(workspace, command="str_replace", path="/app/x.txt", new_str="y") == (
        "Parameter `old_str` is required for command: str_replace")


def test_str_replace_expands_tabs_in_the_whole_file_like_the_reference(workspace: Workspace, root: Path) -> None:
    (root / "app/Makefile").write_text("all:\n\tcc a.c\nclean:\n\trm a.out\n")
    run(workspace, command="str_replace", path="/app/Makefile", old_str="        cc a.c", new_str="\tcc -O2 a.c")
    assert (root / "app/Makefile").read_text() == "all:\n        cc -O2 a.c\nclean:\n        rm a.out\n"


def test_str_replace_keeps_crlf_line_endings(workspace: Workspace, root: Path) -> None:
    (root / "app/w.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    run(workspace, command="str_replace", path="/app/w.txt", old_str="two\n", new_str="2\n2b\n")
    assert (root / "app/w.txt").read_bytes() == b"one\r\n2\r\n2b\r\nthree\r\n"


def test_str_replace_keeps_the_file_mode(workspace: Workspace, root: Path) -> None:
    script = root / "app/run.sh"
    script.write_text("echo hi\n")
    script.chmod(0o750)
    run(workspace, command="str_replace", path="/app/run.sh", old_str="hi", new_str="bye")
    assert stat.S_IMODE(script.stat().st_mode) == 0o750


# --- insert -----------------------------------------------------------------------------------

def test_insert_at_the_top(workspace: Workspace, root: Path) -> None:
    (root / "app/x.txt").write_text("a\nb\nc\n")
    assert run(workspace, command="insert", path="/app/x.txt", insert_line=0, new_str="top") == (
        "The file /app/x.txt has been edited. Here's the result of running `cat -n` on a snippet of the edited file:\n"
        "     1\ttop\n     2\ta\n     3\tb\n     4\tc\n     5\t\n"
        f"{REVIEW_INSERT}"
    )
    assert (root / "app/x.txt").read_text() == "top\na\nb\nc\n"


def test_insert_after_the_last_line(workspace: Workspace, root: Path) -> None:
    (root / "app/x.txt").write_text("1\n2\n3\n4\n5\n6\n")
    assert run(workspace, command="insert", path="/app/x.txt", insert_line=6, new_str="7\n8") == (
        "The file /app/x.txt has been edited. Here's the result of running `cat -n` on a snippet of the edited file:\n"
        "     3\t3\n     4\t4\n     5\t5\n     6\t6\n     7\t7\n     8\t8\n     9\t\n"
        f"{REVIEW_INSERT}"
    )
    assert (root / "app/x.txt").read_text() == "1\n2\n3\n4\n5\n6\n7\n8\n"


def test_insert_after_the_phantom_last_line_like_the_reference(workspace: Workspace, root: Path) -> None:
    (root / "app/x.txt").write_text("a\nb\nc\n")  # four "lines" to the reference: a, b, c, ""
    run(workspace, command="insert", path="/app/x.txt", insert_line=4, new_str="d")
    assert (root / "app/x.txt").read_text() == "a\nb\nc\n\nd"


@pytest.mark.parametrize("line", [-1, 5, "2"])
def test_insert_line_out_of_range(workspace: Workspace, root: Path, line: object) -> None:
    (root / "app/x.txt").write_text("a\nb\nc\n")
    assert error(workspace, command="insert", path="/app/x.txt", insert_line=line, new_str="x") == (
        f"Invalid `insert_line` parameter: {line}. It should be within the range of lines of the file: [0, 4]")


def test_insert_requires_its_parameters(workspace: Workspace, root: Path) -> None:
    (root / "app/x.txt").write_text("a\n")
    assert error(workspace, command="insert", path="/app/x.txt", new_str="x") == (
        "Parameter `insert_line` is required for command: insert")
    assert error(workspace, command="insert", path="/app/x.txt", insert_line=1) == (
        "Parameter `new_str` is required for command: insert")


# --- paths, commands, content -----------------------------------------------------------------

def test_path_errors(workspace: Workspace) -> None:
    assert error(workspace, command="view", path="app/x.py") == (
        "The path app/x.py is not an absolute path, it should start with `/`. Maybe you meant /app/x.py?")
    assert error(workspace, command="view", path="/app/missing.py") == (
        "The path /app/missing.py does not exist. Please provide a valid path.")
    assert error(workspace, command="str_replace", path="/app", old_str="a") == (
        "The path /app is a directory and only the `view` command can be used on directories")


def test_unknown_command_lists_the_allowed_ones(workspace: Workspace, root: Path) -> None:
    (root / "app/x.txt").write_text("a\n")
    assert error(workspace, command="undo_edit", path="/app/x.txt") == (
        "Unrecognized command undo_edit. The allowed commands for the str_replace_based_edit_tool tool are: "
        "view, create, str_replace, insert")


def test_non_utf8_content_is_reported_and_left_alone(workspace: Workspace, root: Path) -> None:
    (root / "app/latin1.txt").write_bytes(b"caf\xe9\n")
    expected = ("Ran into 'utf-8' codec can't decode byte 0xe9 in position 3: invalid continuation byte while trying "
                "to read /app/latin1.txt")
    assert error(workspace, command="view", path="/app/latin1.txt") == expected
    assert error(workspace, command="str_replace", path="/app/latin1.txt", old_str="caf", new_str="x") == expected
    assert (root / "app/latin1.txt").read_bytes() == b"caf\xe9\n"


def test_huge_files_are_refused(workspace: Workspace, root: Path) -> None:
    with open(root / "app/big.log", "wb") as handle:
        handle.truncate(10 * 1024 * 1024 + 1)
    assert error(workspace, command="view", path="/app/big.log") == (
        "Ran into the file is too large (10485761 bytes; the limit is 10485760) while trying to read /app/big.log")


# --- symlinks planted in the container cannot reach host files --------------------------------

def test_symlink_to_a_host_file_is_neither_read_nor_written(workspace: Workspace, root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret\n")
    (root / "app/evil").symlink_to(secret)
    missing = "The path /app/evil does not exist. Please provide a valid path."
    assert error(workspace, command="view", path="/app/evil") == missing
    assert error(workspace, command="str_replace", path="/app/evil", old_str="host", new_str="pwned") == missing
    assert error(workspace, command="insert", path="/app/evil", insert_line=0, new_str="pwned") == missing
    run(workspace, command="create", path="/app/evil", file_text="mine\n")  # replaces the dangling link itself
    assert secret.read_text() == "host secret\n"
    assert not (root / "app/evil").is_symlink() and (root / "app/evil").read_text() == "mine\n"


def test_symlinked_host_directory_is_not_reachable(workspace: Workspace, root: Path, tmp_path: Path) -> None:
    (tmp_path / "hostdir").mkdir()
    (tmp_path / "hostdir/secret.txt").write_text("host secret\n")
    (root / "app/hostdir").symlink_to(tmp_path / "hostdir")
    assert error(workspace, command="view", path="/app/hostdir") == (
        "The path /app/hostdir does not exist. Please provide a valid path.")
    assert error(workspace, command="view", path="/app/hostdir/secret.txt") == (
        "The path /app/hostdir/secret.txt does not exist. Please provide a valid path.")
    with pytest.raises(EditorError):
        run(workspace, command="create", path="/app/hostdir/planted.txt", file_text="x")
    assert sorted(p.name for p in (tmp_path / "hostdir").iterdir()) == ["secret.txt"]
