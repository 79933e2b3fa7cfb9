"""The static binaries Cove bind-mounts into every container: its init and a busybox.

Both must run in any image, even one without a libc, hence static linking. The init is compiled on
the host at first use and cached under a name carrying the source hash, so an upgraded Cove never
runs a stale init. Both functions block (the compile takes about a second): from async code call
them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

from cove.errors import SandboxError

INIT_SOURCE = Path(__file__).with_name("cove-init.c")
BUSYBOX = Path("/bin/busybox")
CFLAGS = ("-static", "-O2", "-Wall", "-Wextra", "-Werror")

_PT_INTERP = 3


def ensure_init_binary(dest_dir: Path) -> Path:
    """Returns the compiled cove-init for the current source, compiling it if needed."""
    return ensure_binary(INIT_SOURCE, dest_dir, "cove-init")


def ensure_binary(source_file: Path, dest_dir: Path, name: str) -> Path:
    """Returns ``dest_dir/<name>-<source hash>``, compiled (static) from ``source_file`` if needed.

    The compiler reads the very bytes that were hashed (from stdin), and the result is renamed into
    place, so concurrent callers, even in other processes, only ever see a complete binary.
    """
    source = source_file.read_bytes()
    dest = dest_dir / f"{name}-{hashlib.sha256(source).hexdigest()[:16]}"
    if dest.exists():
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{dest.name}.{uuid.uuid4().hex}.tmp"
    try:
        try:
            command = ["cc", *CFLAGS, "-x", "c", "-o", str(tmp), "-"]
            proc = subprocess.run(command, input=source, capture_output=True, check=False)
        except FileNotFoundError:
            raise SandboxError(f"Building {name} needs a C compiler (cc); none is installed.") from None
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise SandboxError(f"Compiling {name} failed: {err}")
        tmp.chmod(0o755)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def ensure_busybox(dest_dir: Path, *, source: Path = BUSYBOX) -> Path:
    """Returns a copy of the host's static busybox in ``dest_dir``, made on first use.

    A dynamic busybox would need the image's libc and loader, so it is refused rather than copied.
    """
    dest = dest_dir / "busybox"
    if dest.exists():
        return dest
    if not source.is_file():
        raise SandboxError(f"{source} is missing: install busybox-static.")
    if not _is_static_elf(source):
        raise SandboxError(f"{source} is not a static ELF executable: install busybox-static.")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".busybox.{uuid.uuid4().hex}.tmp"
    try:
        shutil.copyfile(source, tmp)
        tmp.chmod(0o755)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _is_static_elf(path: Path) -> bool:
    """True for an ELF file with no PT_INTERP segment, i.e. one the kernel runs without a loader."""
    with path.open("rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] not in (1, 2) or header[5] not in (1, 2):
            return False
        order = "<" if header[5] == 1 else ">"
        # e_phoff, then e_phentsize and e_phnum (past e_shoff, e_flags and e_ehsize).
        if header[4] == 2:
            phoff, phentsize, phnum = struct.unpack_from(f"{order}Q14xHH", header, 32)
        else:
            phoff, phentsize, phnum = struct.unpack_from(f"{order}I10xHH", header, 28)
        if phnum == 0 or phentsize < 4:
            return False
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    if len(table) < phentsize * phnum:
        return False
    return all(struct.unpack_from(f"{order}I", table, i * phentsize)[0] != _PT_INTERP for i in range(phnum))
