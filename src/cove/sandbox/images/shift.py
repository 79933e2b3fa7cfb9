"""Move a tree's ownership into the container's id range (host id = container id + ``uid_base``).

Containers run in a user namespace mapping container ids 0-65535 onto ``uid_base``..+65535, so an
image file owned by host root would look like ``nobody`` inside and be read-only to container
root. Shifting happens once, when a layer is made; layers are then used as they are.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

ID_RANGE = 65536
NOBODY = 65534
CAP_XATTR = "security.capability"
_REVISION_MASK = 0xFF000000
_REVISION_3 = 0x03000000


def shift_id(host_id: int, uid_base: int) -> int:
    """``host_id`` as seen by a tree made outside any namespace, moved into the mapped range.
    Ids already in the range are left alone (so shifting twice is harmless); ids too large to map
    become ``nobody``."""
    if uid_base <= host_id < uid_base + ID_RANGE:
        return host_id
    return uid_base + (host_id if host_id < ID_RANGE else NOBODY)


def shift_tree(root: Path, uid_base: int) -> None:
    """Shift every entry under ``root`` (itself included) without following symlinks."""
    seen: set[int] = set()
    shift_path(root, uid_base)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            ino = os.lstat(path).st_ino
            if ino not in seen:  # hard links: once is enough
                seen.add(ino)
                shift_path(path, uid_base)


def shift_path(path: str | Path, uid_base: int) -> None:
    """``lchown`` one entry into the mapped range, keeping what chown would lose.

    The kernel clears setuid/setgid bits and the ``security.capability`` xattr on chown, so the
    mode is restored afterwards and file capabilities are rewritten as namespaced (v3) caps whose
    root id is ``uid_base``: they then apply to container root only, and never on the host.
    Other xattrs holding ids (POSIX ACLs) are left as they are; images rarely carry them.
    """
    st = os.lstat(path)
    uid, gid = shift_id(st.st_uid, uid_base), shift_id(st.st_gid, uid_base)
    if (uid, gid) == (st.st_uid, st.st_gid):
        return
    caps = None
    if stat.S_ISREG(st.st_mode):
        try:
            caps = os.getxattr(path, CAP_XATTR, follow_symlinks=False)
        except OSError:
            caps = None
    os.chown(path, uid, gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode) and os.lstat(path).st_mode != st.st_mode:
        os.chmod(path, stat.S_IMODE(st.st_mode))
    if caps:
        converted = namespaced_caps(caps, uid_base)
        if converted is not None:
            os.setxattr(path, CAP_XATTR, converted, follow_symlinks=False)


def namespaced_caps(value: bytes, rootid: int) -> bytes | None:
    """A ``vfs_cap_data`` value (revision 1, 2 or 3) as revision 3 owned by ``rootid``; None if
    the value is malformed (then the capability is dropped)."""
    if len(value) not in (12, 20, 24):
        return None
    (magic,) = struct.unpack_from("<I", value)
    flags = magic & ~_REVISION_MASK
    data = value[4:20] if len(value) >= 20 else value[4:12] + bytes(8)
    return struct.pack("<I", _REVISION_3 | flags) + data + struct.pack("<I", rootid)
