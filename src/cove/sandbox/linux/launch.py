"""Starting containers without runc: ``cove-launch`` (C, static) performs a plan derived here from the
very OCI config runc would get (``spec.build_spec``), so spec.py stays the one description of a
container's isolation. Chosen by ``COVE_RUNTIME`` (``auto``: wherever it runs; see ``resolve_runtime``).

What runc does between reading config.json and exec'ing the init is reproduced step for step, in its
order: cgroups (made and limited here, joined by the launcher before the child runs), namespaces, the
uid/gid maps, mounts with their flags, the host's device nodes, /dev symlinks, pivot_root, read-only
and masked paths, hostname, rlimits, umask, no_new_privs, capabilities, the seccomp program (compiled
here with the system's libseccomp, the library runc itself uses, with the calls runc makes), execve.
Where runc adds something the config does not say (its default device rules, HOME), this module adds
it too, named as runc's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import functools
import hashlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from cove.errors import SandboxError
from cove.sandbox.linux import cgroups
from cove.sandbox.linux.initbin import ensure_binary
from cove.sandbox.linux.runc import hide_paths

LAUNCH_SOURCE = Path(__file__).with_name("cove-launch.c")
CGROUP_ROOT = Path("/sys/fs/cgroup")

# <sys/mount.h>
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_REMOUNT = 1, 2, 4, 8, 16, 32
MS_MANDLOCK, MS_DIRSYNC, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 64, 128, 1024, 2048, 4096, 16384
MS_SILENT, MS_RELATIME, MS_I_VERSION, MS_STRICTATIME, MS_LAZYTIME = 32768, 1 << 21, 1 << 23, 1 << 24, 1 << 25

# runc's parseMountOptions: option -> (clears, flag).
_MOUNT_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS), "atime": (True, MS_NOATIME), "bind": (False, MS_BIND),
    "defaults": (False, 0), "dev": (True, MS_NODEV), "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC), "exec": (True, MS_NOEXEC), "iversion": (False, MS_I_VERSION),
    "lazytime": (False, MS_LAZYTIME), "loud": (True, MS_SILENT), "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME), "nodev": (False, MS_NODEV), "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC), "noiversion": (True, MS_I_VERSION), "nolazytime": (True, MS_LAZYTIME),
    "nomand": (True, MS_MANDLOCK), "norelatime": (True, MS_RELATIME), "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID), "rbind": (False, MS_BIND | MS_REC), "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT), "ro": (False, MS_RDONLY), "rw": (True, MS_RDONLY),
    "silent": (False, MS_SILENT), "strictatime": (False, MS_STRICTATIME), "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}
_PROPAGATION = {"private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable"}
_DEFAULT_MOUNT_FLAGS = MS_NOEXEC | MS_NOSUID | MS_NODEV
"""runc's defaultMountFlags (its cgroup mounts)."""

_NAMESPACE_FLAGS = {"mount": 0x00020000, "uts": 0x04000000, "ipc": 0x08000000, "user": 0x10000000,
                    "pid": 0x20000000, "network": 0x40000000}
_CLONE_NEWCGROUP = 0x02000000

_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
         "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
         "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
         "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
         "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
         "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
         "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
         "CAP_CHECKPOINT_RESTORE"]
_RLIMITS = {"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
            "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
            "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
            "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15}

RUNC_ALLOWED_DEVICES: list[dict[str, Any]] = [
    {"allow": True, "type": "c", "access": "m"}, {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
      for major, minor in ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (136, None), (5, 2), (10, 200))),
]
"""What runc 1.1 appends to every container's device rules (libcontainer/specconv AllowedDevices):
mknod of any node (capabilities refuse it: no CAP_MKNOD), the standard nodes, ptys, and /dev/net/tun."""


def _mount_options(options: list[str]) -> tuple[int, str]:
    flags, data = 0, []
    for option in options:
        if option in _MOUNT_FLAGS:
            clear, flag = _MOUNT_FLAGS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in _PROPAGATION:
            raise SandboxError(f"cove-launch does not support mount propagation options ({option}) yet.")
        else:
            data.append(option)
    return flags, ",".join(data)


def _caps_mask(names: list[str] | None) -> str:
    mask = 0
    for name in names or ():
        mask |= 1 << _CAPS.index(name)
    return f"{mask:x}"


def _map_text(mappings: list[dict[str, int]]) -> str:
    return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in mappings)


# -- cgroups ---------------------------------------------------------------------------------------
@functools.cache
def v1_hierarchies() -> tuple[tuple[Path, str], ...]:
    """Every mounted cgroup v1 hierarchy (named ones too, as ``name=systemd``): its mount point and
    its controllers, as runc finds them (``cgroups.GetCgroupMounts``). Read once: the machine's
    layout does not change while Cove runs (as ``cgroups.is_unified`` assumes)."""
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            fields = line.split()
            dash = fields.index("-")
            if fields[dash + 1] != "cgroup":
                continue
            mount_point = Path(fields[4].encode().decode("unicode_escape"))
            controllers = [o for o in fields[dash + 3].split(",") if o not in ("rw", "ro")]
            found.append((mount_point, ",".join(controllers)))
    return tuple(found)


@functools.cache
def hybrid_unified() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted beside the v1 ones (hybrid hosts): runc 1.1 puts each
    container's init in it too (no controllers there; it names the container's processes)."""
    with open("/proc/self/mountinfo") as info:
        for line in info:
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                return Path(fields[4].encode().decode("unicode_escape"))
    return None


def _device_rule(rule: dict[str, Any]) -> str:
    kind = rule.get("type", "a")
    if kind == "a":
        return "a"
    major = "*" if rule.get("major") in (None, -1) else str(rule["major"])
    minor = "*" if rule.get("minor") in (None, -1) else str(rule["minor"])
    return f"{kind} {major}:{minor} {rule.get('access', 'rwm')}"


def _write(path: Path, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SandboxError(f"Limiting the container failed: {path.name}: {exc.strerror}") from None
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise SandboxError(f"Limiting the container failed: {path.name} {value!r}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _make_cgroup(base: Path, rel: str, copy_cpuset: bool) -> Path:
    """``base/rel`` and any missing parents; a new cpuset gets its parent's CPUs and memory nodes (an
    empty cpuset cannot take a task), as runc does."""
    current = base
    for part in Path(rel).parts:
        current = current / part
        try:
            current.mkdir(mode=0o755)
        except FileExistsError:
            continue
        if copy_cpuset:
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not (current / name).read_text().strip():
                    _write(current / name, (current.parent / name).read_text().strip())
    return current


def create_cgroups_v1(cgroup_path: str, resources: dict[str, Any]) -> tuple[list[Path], Path | None]:
    """The container's cgroup in every v1 hierarchy, limited as runc's fs driver limits it; returns
    the directories the init must join, v1 and (hybrid hosts) v2."""
    rel = cgroup_path.strip("/")
    if not any("devices" in c.split(",") for _m, c in v1_hierarchies()):
        raise SandboxError("No devices cgroup is mounted: containers' device access could not be limited.")
    dirs: list[Path] = []
    for mount_point, controllers in v1_hierarchies():
        names = controllers.split(",")
        directory = _make_cgroup(mount_point, rel, "cpuset" in names)
        dirs.append(directory)
        if "memory" in names and (memory := resources.get("memory")):
            if memory.get("limit"):
                _write(directory / "memory.limit_in_bytes", str(memory["limit"]))
            if memory.get("swap"):
                if not (directory / "memory.memsw.limit_in_bytes").exists():
                    raise SandboxError("Swap accounting is off on this host: a memory+swap limit cannot be set.")
                _write(directory / "memory.memsw.limit_in_bytes", str(memory["swap"]))
        if "cpu" in names and (cpu := resources.get("cpu")):
            if cpu.get("period"):
                _write(directory / "cpu.cfs_period_us", str(cpu["period"]))
            if cpu.get("quota"):
                _write(directory / "cpu.cfs_quota_us", str(cpu["quota"]))
        if "pids" in names and (pids := resources.get("pids")):
            _write(directory / "pids.max", str(pids["limit"]) if pids["limit"] > 0 else "max")
        if "devices" in names:
            rules = list(resources.get("devices", [])) + RUNC_ALLOWED_DEVICES
            for rule in rules:
                _write(directory / ("devices.allow" if rule["allow"] else "devices.deny"), _device_rule(rule))
    unified = hybrid_unified()
    return dirs, _make_cgroup(unified, rel, False) if unified is not None else None


def cgroup_dirs(cgroup_path: str) -> list[Path]:
    rel = cgroup_path.strip("/")
    unified = hybrid_unified()
    return [mount_point / rel for mount_point, _ in v1_hierarchies()] + ([unified / rel] if unified else [])


def _procs(directory: Path) -> list[int]:
    try:
        text = (directory / "cgroup.procs").read_text()
    except FileNotFoundError:
        return []
    return [int(line) for line in text.split()]


def kill_cgroup(cgroup_path: str, timeout: float = 5.0) -> None:
    """SIGKILL to every process of the container's cgroup (killing its init ends its pid namespace),
    until the cgroup is empty; then the cgroup directories are removed. Absent is fine. Blocking.

    Each pid is pinned with a pidfd and signalled only if it is still in the cgroup after that, so a
    pid reused by another process after its owner died is never signalled."""
    dirs = [d for d in cgroup_dirs(cgroup_path) if d.is_dir()]
    if not dirs:
        return
    freezer = next((d for d in dirs if (d / "freezer.state").exists()), None)
    if freezer is not None:  # frozen processes cannot die (v1): thaw them first
        with contextlib.suppress(OSError):
            if (freezer / "freezer.state").read_text().strip() != "THAWED":
                (freezer / "freezer.state").write_text("THAWED")
    deadline = time.monotonic() + timeout
    watch = dirs[0]
    delay = 0.0005
    while True:
        pids = _procs(watch)
        if not pids:
            break
        pidfds = {}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                pidfds[pid] = os.pidfd_open(pid)
        still = set(_procs(watch))
        for pid, fd in pidfds.items():
            if pid in still:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
        if time.monotonic() > deadline:
            raise SandboxError("The container's processes did not all end after SIGKILL.")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    for directory in dirs:
        while True:
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise SandboxError(f"Removing the container's cgroup failed: {exc.strerror}") from None
                time.sleep(0.001)


# -- seccomp ---------------------------------------------------------------------------------------
class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_KILL_PROCESS = 0x80000000
_SCMP_ACT_KILL_THREAD = 0x00000000
_SCMP_CMP = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
             "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_NR_SCMP_ERROR = -1


def _scmp_action(name: str, errno_ret: int | None) -> int:
    if name == "SCMP_ACT_ALLOW":
        return _SCMP_ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return 0x00050000 | ((errno_ret if errno_ret is not None else errno.EPERM) & 0xFFFF)
    if name == "SCMP_ACT_KILL" or name == "SCMP_ACT_KILL_THREAD":
        return _SCMP_ACT_KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return _SCMP_ACT_KILL_PROCESS
    raise SandboxError(f"cove-launch does not support the seccomp action {name} yet.")


@functools.cache
def _libseccomp() -> ctypes.CDLL:
    found = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(found, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def compile_seccomp(profile: dict[str, Any]) -> bytes:
    """The BPF program runc would load for ``profile`` (an OCI ``linux.seccomp``): the same libseccomp
    calls in the same order as runc 1.1's InitSeccomp (unknown syscalls skipped, rules with the default
    action skipped), exported rather than loaded. With an allowing default runc adds no ENOSYS stub."""
    if profile.get("flags"):
        raise SandboxError("cove-launch does not support seccomp flags yet.")
    lib = _libseccomp()
    default = _scmp_action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    if default != _SCMP_ACT_ALLOW:
        raise SandboxError("cove-launch supports allow-by-default seccomp profiles only (runc's ENOSYS stub "
                           "for the others is not reproduced).")
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise SandboxError("seccomp_init failed")
    try:
        for arch in profile.get("architectures", []):
            token = lib.seccomp_arch_resolve_name(arch.removeprefix("SCMP_ARCH_").lower().encode())
            if token == 0:
                raise SandboxError(f"libseccomp does not know the architecture {arch}.")
            rc = lib.seccomp_arch_add(ctx, token)
            if rc not in (0, -errno.EEXIST):
                raise SandboxError(f"seccomp_arch_add({arch}) failed: {os.strerror(-rc)}")
        for rule in profile.get("syscalls", []):
            action = _scmp_action(rule["action"], rule.get("errnoRet"))
            args = rule.get("args") or []
            conds = [_ArgCmp(a["index"], _SCMP_CMP[a["op"]], a.get("value", 0), a.get("valueTwo", 0)) for a in args]
            per_index = [sum(1 for a in args if a["index"] == i) for i in range(6)]
            groups = [[c] for c in conds] if any(n > 1 for n in per_index) else [conds]
            for name in rule["names"]:
                number = lib.seccomp_syscall_resolve_name(name.encode())
                if number == _NR_SCMP_ERROR or action == default:
                    continue  # as runc: a syscall libseccomp does not know is skipped
                for group in groups:
                    array = (_ArgCmp * len(group))(*group) if group else None
                    rc = lib.seccomp_rule_add_array(ctx, action, number, len(group), array)
                    if rc != 0:
                        raise SandboxError(f"seccomp rule for {name} failed: {os.strerror(-rc)}")
        with tempfile.TemporaryFile() as out:
            rc = lib.seccomp_export_bpf(ctx, out.fileno())
            if rc != 0:
                raise SandboxError(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            out.seek(0)
            return out.read()
    finally:
        lib.seccomp_release(ctx)


# -- the plan --------------------------------------------------------------------------------------
def build_plan(config: dict[str, Any], cgroup_dirs: list[Path], cgroup2_dir: Path | None,
               seccomp_file: Path | None, report_fd: int) -> list[str]:
    """cove-launch's arguments for ``config`` (an OCI config.json document from ``spec.build_spec``),
    in runc 1.1's order of operations. Raises for what it does not reproduce (Cove's configs never ask for it)."""
    process, linux = config["process"], config["linux"]
    if process.get("terminal"):
        raise SandboxError("cove-launch does not allocate terminals (the init does).")
    if process.get("user", {}).get("uid", 0) != 0 or process.get("user", {}).get("gid", 0) != 0:
        raise SandboxError("cove-launch starts the init as container root only.")
    if config["root"].get("readonly"):
        raise SandboxError("cove-launch does not support a read-only root yet.")
    for key in ("sysctl", "oomScoreAdj", "rootfsPropagation", "intelRdt", "personality"):
        if linux.get(key):
            raise SandboxError(f"cove-launch does not support linux.{key} yet.")
    kinds = [ns["type"] for ns in linux["namespaces"]]
    if any(ns.get("path") for ns in linux["namespaces"]):
        raise SandboxError("cove-launch does not join existing namespaces.")
    if "user" not in kinds or "mount" not in kinds:
        raise SandboxError("cove-launch needs a user and a mount namespace.")
    flags = 0
    for kind in kinds:
        if kind == "cgroup":
            continue
        if kind not in _NAMESPACE_FLAGS:
            raise SandboxError(f"cove-launch does not support the {kind} namespace.")
        flags |= _NAMESPACE_FLAGS[kind]

    plan = ["report", str(report_fd), "clone", f"{flags:x}",
            "uidmap", _map_text(linux["uidMappings"]), "gidmap", _map_text(linux["gidMappings"])]
    for directory in cgroup_dirs:
        plan += ["cgroup", str(directory)]
    if cgroup2_dir is not None:
        plan += ["cgroup2", str(cgroup2_dir)]
    if "cgroup" in kinds:
        plan.append("cgroupns")
    if "network" in kinds:
        plan.append("loopback")  # runc's "loopback" network for a new network namespace
    if seccomp_file is not None:
        plan += ["seccomp", str(seccomp_file)]
    plan += ["root", config["root"]["path"]]

    # prepareRootfs: each mount in order (mountToRootfs), tmpfs kept writable until finalizeRootfs.
    late_remounts: list[str] = []
    setup_dev = False
    for mount in config.get("mounts", []):
        dest, kind = mount["destination"], mount.get("type", "")
        mflags, data = _mount_options(mount.get("options", []))
        if os.path.normpath(dest) == "/dev":
            setup_dev = True
        if kind == "bind" or mflags & MS_BIND:
            plan += ["bind", dest, mount["source"], f"{mflags | MS_BIND:x}"]
        elif kind in ("proc", "sysfs"):
            plan += ["mount", "strict", dest, mount.get("source", kind), kind, f"{mflags:x}", data]
        elif kind == "cgroup":
            if "cgroup" not in kinds:
                raise SandboxError("cove-launch mounts cgroups only with a cgroup namespace.")
            plan += _cgroup_mounts(dest, mflags)
        elif kind == "tmpfs":
            plan += ["mount", "tmpfs", dest, mount.get("source", "tmpfs"), "tmpfs", f"{mflags & ~MS_RDONLY:x}", data]
            if mflags & MS_RDONLY:
                late_remounts += ["remount", dest, f"{mflags | MS_RDONLY:x}"]
        else:
            if os.path.normpath(dest) == "/dev" and mflags & MS_RDONLY:
                raise SandboxError("cove-launch does not support a read-only /dev yet.")
            plan += ["mount", "mkdir", dest, mount.get("source", kind), kind, f"{mflags:x}", data]
    if setup_dev:
        # createDevices: in a user namespace runc bind-mounts the host's nodes.
        for device in linux.get("devices", []):
            plan += ["bind", device["path"], device["path"], f"{MS_BIND:x}"]
        plan += ["symlink", "/dev/ptmx", "pts/ptmx"]  # setupPtmx
        links = [("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                 ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr")]
        if os.path.exists("/proc/kcore"):
            links.append(("/proc/kcore", "/dev/core"))
        for target, link in links:  # setupDevSymlinks
            plan += ["symlink", link, target]
    plan.append("pivot")
    plan += late_remounts  # finalizeRootfs
    if config.get("hostname"):
        plan += ["hostname", config["hostname"]]
    for path in linux.get("readonlyPaths", []):
        plan += ["readonly", path]
    for path in linux.get("maskedPaths", []):
        plan += ["mask", path]
    for rlimit in process.get("rlimits", []):
        plan += ["rlimit", str(_RLIMITS[rlimit["type"]]), str(rlimit["soft"]), str(rlimit["hard"])]
    if process.get("noNewPrivileges"):
        plan.append("nnp")
    plan += ["umask", "022"]  # finalizeRootfs's default
    caps = process.get("capabilities", {})
    plan += ["caps", *(_caps_mask(caps.get(k)) for k in ("bounding", "effective", "permitted", "inheritable",
                                                          "ambient"))]
    plan += ["cwd", process.get("cwd", "/")]
    env = list(process.get("env", []))
    if not any(entry.startswith("HOME=") for entry in env):
        env.append("HOME=/root")  # runc: root's home from the image's /etc/passwd (the init ignores it)
    for entry in env:
        plan += ["env", entry]
    args = process["args"]
    if not args or not args[0].startswith("/"):
        raise SandboxError("cove-launch needs an absolute path for the init.")
    return [*plan, "--", *args]


def _cgroup_mounts(dest: str, mflags: int) -> list[str]:
    """runc 1.1's mountCgroupV1 with a cgroup namespace: a tmpfs, then each v1 hierarchy mounted
    afresh (it shows the container's own cgroup as its root), read-only if the mount says so."""
    if cgroups.is_unified():
        raise SandboxError("cove-launch does not support cgroup v2 hosts yet.")
    plan = ["mount", "tmpfs", dest, "tmpfs", "tmpfs", f"{_DEFAULT_MOUNT_FLAGS:x}", "mode=755"]
    sub_flags = _DEFAULT_MOUNT_FLAGS | (mflags & MS_RDONLY)
    merged = []
    for mount_point, _controllers in v1_hierarchies():
        name = mount_point.name
        source, data = ("systemd", "name=systemd") if name == "systemd" else ("cgroup", name)
        if "," in name:
            merged.append(name)
        plan += ["mount", "mkdir", f"{dest}/{name}", source, "cgroup", f"{sub_flags:x}", data]
    for name in merged:
        for controller in name.split(","):
            plan += ["symlink", f"{dest}/{controller}", name]
    return plan


# -- the runtime -----------------------------------------------------------------------------------
class Launcher:
    """Runc's interface (``run_detached``, ``has_state``, ``delete``, ``list_ids``, ``public``) over
    cove-launch. A container's state is its cgroup plus a marker file in ``state_root`` (which says the
    container is this server's: other servers' containers share the cgroup parent)."""

    needs_gate = False
    """cove-launch opens host paths as host root before it becomes container root: no gate."""

    def __init__(self, state_root: Path, cgroup_parent: str = "/cove", hidden: tuple[Path, ...] = ()) -> None:
        if cgroups.is_unified():
            raise SandboxError("COVE_RUNTIME=cove supports cgroup v1 (hybrid) hosts only for now: the cgroup v2 "
                               "device filter (a BPF program) is not written yet.")
        self.state_root = state_root
        self.cgroup_parent = cgroup_parent
        self._hidden = tuple(str(path) for path in (state_root, *hidden))
        state_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.binary = ensure_binary(LAUNCH_SOURCE, state_root, "cove-launch")
        self._seccomp: dict[str, Path] = {}
        self._seccomp_lock = threading.Lock()

    def _seccomp_file(self, profile: dict[str, Any]) -> Path:
        """The compiled program for ``profile``, written once (starts run in several threads: one
        compiles, under the lock, and the file appears whole, by rename)."""
        key = hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()[:16]
        with self._seccomp_lock:
            path = self._seccomp.get(key)
            if path is None:
                path = self.state_root / f"seccomp-{key}.bpf"
                tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
                try:
                    tmp.write_bytes(compile_seccomp(profile))
                    tmp.replace(path)
                finally:
                    tmp.unlink(missing_ok=True)
                self._seccomp[key] = path
        return path

    def _marker(self, container_id: str) -> Path:
        return self.state_root / f"{container_id}.cgroup"

    def run_detached(self, container_id: str, bundle: Path, control: socket.socket, log: Path) -> int:
        """Starts the container ``bundle/config.json`` describes; its init gets ``control`` as stdin and
        ``log`` as stdout and stderr. Returns the init's host pid. Blocking (a few ms)."""
        config = json.loads((bundle / "config.json").read_text())
        cgroup_path = config["linux"].get("cgroupsPath") or f"{self.cgroup_parent}/{container_id}"
        marker = self._marker(container_id)
        marker.write_text(cgroup_path)
        try:
            return self._launch(config, cgroup_path, control, log)
        except BaseException:
            with contextlib.suppress(Exception):
                kill_cgroup(cgroup_path)
            marker.unlink(missing_ok=True)
            raise

    def _launch(self, config: dict[str, Any], cgroup_path: str, control: socket.socket, log: Path) -> int:
        dirs, unified = create_cgroups_v1(cgroup_path, config["linux"].get("resources", {}))
        profile = config["linux"].get("seccomp")
        seccomp = self._seccomp_file(profile) if profile else None
        read_end, write_end = os.pipe()
        try:
            argv = [str(self.binary), *build_plan(config, dirs, unified, seccomp, write_end)]
            with log.open("ab") as log_handle:
                proc = subprocess.run(argv, stdin=control.fileno(), stdout=log_handle, stderr=log_handle,
                                      pass_fds=(write_end,), check=False)
            os.close(write_end)
            write_end = -1
            with os.fdopen(read_end, "rb") as reader:
                read_end = -1
                result = reader.read().decode(errors="replace").strip()
        finally:
            for fd in (read_end, write_end):
                if fd >= 0:
                    os.close(fd)
        if proc.returncode != 0 or not result.isdigit():
            message = result.removeprefix("error: ") or f"cove-launch exited with status {proc.returncode}"
            raise SandboxError(f"Starting the container failed: {self.public(message)}")
        return int(result)

    def has_state(self, container_id: str) -> bool:
        return self._marker(container_id).exists()

    async def delete(self, container_id: str) -> None:
        """Kills whatever is left of the container and removes its cgroups; absent is fine."""
        marker = self._marker(container_id)
        try:
            cgroup_path = marker.read_text().strip()
        except FileNotFoundError:
            cgroup_path = f"{self.cgroup_parent}/{container_id}"
        await asyncio.to_thread(kill_cgroup, cgroup_path)
        marker.unlink(missing_ok=True)

    async def list_ids(self) -> list[str]:
        """This server's containers that may have a cgroup (crash cleanup at engine start)."""
        return [path.name.removesuffix(".cgroup") for path in self.state_root.glob("*.cgroup")]

    def public(self, message: str) -> str:
        """``message`` as a client may read it (``runc.hide_paths``)."""
        return hide_paths(message, self._hidden)



def resolve_runtime(setting: str) -> Literal["cove", "runc"]:
    """``COVE_RUNTIME`` made definite: ``auto`` is the launcher where it runs (cgroup v1 and hybrid
    hosts), runc on cgroup v2 hosts, where the launcher has no device filter yet."""
    if setting == "auto":
        return "runc" if cgroups.is_unified() else "cove"
    if setting not in ("cove", "runc"):
        raise ValueError(f"not a container runtime: {setting!r}")
    return "cove" if setting == "cove" else "runc"
