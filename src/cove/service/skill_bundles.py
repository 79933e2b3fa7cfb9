"""A skill's files, checked: a folder with ``SKILL.md`` at its top, from an upload's file parts or a zip.

Everything here is hostile input, read before anything is stored or mounted:

- paths are relative, normalized POSIX paths (no ``..``, no absolute path, no backslash, no NUL, no
  control characters), each at most ``MAX_PATH`` characters and ``MAX_DEPTH`` deep, none twice, none
  both a file and a folder;
- zip entries that are symlinks (or anything but files and folders) are refused, not followed;
- a zip's entry count and its declared sizes are checked before a byte is inflated, and the bytes
  are counted as they inflate (``zipfile`` stops at the declared size and checks the CRC), so a zip
  bomb costs at most ``max_bytes``; only stored and deflated entries are read (deflate inflates in
  bounded steps; zipfile's bzip2 and LZMA do not);
- ``SKILL.md``'s front matter is read from at most ``MAX_FRONT_MATTER`` bytes; ``name`` and
  ``description`` follow the Agent Skills rules (``name``: lowercase letters, digits and hyphens,
  at most 64; ``description``: at most 1,024 characters). ``name`` becomes the folder the skill is
  mounted at, so it can never be a path.

A bundle is stored as a zip Cove writes itself (``to_zip``), so what is served back and mounted
later has passed these checks once; reading it back (``from_zip``) checks it again all the same.
"""

from __future__ import annotations

import io
import json
import re
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from cove.errors import InvalidRequest
from cove.sandbox.base import SkillFile

MANIFEST = "SKILL.md"
MAX_PATH = 512
MAX_DEPTH = 16
MAX_FRONT_MATTER = 16 << 10
MAX_NAME = 64
MAX_DESCRIPTION = 1024
_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_KEY = re.compile(r"([A-Za-z0-9_-]+):(.*)")
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    """The files' total size, inflated."""
    max_files: int


@dataclass(frozen=True)
class Bundle:
    name: str
    description: str
    files: tuple[SkillFile, ...]

    @property
    def size(self) -> int:
        return sum(len(file.data) for file in self.files)


def _refuse(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_skill")


def _clean_path(raw: str, param: str) -> str:
    """``raw`` as a safe relative path, or a 400 saying what is wrong with it."""
    if not raw or len(raw) > MAX_PATH:
        raise _refuse(f"A skill file's path must be 1 to {MAX_PATH} characters: {raw[:80]!r}.", param)
    if "\\" in raw or any(ord(char) < 32 or ord(char) == 127 for char in raw):
        raise _refuse(f"A skill file's path has a backslash or a control character: {raw[:80]!r}.", param)
    path = PurePosixPath(raw)
    if path.is_absolute() or ".." in path.parts:
        raise _refuse(f"A skill file's path must stay inside the skill (no '..', not absolute): {raw[:80]!r}.",
                      param)
    parts = [part for part in path.parts if part != "."]
    if not parts or len(parts) > MAX_DEPTH:
        raise _refuse(f"A skill file's path must be 1 to {MAX_DEPTH} folders deep: {raw[:80]!r}.", param)
    return "/".join(parts)


def _strip_top(files: list[SkillFile]) -> list[SkillFile]:
    """Files all in one folder (``my-skill/SKILL.md`` ...) as relative to it, as a zip of a folder holds them."""
    if any(file.path == MANIFEST for file in files):
        return files
    tops = {file.path.split("/", 1)[0] for file in files}
    if len(tops) == 1 and all("/" in file.path for file in files):
        return [SkillFile(file.path.split("/", 1)[1], file.data, file.executable) for file in files]
    return files


def bundle_of(files: Iterable[SkillFile], limits: Limits, param: str) -> Bundle:
    """The checked bundle of ``files`` (paths as given), its name and description from ``SKILL.md``."""
    checked: list[SkillFile] = []
    total = 0
    for file in files:
        checked.append(SkillFile(_clean_path(file.path, param), file.data, file.executable))
        total += len(file.data)
        if len(checked) > limits.max_files:
            raise _refuse(f"A skill may hold at most {limits.max_files} files.", param)
        if total > limits.max_bytes:
            raise _refuse(f"A skill's files may total at most {limits.max_bytes} bytes.", param)
    checked = _strip_top(checked)
    seen: set[str] = set()
    folders: set[str] = set()
    for file in checked:
        if file.path in seen:
            raise _refuse(f"The skill has '{file.path}' twice.", param)
        seen.add(file.path)
        parent = PurePosixPath(file.path).parent
        while str(parent) != ".":
            folders.add(str(parent))
            parent = parent.parent
    clash = seen & folders
    if clash:
        raise _refuse(f"The skill has '{min(clash)}' as both a file and a folder.", param)
    manifest = next((file for file in checked if file.path == MANIFEST), None)
    if manifest is None:
        raise _refuse(f"A skill needs a {MANIFEST} at its top (or in its one top folder).", param)
    name, description = front_matter(manifest.data, param)
    ordered = sorted(checked, key=lambda file: file.path)
    return Bundle(name, description, tuple(SkillFile(f.path, f.data, f.executable or f.data.startswith(b"#!"))
                                           for f in ordered))


def from_zip(source: IO[bytes], limits: Limits, param: str) -> Bundle:
    """The checked bundle in a zip: symlinks and other special entries refused, folders skipped."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, ValueError):
        raise _refuse("The skill's zip could not be read: it is not a zip file.", param) from None
    with archive:
        entries = archive.infolist()
        if len(entries) > 2 * limits.max_files:  # folders count too, but not without bound
            raise _refuse(f"A skill may hold at most {limits.max_files} files.", param)
        files = [entry for entry in entries if not entry.is_dir()]
        if len(files) > limits.max_files:
            raise _refuse(f"A skill may hold at most {limits.max_files} files.", param)
        if sum(entry.file_size for entry in files) > limits.max_bytes:
            raise _refuse(f"A skill's files may total at most {limits.max_bytes} bytes (inflated).", param)
        read: list[SkillFile] = []
        budget = limits.max_bytes
        for entry in files:
            mode = entry.external_attr >> 16
            kind = stat.S_IFMT(mode)  # 0: a zip that records no Unix file type (Windows, Python's writestr)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(f"The skill's zip has '{entry.filename[:80]}', which is not a regular file "
                              "(a symlink?): only files and folders are allowed.", param)
            if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                # zipfile inflates bzip2 and LZMA a whole input chunk at a time, unbounded: a few KiB of
                # bzip2 zeros would be gigabytes in memory before any count could stop them.
                raise _refuse(f"The skill's zip entry '{entry.filename[:80]}' is compressed with method "
                              f"{entry.compress_type}: only stored and deflated entries are read.", param)
            body = _inflate(archive, entry, budget, limits, param)
            budget -= len(body)
            read.append(SkillFile(entry.filename, body, bool(mode & 0o111)))
    return bundle_of(read, limits, param)


def _inflate(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, budget: int, limits: Limits, param: str) -> bytes:
    """One entry's bytes, never more than ``budget`` of them whatever its header claims."""
    out = bytearray()
    try:
        with archive.open(entry) as source:
            while chunk := source.read(_CHUNK):
                out += chunk
                if len(out) > budget:
                    raise _refuse(f"A skill's files may total at most {limits.max_bytes} bytes (inflated).", param)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError) as exc:
        # RuntimeError: an encrypted entry; NotImplementedError: an unknown compression method.
        raise _refuse(f"The skill's zip entry '{entry.filename[:80]}' could not be read: {exc}.", param) from None
    return bytes(out)


def to_zip(bundle: Bundle) -> bytes:
    """The bundle as Cove stores and serves it: a zip of one folder named after the skill."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in bundle.files:
            info = zipfile.ZipInfo(f"{bundle.name}/{file.path}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | (0o755 if file.executable else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, file.data)
    return out.getvalue()


# -- SKILL.md's front matter ------------------------------------------------------------------------
def front_matter(manifest: bytes, param: str) -> tuple[str, str]:
    """``name`` and ``description`` from the YAML front matter that opens ``SKILL.md``.

    A small reader of the YAML that front matter uses (``key: value``, quoted values, ``>`` and ``|``
    blocks, continued plain values), not a YAML library: nothing in it expands aliases or builds
    objects, and only these two keys are read; any other key is kept as the author wrote it."""
    head = manifest[:MAX_FRONT_MATTER + 8].decode("utf-8", errors="replace").replace("\r\n", "\n")
    if not head.startswith("---\n"):
        raise _refuse(f"{MANIFEST} must open with YAML front matter ('---' on the first line).", param)
    end = head.find("\n---", 3)
    if end < 0 or end > MAX_FRONT_MATTER:
        raise _refuse(f"{MANIFEST}'s front matter must end with a '---' line within {MAX_FRONT_MATTER} bytes.",
                      param)
    values = _top_level(head[4:end + 1].split("\n"))
    name = values.get("name")
    description = values.get("description")
    if not name:
        raise _refuse(f"{MANIFEST}'s front matter has no 'name'.", param)
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise _refuse(f"{MANIFEST}'s 'name' must be 1 to {MAX_NAME} lowercase letters, digits and single "
                      f"hyphens (e.g. 'pdf-tools'): {name[:80]!r}.", param)
    if not description or not description.strip():
        raise _refuse(f"{MANIFEST}'s front matter has no 'description'.", param)
    if len(description) > MAX_DESCRIPTION:
        raise _refuse(f"{MANIFEST}'s 'description' must be at most {MAX_DESCRIPTION} characters.", param)
    return name, description.strip()


def _top_level(lines: list[str]) -> dict[str, str]:
    """Each top-level key's value as text; indented lines continue the key above them."""
    values: dict[str, str] = {}
    key: str | None = None
    first = ""
    rest: list[str] = []
    for line in [*lines, "end-of-front-matter:"]:
        if line[:1] in (" ", "\t") or not line.strip() or line.lstrip().startswith("#"):
            if key is not None and not line.lstrip().startswith("#"):
                rest.append(line)
            continue
        if key is not None:
            values[key] = _value(first, rest)
        match = _KEY.fullmatch(line)
        key, first, rest = (match.group(1), match.group(2).strip(), []) if match else (None, "", [])
    return values


def _value(first: str, rest: list[str]) -> str:
    continued = [line.strip() for line in rest]
    if first[:1] in ("|", ">"):
        lines = list(continued)
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines) if first[0] == "|" else " ".join(line for line in lines if line)
    if first.startswith('"'):
        text = " ".join([first, *filter(None, continued)])
        try:
            value = json.loads(text)
        except ValueError:
            return text.strip('"')
        return value if isinstance(value, str) else text
    if first.startswith("'"):
        return " ".join([first, *filter(None, continued)])[1:].removesuffix("'").replace("''", "'")
    if first.startswith("#"):
        first = ""
    return " ".join([first.split(" #", 1)[0], *filter(None, continued)]).strip()
