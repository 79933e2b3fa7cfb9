"""A skill's files as hostile input: front matter, paths, zip bombs, symlinks, caps (no server needed)."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from cove.errors import InvalidRequest
from cove.sandbox.base import SkillFile
from cove.service.skill_bundles import MAX_FRONT_MATTER, Limits, bundle_of, from_zip, front_matter, to_zip

LIMITS = Limits(max_bytes=1 << 20, max_files=20)
MANIFEST = b"---\nname: csv-stats\ndescription: Sums a CSV column.\n---\n# Use\nRun scripts/sum.py FILE\n"


def zipped(entries: dict[str, bytes], modes: dict[str, int] | None = None) -> io.BytesIO:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (modes or {}).get(name, stat.S_IFREG | 0o644) << 16
            archive.writestr(info, data)
    out.seek(0)
    return out


def refused(match: str, entries: dict[str, bytes], modes: dict[str, int] | None = None,
            limits: Limits = LIMITS) -> None:
    with pytest.raises(InvalidRequest, match=match) as caught:
        from_zip(zipped(entries, modes), limits, "files")
    assert caught.value.status_code == 400 and caught.value.param == "files"


def test_a_folder_zip_round_trips() -> None:
    bundle = from_zip(zipped({"csv-stats/SKILL.md": MANIFEST, "csv-stats/scripts/sum.py": b"print(1)\n",
                              "csv-stats/run.sh": b"#!/bin/sh\necho hi\n"}), LIMITS, "files")
    assert (bundle.name, bundle.description) == ("csv-stats", "Sums a CSV column.")
    assert [file.path for file in bundle.files] == ["SKILL.md", "run.sh", "scripts/sum.py"]
    assert [file.executable for file in bundle.files] == [False, True, False]  # a #! script runs as it is
    again = from_zip(io.BytesIO(to_zip(bundle)), LIMITS, "files")
    assert again == bundle


def test_files_at_the_top_need_no_folder() -> None:
    bundle = bundle_of([SkillFile("SKILL.md", MANIFEST), SkillFile("a/b.txt", b"x")], LIMITS, "files")
    assert [file.path for file in bundle.files] == ["SKILL.md", "a/b.txt"]


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/passwd", "a/../../x", "a\\b", "x/\x1b[2J"])
def test_paths_that_leave_the_skill_are_refused(name: str) -> None:
    refused("path", {"SKILL.md": MANIFEST, name: b"x"})
    with pytest.raises(InvalidRequest, match="path"):  # an upload's file names are checked the same way
        bundle_of([SkillFile("SKILL.md", MANIFEST), SkillFile(name, b"x")], LIMITS, "files")


def test_a_nul_in_an_uploaded_name_is_refused() -> None:  # zipfile itself cuts names at NUL
    with pytest.raises(InvalidRequest, match="control character"):
        bundle_of([SkillFile("SKILL.md", MANIFEST), SkillFile("a\x00b", b"x")], LIMITS, "files")


def test_symlinks_are_refused_not_followed() -> None:
    refused("not a regular file", {"SKILL.md": MANIFEST, "link": b"/etc/shadow"},
            {"link": stat.S_IFLNK | 0o777})


def test_a_zip_bomb_costs_at_most_the_cap() -> None:
    bomb = {"SKILL.md": MANIFEST, "zeros": b"\0" * (8 << 20)}  # 8 MiB of zeros deflate to ~8 KiB
    assert len(zipped(bomb).getvalue()) < 64 << 10
    refused("at most 1048576 bytes", bomb)


def test_a_zip_that_lies_about_its_sizes_is_still_capped() -> None:
    data = zipped({"SKILL.md": MANIFEST, "zeros": b"\0" * (4 << 20)}).getvalue()
    # Rewrite the central directory's uncompressed size of "zeros" to 1 byte.
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = archive.getinfo("zeros")
    central = data.rfind(b"PK\x01\x02")  # the last central directory entry: "zeros"
    patched = bytearray(data)
    patched[central + 24:central + 28] = (1).to_bytes(4, "little")
    assert info.file_size == 4 << 20
    with pytest.raises(InvalidRequest):
        from_zip(io.BytesIO(bytes(patched)), LIMITS, "files")


def test_bzip2_and_lzma_entries_are_refused_before_they_inflate() -> None:
    for method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", method) as archive:
            archive.writestr("SKILL.md", MANIFEST)
        out.seek(0)
        with pytest.raises(InvalidRequest, match=f"compressed with method {method}"):
            from_zip(out, LIMITS, "files")


def test_too_many_files_and_duplicates() -> None:
    refused("at most 20 files", {"SKILL.md": MANIFEST, **{f"f{i}": b"" for i in range(25)}})
    with pytest.raises(InvalidRequest, match="twice"):
        bundle_of([SkillFile("SKILL.md", MANIFEST), SkillFile("a", b""), SkillFile("./a", b"")], LIMITS, "files")
    with pytest.raises(InvalidRequest, match="both a file and a folder"):
        bundle_of([SkillFile("SKILL.md", MANIFEST), SkillFile("a", b""), SkillFile("a/b", b"")], LIMITS, "files")


def test_not_a_zip() -> None:
    with pytest.raises(InvalidRequest, match="not a zip"):
        from_zip(io.BytesIO(b"PK\x03\x04 not really"), LIMITS, "files")


@pytest.mark.parametrize(("manifest", "problem"), [
    (b"# no front matter\n", "must open with YAML front matter"),
    (b"---\nname: x\ndescription: y\n", "must end with a '---' line"),
    (b"---\ndescription: y\n---\n", "has no 'name'"),
    (b"---\nname: Bad_Name\ndescription: y\n---\n", "'name' must be 1 to 64 lowercase"),
    (b"---\nname: ../etc\ndescription: y\n---\n", "'name' must be"),
    (b"---\nname: " + b"a" * 65 + b"\ndescription: y\n---\n", "'name' must be"),
    (b"---\nname: ok\n---\n", "has no 'description'"),
    (b"---\nname: ok\ndescription: " + b"d" * 1025 + b"\n---\n", "at most 1024 characters"),
    (b"---\nname: ok\ndescription: " + b"d" * MAX_FRONT_MATTER + b"\n---\n", "within 16384 bytes"),
])
def test_bad_front_matter_names_the_problem(manifest: bytes, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        front_matter(manifest, "files")


def test_front_matter_yaml_forms() -> None:
    assert front_matter(b'---\nname: "pdf-tools"\ndescription: "Reads \\"PDFs\\""\n---\n', "f") == (
        "pdf-tools", 'Reads "PDFs"')
    assert front_matter(b"---\r\nname: a\r\ndescription: >\r\n  Folded\r\n  text.\r\nlicense: MIT\r\n---\r\n",
                        "f") == ("a", "Folded text.")
    assert front_matter(b"---\nname: a # comment\nmetadata:\n  owner: x\ndescription: |\n  one\n  two\n---\n",
                        "f") == ("a", "one\ntwo")
    assert front_matter(b"---\nname: 'a'\ndescription: it''s\n  continued\n---\n", "f") == ("a", "it''s continued")
