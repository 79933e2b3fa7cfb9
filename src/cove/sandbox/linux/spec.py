"""OCI runtime spec (``config.json``) for a Cove container.

Everything that isolates a container is declared here and enforced by its runtime (Cove's launcher,
``launch.py``, or runc; both read this document): namespaces, the user
namespace mapping that keeps container root off host root, capabilities, no_new_privs, seccomp,
masked /proc and /sys paths, cgroup limits and the device list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cove.sandbox.base import SKILLS_DIR
from cove.sandbox.linux.seccomp import seccomp_profile

# Docker's default set without NET_RAW (no raw sockets) and MKNOD (no device nodes).
CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETPCAP", "CAP_SETFCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap", "/proc/interrupts", "/sys/kernel",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/.cove/bin"

_CHAR_DEVICES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                 ("urandom", 1, 9), ("tty", 5, 0)]

COVE_DIR = "/.cove"
"""Where the host's init and busybox appear inside every container (read-only)."""
CA_BUNDLE = "/etc/cove/ca-certificates.crt"
"""Where a container with domain secrets finds the CAs it trusts (its image's and Cove's egress CA)."""


@dataclass(frozen=True)
class ResourceLimits:
    memory_bytes: int
    cpus: float
    pids: int
    nofile: int


@dataclass(frozen=True)
class ContainerSpec:
    rootfs: Path
    hostname: str
    libexec_dir: Path
    limits: ResourceLimits
    cgroup_path: str
    uid_base: int
    args: list[str]
    env: list[str] = field(default_factory=list)
    hosts_file: Path | None = None
    ca_bundle: Path | None = None
    """Trusted CAs including Cove's egress CA, for containers with domain secrets only."""
    host_network: bool = False
    """Share the host's network (image builds only): containers for workloads never do."""
    resolv_conf: Path | None = None
    uid_size: int = 65536
    skills_dir: Path | None = None
    """Bound read-only at ``SKILLS_DIR``: the host directory the container's skills are written to."""


def _mounts(spec: ContainerSpec) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": COVE_DIR, "type": "bind", "source": str(spec.libexec_dir),
         "options": ["rbind", "ro", "nosuid", "nodev"]},
    ]
    if not spec.host_network:
        # sysfs under a user namespace needs its own network namespace; host-network builds skip it.
        mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                       "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    else:
        mounts[5] = {"destination": "/sys", "type": "bind", "source": "/sys",
                     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    for target, source in (("/etc/hosts", spec.hosts_file), ("/etc/resolv.conf", spec.resolv_conf),
                           (CA_BUNDLE, spec.ca_bundle)):
        if source is not None:
            mounts.append({"destination": target, "type": "bind", "source": str(source),
                           "options": ["bind", "ro", "nosuid", "nodev", "noexec"]})
    if spec.skills_dir is not None:
        # A bind of a live directory: skills added while the container runs appear in it at once.
        mounts.append({"destination": SKILLS_DIR, "type": "bind", "source": str(spec.skills_dir),
                       "options": ["rbind", "ro", "nosuid", "nodev"]})
    return mounts


def _resources(limits: ResourceLimits) -> dict[str, Any]:
    period = 100_000
    return {
        "devices": [{"allow": False, "access": "rwm"}]
        + [{"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
           for _, major, minor in _CHAR_DEVICES]
        + [{"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
           {"allow": True, "type": "c", "major": 136, "access": "rwm"}],
        "memory": {"limit": limits.memory_bytes, "swap": limits.memory_bytes},
        "cpu": {"period": period, "quota": max(1000, int(limits.cpus * period))},
        "pids": {"limit": limits.pids},
    }


def build_spec(spec: ContainerSpec) -> dict[str, Any]:
    """The full ``config.json`` document."""
    mapping = [{"containerID": 0, "hostID": spec.uid_base, "size": spec.uid_size}]
    namespaces = [{"type": kind} for kind in ("pid", "ipc", "uts", "mount", "cgroup", "user")]
    if not spec.host_network:
        namespaces.append({"type": "network"})
    caps = list(CAPABILITIES)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": spec.args,
            "env": spec.env or [f"PATH={DEFAULT_PATH}"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": spec.limits.nofile, "soft": spec.limits.nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(spec.rootfs), "readonly": False},
        "hostname": spec.hostname,
        "mounts": _mounts(spec),
        "linux": {
            "uidMappings": mapping,
            "gidMappings": mapping,
            "namespaces": namespaces,
            "cgroupsPath": spec.cgroup_path,
            "resources": _resources(spec.limits),
            "devices": [{"path": f"/dev/{name}", "type": "c", "major": major, "minor": minor,
                         "fileMode": 0o666, "uid": 0, "gid": 0}
                        for name, major, minor in _CHAR_DEVICES],
            "seccomp": seccomp_profile(),
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }
