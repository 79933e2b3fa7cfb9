"""The apply_patch tool on a real directory standing in for a container root."""

from __future__ import annotations

import asyncio
import random
import stat
from pathlib import Path

import pytest

from cove.tools.v4a import PatchError, apply_operation, apply_update, parse_create
from cove.tools.workspace import Workspace


@pytest.fixture
def fresh_script() -> None:
    """Shadows the package conftest's autouse fixture: these tests need no server or upstream."""




def apply(workspace: Workspace, operation: dict[str, object], workdir: str = "/") -> str:
    return asyncio.run(apply_operation(workspace, operation, workdir))


def update(workspace: Workspace, path: str, diff: str) -> str:
    return apply(workspace, {"type": "update_file", "path": path, "diff": diff})


SOURCE = """\
import os


class A:
    def run(self):
        return 1


class B:
    def run(self):
        return 1
"""


# --- create_file ------------------------------------------------------------------------------

def test_create_writes_the_plus_lines_with_a_final_newline_and_makes_parents(workspace: Workspace, root: Path) -> None:
    out = apply(workspace, {"type": "create_file", "path": "/app/pkg/new.py", "diff": "+def f():\n+    pass\n"})
    assert out == "Created /app/pkg/new.py"
    assert (root / "app/pkg/new.py").read_bytes() == b"def f():\n    pass\n"


def test_create_resolves_relative_paths_against_the_workdir(workspace: Workspace, root: Path) -> None:
    op = {"type": "create_file", "path": "./src/../lib/a.txt", "diff": "+x"}
    assert apply(workspace, op, workdir="/app") == "Created /app/lib/a.txt"
    assert (root / "app/lib/a.txt").read_text() == "x\n"


def test_create_refuses_an_existing_file(workspace: Workspace, root: Path) -> None:
    (root / "app/x.py").write_text("keep\n")
    with pytest.raises(PatchError, match=r"Cannot create /app/x.py: it already exists\. Use an update_file"):
        apply(workspace, {"type": "create_file", "path": "/app/x.py", "diff": "+new\n"})
    assert (root / "app/x.py").read_text() == "keep\n"


def test_create_rejects_a_line_without_plus_and_writes_nothing(workspace: Workspace, root: Path) -> None:
    with pytest.raises(PatchError, match=r"Line 2 of the diff is not valid: 'oops'\. Every line .* start with '\+'"):
        apply(workspace, {"type": "create_file", "path": "/app/n.txt", "diff": "+ok\noops\n"})
    assert not (root / "app/n.txt").exists()


def test_create_with_unencodable_text_is_a_patch_error(workspace: Workspace, root: Path) -> None:
    with pytest.raises(PatchError, match=r"Cannot apply the create_file operation to /app/s.txt: .*surrogate"):
        apply(workspace, {"type": "create_file", "path": "/app/s.txt", "diff": "+\ud800\n"})
    assert not (root / "app/s.txt").exists()


def test_parse_create_keeps_crlf_and_stops_at_end_patch() -> None:
    assert parse_create("+a\r\n+\r\n+b\r\n") == "a\r\n\r\nb\r\n"
    assert parse_create("+a\n*** End Patch\nignored") == "a\n"
    assert parse_create("") == ""


# --- update_file ------------------------------------------------------------------------------

def test_update_replaces_lines_and_reports(workspace: Workspace, root: Path) -> None:
    (root / "app/x.py").write_text("a\nb\nc\n")
    assert update(workspace, "/app/x.py", "@@\n a\n-b\n+B\n c\n") == "Updated /app/x.py"
    assert (root / "app/x.py").read_text() == "a\nB\nc\n"


def test_first_hunk_needs_no_header(workspace: Workspace, root: Path) -> None:
    (root / "app/x.py").write_text("a\nb\n")
    update(workspace, "app/x.py", " a\n+inserted\n b\n")
    assert (root / "app/x.py").read_text() == "a\ninserted\nb\n"


def test_multiple_hunks_apply_in_order(workspace: Workspace, root: Path) -> None:
    (root / "app/x.py").write_text("".join(f"line {i}\n" for i in range(1, 21)))
    diff = "@@\n line 2\n-line 3\n+LINE 3\n line 4\n@@\n line 17\n+extra\n line 18\n"
    update(workspace, "/app/x.py", diff)
    lines = (root / "app/x.py").read_text().splitlines()
    assert lines[2] == "LINE 3" and lines[17] == "extra" and lines[18] == "line 18" and len(lines) == 21


def test_stacked_anchors_pick_the_method_of_the_second_class(workspace: Workspace, root: Path) -> None:
    (root / "app/x.py").write_text(SOURCE)
    update(workspace, "/app/x.py", "@@ class B:\n@@     def run(self):\n-        return 1\n+        return 2\n")
    at = SOURCE.rindex("return 1")
    assert (root / "app/x.py").read_text() == SOURCE[:at] + "return 2" + SOURCE[at + len("return 1"):]


def test_a_missing_stacked_anchor_is_an_error_naming_it(workspace: Workspace, root: Path) -> None:
    (root / "app/x.py").write_text(SOURCE)
    with pytest.raises(PatchError) as info:
        update(workspace, "/app/x.py", "@@ class C:\n@@     def run(self):\n-        return 1\n+        return 2\n")
    assert "Hunk 1 (diff line 1): the '@@ class C:' line was not found in the file." in info.value.message
    assert "line 9 (lines marked '!' differ):\n!     9 | class B:" in info.value.message
    assert (root / "app/x.py").read_text() == SOURCE


def test_a_single_unknown_anchor_is_ignored_like_the_sdk_does() -> None:
    assert apply_update("a\nb\n", "@@ not in the file\n a\n-b\n+c\n") == "a\nc\n"


def test_bare_header_and_anchor_with_trailing_spaces_match(workspace: Workspace, root: Path) -> None:
    (root / "app/x.py").write_text(SOURCE)
    update(workspace, "/app/x.py", "@@ class B:   \n@@\n     def run(self):\n-        return 1\n+        return 3\n")
    assert (root / "app/x.py").read_text().endswith("class B:\n    def run(self):\n        return 3\n")


def test_end_of_file_hunk_appends_after_the_last_occurrence() -> None:
    assert apply_update("x\nfoo\ny\nfoo\n", " foo\n+added\n*** End of File\n") == "x\nfoo\ny\nfoo\nadded\n"
    assert apply_update("a\nb\n", "@@\n+c\n*** End of File") == "a\nb\nc\n"


def test_trailing_newline_state_is_kept() -> None:
    assert apply_update("a\nb", "@@\n a\n-b\n+c\n") == "a\nc"
    assert apply_update("a\nb", "@@\n+c\n*** End of File") == "a\nb\nc"
    assert apply_update("a\nb\n", "@@\n-a\n+z\n") == "z\nb\n"


def test_context_matches_ignoring_trailing_then_surrounding_whitespace() -> None:
    text = "def f():  \n    x = 1\n\treturn x\n"
    diff = "@@\n def f():\n       x = 1\n-  return x\n+    return x + 1\n"
    # the file keeps its own spelling of context lines; only '-' lines are replaced
    assert apply_update(text, diff) == "def f():  \n    x = 1\n    return x + 1\n"


def test_exact_match_wins_over_an_earlier_fuzzy_one() -> None:
    assert apply_update("  a\nb\na\nc\n", "@@\n-a\n+A\n") == "  a\nb\nA\nc\n"


def test_a_failing_hunk_names_itself_and_shows_the_closest_region(workspace: Workspace, root: Path) -> None:
    (root / "app/x.py").write_text(SOURCE)
    diff = ("@@ class A:\n     def run(self):\n-        return 1\n+        return 5\n"
            "@@ class B:\n     def run(self):\n-        return 10\n+        return 20\n")
    with pytest.raises(PatchError) as info:
        update(workspace, "/app/x.py", diff)
    message = info.value.message
    assert message.startswith("Could not update /app/x.py. Hunk 2 (diff line 5) did not apply")
    assert "found in the file after line 9:\n  |     def run(self):\n  |         return 10\n" in message
    assert message.endswith("is lines 10-11 (lines marked '!' differ):\n"
                            "     10 |     def run(self):\n!    11 |         return 1")
    assert (root / "app/x.py").read_text() == SOURCE  # nothing half-applied


def test_no_similar_lines_is_said_plainly() -> None:
    with pytest.raises(PatchError, match=r"(?s)Hunk 1 \(diff line 1\) did not apply.*\nNo similar lines were found"):
        apply_update("a\nb\n", " zzz\n-qqq\n")


def test_hunks_out_of_order_are_explained() -> None:
    with pytest.raises(PatchError, match=r"They occur at line 1, before the end of the previous hunk \(line 4\)"):
        apply_update("a\nb\nc\nd\n", "@@\n b\n c\n-d\n@@\n a\n-b\n")


@pytest.mark.parametrize(("diff", "pattern"), [
    (" a\n?b\n", r"Line 2 of the diff is not valid: '\?b'\. In hunk 1, every line must start with"),
    ("*** Begin Patch\n a\n", r"Line 1 of the diff is not valid: '\*\*\* Begin Patch'"),
    ("@@\n a\n-b\n*** Add File: x\n", None),
    ("@@ a\n", r"Hunk 1 \(diff line 1\) has no lines\."),
    ("@@\n a\n***\n b\n", r"Line 3 of the diff is not valid: '\*\*\*'\. Hunk 2 must start with an '@@' line"),
    ("@@x\n a\n", r"Hunk 1 \(diff line 1\) has no lines; line 1 is '@@x'"),
])
def test_malformed_diffs_name_the_diff_line(diff: str, pattern: str | None) -> None:
    if pattern is None:  # a section terminator ends the operation's diff, as in the SDK
        assert apply_update("a\nb\n", diff) == "a\n"
        return
    with pytest.raises(PatchError, match=pattern):
        apply_update("a\nb\n", diff)


def test_update_of_a_missing_file_fails(workspace: Workspace) -> None:
    with pytest.raises(PatchError, match=r"Cannot update /app/nope.py: no such file\. Use a create_file"):
        update(workspace, "/app/nope.py", "@@\n+x\n")


def test_update_of_a_directory_fails(workspace: Workspace) -> None:
    with pytest.raises(PatchError, match=r"Cannot apply the update_file operation to /app: .*not a regular file"):
        update(workspace, "/app", "@@\n+x\n")


def test_crlf_files_stay_crlf(workspace: Workspace, root: Path) -> None:
    (root / "app/w.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    update(workspace, "/app/w.txt", "@@\n one\n-two\n+2\n+2b\n three\n")
    assert (root / "app/w.txt").read_bytes() == b"one\r\n2\r\n2b\r\nthree\r\n"


def test_utf8_bom_is_kept_and_ignored_for_matching(workspace: Workspace, root: Path) -> None:
    (root / "app/b.txt").write_bytes("\ufefffirst\nsecond\n".encode())
    update(workspace, "/app/b.txt", "@@\n-first\n+1st\n")
    assert (root / "app/b.txt").read_bytes() == "\ufeff1st\nsecond\n".encode()


def test_executable_bit_survives_an_update(workspace: Workspace, root: Path) -> None:
    script = root / "app/run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    update(workspace, "/app/run.sh", "@@\n-echo hi\n+echo bye\n")
    assert stat.S_IMODE(script.stat().st_mode) == 0o755 and script.read_text().endswith("echo bye\n")


@pytest.mark.parametrize(("content", "pattern"), [
    (b"\x00\x01binary", r"it is a binary file"),
    (b"caf\xe9\n", r"it is not UTF-8 text"),
])
def test_binary_and_non_utf8_files_are_refused(workspace: Workspace, root: Path, content: bytes, pattern: str) -> None:
    (root / "app/f").write_bytes(content)
    with pytest.raises(PatchError, match=pattern):
        update(workspace, "/app/f", "@@\n+x\n")
    assert (root / "app/f").read_bytes() == content


def test_huge_files_are_refused(workspace: Workspace, root: Path) -> None:
    with open(root / "app/big.log", "wb") as handle:
        handle.truncate(10 * 1024 * 1024 + 1)
    with pytest.raises(PatchError, match=r"the file is too large \(10485761 bytes; the limit is 10485760\)"):
        update(workspace, "/app/big.log", "@@\n+x\n")


# --- delete_file and the operation envelope ---------------------------------------------------

def test_delete_removes_the_file(workspace: Workspace, root: Path) -> None:
    (root / "app/old.py").write_text("x\n")
    assert apply(workspace, {"type": "delete_file", "path": "/app/old.py"}) == "Deleted /app/old.py"
    assert not (root / "app/old.py").exists()


@pytest.mark.parametrize(("path", "message"), [
    ("/app/missing.py", "Cannot delete /app/missing.py: no such file."),
    ("/app", "Cannot delete /app: it is a directory."),
])
def test_delete_of_a_missing_file_or_a_directory_fails(workspace: Workspace, path: str, message: str) -> None:
    with pytest.raises(PatchError) as info:
        apply(workspace, {"type": "delete_file", "path": path})
    assert info.value.message == message


@pytest.mark.parametrize(("operation", "pattern"), [
    ({"type": "rename_file", "path": "/app/x", "diff": ""}, r"Unknown operation type 'rename_file'"),
    ({"type": "update_file", "path": "/app/x"}, r"The update_file operation for /app/x has no diff\."),
    ({"type": "create_file", "path": "", "diff": "+x"}, r"The operation has no path\."),
])
def test_bad_operations_are_refused(workspace: Workspace, operation: dict[str, object], pattern: str) -> None:
    with pytest.raises(PatchError, match=pattern):
        apply(workspace, operation)


# --- symlinks planted in the container cannot reach host files --------------------------------

@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    (tmp_path / "host").mkdir()
    secret = tmp_path / "host/secret.txt"
    secret.write_text("host secret\n")
    return secret


def test_symlink_to_a_host_file_is_neither_read_nor_written(workspace: Workspace, root: Path, host_file: Path) -> None:
    link = root / "app/evil.txt"
    link.symlink_to(host_file)  # absolute host path: resolves inside the root, where it does not exist
    with pytest.raises(PatchError, match="no such file"):
        update(workspace, "/app/evil.txt", "@@\n-host secret\n+pwned\n")
    with pytest.raises(PatchError, match="no such file"):
        apply(workspace, {"type": "delete_file", "path": "/app/evil.txt"})
    apply(workspace, {"type": "create_file", "path": "/app/evil.txt", "diff": "+mine\n"})
    assert host_file.read_text() == "host secret\n"
    assert not link.is_symlink() and link.read_text() == "mine\n"


def test_relative_symlink_climbing_out_stays_in_the_root(workspace: Workspace, root: Path, host_file: Path) -> None:
    (root / "app/up.txt").symlink_to("../../../../../../../../" + str(host_file).lstrip("/"))
    with pytest.raises(PatchError, match="no such file"):
        update(workspace, "/app/up.txt", "@@\n-host secret\n+pwned\n")
    assert host_file.read_text() == "host secret\n"


def test_symlinked_directory_to_the_host_cannot_receive_files(workspace: Workspace, root: Path,
                                                              host_file: Path) -> None:
    (root / "app/hostdir").symlink_to(host_file.parent, target_is_directory=True)
    with pytest.raises(PatchError):
        apply(workspace, {"type": "create_file", "path": "/app/hostdir/planted.txt", "diff": "+x\n"})
    with pytest.raises(PatchError):
        update(workspace, "/app/hostdir/secret.txt", "@@\n-host secret\n+pwned\n")
    assert sorted(p.name for p in host_file.parent.iterdir()) == ["secret.txt"]
    assert host_file.read_text() == "host secret\n"


def test_symlink_inside_the_root_is_read_through(workspace: Workspace, root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc/conf").write_text("a=1\n")
    (root / "app/conf").symlink_to("/etc/conf")  # absolute container path, resolved in the root
    update(workspace, "/app/conf", "@@\n-a=1\n+a=2\n")
    assert (root / "app/conf").read_text() == "a=2\n"


# --- the SDK's applier as an oracle -----------------------------------------------------------

def test_matches_the_openai_agents_applier_on_random_diffs() -> None:
    apply_diff = pytest.importorskip("agents.apply_diff").apply_diff
    rng = random.Random(4)
    words = ["a", "b", " a", "a ", "", "  b", "def f():", "    return 1", "x"]
    same = 0
    for _ in range(3000):
        lines = [rng.choice(words) for _ in range(rng.randint(0, 8))]
        text = "\n".join(lines) + rng.choice(["", "\n"])
        text = text.replace("\n", "\r\n") if rng.random() < 0.2 else text
        diff_lines = []
        for _ in range(rng.randint(1, 8)):
            roll = rng.random()
            if roll < 0.15:
                diff_lines.append(rng.choice(["@@", "@@ " + rng.choice(lines + words)]))
            elif roll < 0.2:
                diff_lines.append("*** End of File")
            else:
                diff_lines.append(rng.choice(" -+") + rng.choice(lines + words))
        diff = "\n".join(diff_lines)
        try:
            expected: str | None = apply_diff(text, diff)
        except ValueError:
            expected = None
        try:
            got: str | None = apply_update(text, diff)
        except PatchError:
            got = None
        assert got == expected, (text, diff)
        same += expected is not None
    assert same > 300  # the comparison covered plenty of successful applications
