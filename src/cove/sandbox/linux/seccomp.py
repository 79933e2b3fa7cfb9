"""The seccomp profile every container gets.

A deny list on top of the capability drop and user namespace: it removes the kernel surfaces a
sandboxed workload never needs and that most container escapes start from (mounting, namespace
games, module and kexec loading, bpf, perf, keyrings, userfaultfd, io_uring, clock and host
administration). ``clone3`` answers ENOSYS so libc falls back to ``clone``, whose flags can be
inspected. ``socket(AF_VSOCK)`` is refused as Docker refuses it: vsock is not network-namespaced,
so it would reach the hypervisor host around the egress proxy. ``socketcall`` (32-bit x86's way to
make sockets, whose arguments a filter cannot read) is refused with it.
"""

from __future__ import annotations

from typing import Any

EPERM = 1
ENOSYS = 38
EAFNOSUPPORT = 97
AF_VSOCK = 40

DENIED_SYSCALLS = (
    "acct", "add_key", "bpf", "delete_module", "finit_module", "fsconfig", "fsmount", "fsopen",
    "fspick", "init_module", "io_uring_enter", "io_uring_register", "io_uring_setup", "ioperm",
    "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount",
    "mount_setattr", "move_mount", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
    "open_tree", "perf_event_open", "pivot_root", "quotactl", "quotactl_fd", "reboot",
    "request_key", "setns", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "stime", "swapoff", "swapon", "syslog", "umount", "umount2", "unshare", "uselib",
    "userfaultfd", "vhangup", "_sysctl", "create_module", "get_kernel_syms", "query_module",
)

# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
NAMESPACE_CLONE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                         0x40000000, 0x00000080)


def seccomp_profile() -> dict[str, Any]:
    """OCI ``linux.seccomp`` section."""
    clone_rules = [
        {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
         "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]}
        for flag in NAMESPACE_CLONE_FLAGS
    ]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": EAFNOSUPPORT,
             "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_EQ"}]},
            {"names": ["socketcall"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            *clone_rules,
        ],
    }
