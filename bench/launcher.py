"""cove-launch against ``runc run --detach``: the same Cove container config (``spec.build_spec``),
started by each runtime's ``run_detached`` (the call ``container.py`` makes), alternating A/B.

Each sample: wall time from the call to the init's pid, and the CPU it cost: this process's own
(``Launcher`` creates cgroups and builds its plan in Python), the runtime's processes once reaped
(``RUSAGE_CHILDREN``), and what the container's cgroup has used so far (``cpuacct.usage``: the
setup both runtimes do inside the new init before it execs cove-init). runc's nsexec stages are in
the container's cgroup and in runc's reaped children, so they count twice (a C bootstrap, well
under a millisecond). Untimed between samples: the init is stopped (its control socket closed),
reaped, and the runtime's delete removes its cgroups.

    .venv/bin/python bench/launcher.py [--samples 40]       # root; the "default" image (make image)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import floor

from cove.sandbox.linux.initbin import ensure_init_binary
from cove.sandbox.linux.launch import Launcher
from cove.sandbox.linux.runc import Runc
from cove.sandbox.linux.spec import DEFAULT_PATH, ContainerSpec, ResourceLimits, build_spec

IMAGES = Path(os.environ.get("COVE_IMAGES_DIR", "/var/lib/cove/images"))
_PR_SET_CHILD_SUBREAPER = 36


def _cpu_self_children() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _cgroup_cpu(cgroup_path: str) -> float:
    try:
        return int(Path(f"/sys/fs/cgroup/cpuacct{cgroup_path}/cpuacct.usage").read_text()) / 1e9
    except FileNotFoundError:
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--warm", type=int, default=3)
    args = parser.parse_args()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # we reap the inits
    manifest = json.loads((IMAGES / "manifests" / "default.json").read_text())
    layers = [IMAGES / "layers" / digest for digest in manifest["layers"]]
    state = Path(tempfile.mkdtemp(prefix="cove-bench-launch-", dir="/var/tmp"))
    runtimes: dict[str, Runc | Launcher] = {
        "runc": Runc(state / "runc"),
        "cove-launch": Launcher(state / "launch"),
    }
    wall: dict[str, list[float]] = {name: [] for name in runtimes}
    cpu: dict[str, list[float]] = {name: [] for name in runtimes}
    try:
        with floor.bundle(layers) as bundle:
            directory = bundle.directory
            libexec = directory / "libexec"
            init = ensure_init_binary(libexec)
            libexec.chmod(0o755)
            (directory / "skills").mkdir(mode=0o755)
            (directory / "hosts").write_text("127.0.0.1\tlocalhost\n")
            for i in range(args.warm + args.samples):
                for name, runtime in runtimes.items():
                    container_id = f"bench-{name}-{i}"
                    spec = ContainerSpec(
                        rootfs=bundle.rootfs, hostname=container_id, libexec_dir=libexec,
                        limits=ResourceLimits(memory_bytes=1 << 30, cpus=1.0, pids=1024, nofile=4096),
                        cgroup_path=f"/cove-bench/{container_id}", uid_base=floor.ID_BASE,
                        args=[f"/.cove/{init.name}", "0"], env=[f"PATH={DEFAULT_PATH}"],
                        hosts_file=directory / "hosts", skills_dir=directory / "skills")
                    (directory / "config.json").write_text(json.dumps(build_spec(spec)))
                    host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                    cpu0 = _cpu_self_children()
                    started = time.perf_counter()
                    pid = runtime.run_detached(container_id, directory, child_end, directory / "init.log")
                    elapsed = time.perf_counter() - started
                    used = _cpu_self_children() - cpu0 + _cgroup_cpu(spec.cgroup_path)
                    child_end.close()
                    host_end.close()  # the init exits when the host's end closes
                    os.waitpid(pid, 0)
                    asyncio.run(runtime.delete(container_id))
                    if i >= args.warm:
                        wall[name].append(elapsed * 1000)
                        cpu[name].append(used * 1000)
    finally:
        shutil.rmtree(state, ignore_errors=True)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            with contextlib.suppress(OSError):
                (hierarchy / "cove-bench").rmdir()
    print(f"{'runtime':12s} {'n':>4s} {'wall p50':>9s} {'wall p90':>9s} {'cpu p50':>8s}   (ms)")
    for name in runtimes:
        samples = sorted(wall[name])
        print(f"{name:12s} {len(samples):4d} {statistics.median(samples):9.2f} "
              f"{samples[int(len(samples) * 0.9)]:9.2f} {statistics.median(cpu[name]):8.2f}")


if __name__ == "__main__":
    main()
