"""A stand-in internet: one host in a network namespace that the test session creates and removes.

The host is joined to this machine by a veth pair on a /30 inside 198.18.0.0/15 (the block RFC 2544
sets aside for benchmarking, so no real network uses it) and serves HTTP and HTTPS under the test
names below, with a certificate from a test CA. Cove's proxy finds the names through its test-only
mapping (``COVE_EGRESS_TEST_HOSTS``) and trusts the test CA through ``COVE_EGRESS_CA_FILE``. No
traffic goes anywhere but this namespace and loopback.

On the host: a PEP 503 package index with one wheel (``coveprobe``) under ``/simple/``, an npm
registry with one package (``coveprobe``, packument at ``/npm/coveprobe``) and a git repository
served over git's HTTP protocol at ``/repo.git``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import make_wheel

DOMAIN = "cove.test"
NAMES = ("pypi.cove.test", "git.cove.test", "npm.cove.test", "api.cove.test", "other.cove.test",
         "blocked.cove.test", "a.wild.cove.test")
GIT_FILE = "hello from the test repository\n"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for every test name; returns (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("Cove tests internet CA")).issuer_name(
        _name("Cove tests internet CA")).public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(NAMES[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def _site(root: Path) -> None:
    """The files the host serves: a package index and a git repository (dumb HTTP protocol)."""
    filename, wheel = make_wheel("coveprobe", "1.0")
    (root / "packages").mkdir(parents=True)
    (root / "packages" / filename).write_bytes(wheel)
    digest = hashlib.sha256(wheel).hexdigest()
    (root / "simple" / "coveprobe").mkdir(parents=True)
    (root / "simple" / "coveprobe" / "index.html").write_text(
        f'<html><body><a href="../../packages/{filename}#sha256={digest}">{filename}</a></body></html>\n')
    _npm_registry(root / "npm")
    work = root.parent / "repo-work"
    git = ["git", "-c", "user.name=Cove Tests", "-c", "user.email=tests@cove.test", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    (work / "README").write_text(GIT_FILE)
    subprocess.run([*git, "-C", str(work), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "first"], check=True)
    subprocess.run([*git, "clone", "-q", "--bare", str(work), str(root / "repo.git")], check=True)
    subprocess.run(["git", "-C", str(root / "repo.git"), "update-server-info"], check=True)


def _npm_registry(directory: Path) -> None:
    """One package as npm's registry serves it: a packument naming a tarball with its integrity."""
    package = {"name": "coveprobe", "version": "1.0.0", "main": "index.js"}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in (("package/package.json", json.dumps(package).encode()),
                           ("package/index.js", b"module.exports = 'npm ok';\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    tarball = archive.getvalue()
    (directory / "tarballs").mkdir(parents=True)
    (directory / "tarballs" / "coveprobe-1.0.0.tgz").write_bytes(tarball)
    dist = {"tarball": "https://npm.cove.test/npm/tarballs/coveprobe-1.0.0.tgz",
            "shasum": hashlib.sha1(tarball).hexdigest(),
            "integrity": "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()}
    (directory / "coveprobe").write_text(json.dumps({
        "name": "coveprobe", "dist-tags": {"latest": "1.0.0"}, "versions": {"1.0.0": {**package, "dist": dist}}}))


def _remove_stale_namespaces() -> None:
    """Namespaces that earlier test sessions left behind (a crash skips their clean-up)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith("cove-inet-") and name[10:].isdigit() and not Path(f"/proc/{name[10:]}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Internet:
    def __init__(self) -> None:
        _remove_stale_namespaces()
        pid = os.getpid()
        self.netns = f"cove-inet-{pid}"
        self.veth = f"cvi{pid % 100000}h"
        peer = f"cvi{pid % 100000}n"
        subnet = (pid % 16384) * 4  # a /30 per test session inside 198.18.0.0/16
        self.gateway = f"198.18.{subnet >> 8}.{(subnet & 255) + 1}"
        self.address = f"198.18.{subnet >> 8}.{(subnet & 255) + 2}"
        self.dir = Path(tempfile.mkdtemp(prefix="cove-internet-"))
        self.ca, cert, key = make_certificates(self.dir)
        self.requests_log = self.dir / "requests.jsonl"
        self.requests_log.touch()
        _site(self.dir / "www")
        commands = [["ip", "netns", "add", self.netns],
                    ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", peer],
                    ["ip", "link", "set", peer, "netns", self.netns],
                    ["ip", "addr", "add", f"{self.gateway}/30", "dev", self.veth],
                    ["ip", "link", "set", self.veth, "up"],
                    ["ip", "-n", self.netns, "addr", "add", f"{self.address}/30", "dev", peer],
                    ["ip", "-n", self.netns, "link", "set", peer, "up"],
                    ["ip", "-n", self.netns, "link", "set", "lo", "up"]]
        self.proc: subprocess.Popen[str] | None = None
        try:
            for command in commands:
                subprocess.run(command, check=True, capture_output=True)
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, sys.executable, "-m", "tests.internet_host",
                 "--root", str(self.dir / "www"), "--cert", str(cert), "--key", str(key),
                 "--log", str(self.requests_log)], stdout=subprocess.PIPE, text=True,
                cwd=Path(__file__).parent.parent)
            assert self.proc.stdout is not None
            if self.proc.stdout.readline().strip() != "ready":
                raise RuntimeError("the test internet host did not start")
        except BaseException:
            self.close()
            raise

    @property
    def test_hosts(self) -> str:
        """The value for ``COVE_EGRESS_TEST_HOSTS``: every test name leads to this host."""
        return ",".join(f"{name}={self.address}" for name in NAMES)

    def server_env(self) -> dict[str, str]:
        return {"COVE_EGRESS_TEST_HOSTS": self.test_hosts, "COVE_EGRESS_CA_FILE": str(self.ca)}

    def requests(self) -> list[dict[str, Any]]:
        """Every request the host has received, oldest first."""
        return [json.loads(line) for line in self.requests_log.read_text().splitlines()]

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)  # takes the veth pair along
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
