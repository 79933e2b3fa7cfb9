"""What a container sees, started by runc and by cove-launch from the same Cove config: mounts, cgroups,
credentials, capabilities, seccomp, limits, /dev, and privileged operations that must fail. Prints a
diff of the two (timestamps and per-run paths normalised); an empty diff means the same view.

    .venv/bin/python bench/launcher_probe.py        # root; the "default" image (make image)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import difflib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import floor

from cove.sandbox.linux.launch import Launcher
from cove.sandbox.linux.runc import Runc
from cove.sandbox.linux.spec import DEFAULT_PATH, ContainerSpec, ResourceLimits, build_spec

IMAGES = Path(os.environ.get("COVE_IMAGES_DIR", "/var/lib/cove/images"))
PROBE = r"""
echo "== mountinfo"; cut -d' ' -f4- /proc/self/mountinfo
echo "== cgroup"; cat /proc/self/cgroup
echo "== status"; grep -E '^(Uid|Gid|Groups|Cap|NoNewPrivs|Seccomp|SigBlk|SigIgn)' /proc/self/status
grep -E '^(SigBlk|SigIgn)' /proc/1/status
echo "== maps"; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups
echo "== limits"; grep -i "open files" /proc/self/limits; umask; hostname
echo "== env"; env | sort
echo "== dev"; ls -la /dev /dev/pts /dev/mqueue /sys/fs/cgroup | sed 's/ [A-Z][a-z][a-z] [ 0-9]* [0-9:]* / /'
echo "== cgroupfs"; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes \
  /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us
sort /sys/fs/cgroup/devices/devices.list
echo "== network"; cat /proc/net/dev | cut -d: -f1 | tail -n +3; ip -o link 2>/dev/null | cut -d' ' -f2,3
echo "== refused"
(echo 1 > /proc/sys/kernel/domainname) 2>/dev/null && echo "procsys writable"
head -c 1 /proc/kcore >/dev/null 2>&1 && echo "kcore readable"
unshare -U true 2>/dev/null && echo "unshare worked"
mknod /tmp/probe-node c 1 3 2>/dev/null && echo "mknod worked"
mount -t tmpfs none /mnt 2>/dev/null && echo "mount worked"
echo b > /proc/sysrq-trigger 2>/dev/null && echo "sysrq writable"
echo "== end"
"""


def _start(runtime: Runc | Launcher, container_id: str, directory: Path, log: Path) -> None:
    host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = runtime.run_detached(container_id, directory, child_end, log)
    child_end.close()
    os.waitpid(pid, 0)  # the probe runs to its end as the init
    host_end.close()
    asyncio.run(runtime.delete(container_id))


def main() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: we reap the inits
    manifest = json.loads((IMAGES / "manifests" / "default.json").read_text())
    layers = [IMAGES / "layers" / digest for digest in manifest["layers"]]
    state = Path(tempfile.mkdtemp(prefix="cove-bench-probe-", dir="/var/tmp"))
    views = {}
    try:
        for name, runtime in (("runc", Runc(state / "runc")), ("cove-launch", Launcher(state / "launch"))):
            with floor.bundle(layers) as bundle:
                directory = bundle.directory
                (directory / "libexec").mkdir(mode=0o755)
                (directory / "skills").mkdir(mode=0o755)
                (directory / "hosts").write_text("127.0.0.1\tlocalhost\n")
                spec = ContainerSpec(
                    rootfs=bundle.rootfs, hostname="probe", libexec_dir=directory / "libexec",
                    limits=ResourceLimits(memory_bytes=1 << 30, cpus=1.0, pids=1024, nofile=4096),
                    cgroup_path="/cove-bench/probe", uid_base=floor.ID_BASE, args=["/bin/sh", "-c", PROBE],
                    env=[f"PATH={DEFAULT_PATH}"], hosts_file=directory / "hosts", skills_dir=directory / "skills")
                (directory / "config.json").write_text(json.dumps(build_spec(spec)))
                _start(runtime, "probe", directory, directory / "init.log")
                text = (directory / "init.log").read_text()
                views[name] = re.sub(r"cove-bench-floor-[^/ ]+", "<bundle>", text).splitlines()
    finally:
        shutil.rmtree(state, ignore_errors=True)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            with contextlib.suppress(OSError):
                (hierarchy / "cove-bench").rmdir()
    print("\n".join(views["runc"]))
    diff = list(difflib.unified_diff(views["runc"], views["cove-launch"], "runc", "cove-launch", lineterm=""))
    print("\n".join(diff) if diff else "\n== the same view under both runtimes")


if __name__ == "__main__":
    main()
