"""Cove's own certificate authority, for the only TLS the egress proxy opens: to swap in domain secrets.

The proxy must read a request to put a secret into it, so for a secret's domain it ends the
container's TLS itself, with a certificate for that name signed by this CA, and opens its own TLS to
the real server (verified against the host's trust store). One CA per install, made on first use;
only containers that hold domain secrets are told to trust it (see ``LinuxSandbox``), so interception
is never possible for a container that did not ask for secrets.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 7
LEAF_RENEW = datetime.timedelta(days=1)
MAX_LEAVES = 4096
_CLOCK_SKEW = datetime.timedelta(hours=1)
_ALPN = ["http/1.1"]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only until it is renamed in place."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@dataclass
class _Leaf:
    context: ssl.SSLContext
    not_after: datetime.datetime


class CertificateAuthority:
    """Loads (or creates) the CA in ``directory`` and mints server certificates for host names."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        key_path, cert_path = directory / "ca.key", directory / "ca.pem"
        if not (key_path.exists() and cert_path.exists()):
            self._create(key_path, cert_path)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC private key")
        self._key = key
        self.cert_pem = cert_path.read_bytes()
        self._cert = x509.load_pem_x509_certificate(self.cert_pem)
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._leaf_key_pem = self._leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        self._leaves: dict[str, _Leaf] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _create(key_path: Path, cert_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cove"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"Cove egress CA ({os.uname().nodename})")])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _CLOCK_SKEW).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()), 0o600)
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def server_context(self, host: str) -> ssl.SSLContext:
        """A TLS server context presenting a certificate for ``host`` (a normalized name), cached a day."""
        with self._lock:
            leaf = self._leaves.get(host)
            if leaf is None or leaf.not_after - _now() < LEAF_RENEW:
                if len(self._leaves) >= MAX_LEAVES:
                    self._leaves.clear()
                leaf = self._leaves[host] = self._mint(host)
            return leaf.context

    def _mint(self, host: str) -> _Leaf:
        now = _now()
        not_after = now + datetime.timedelta(days=LEAF_DAYS)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
                .issuer_name(self._cert.subject).public_key(self._leaf_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _CLOCK_SKEW).not_valid_after(not_after)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                               critical=False)
                .sign(self._key, hashes.SHA256()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(_ALPN)
        # load_cert_chain reads files only: write the chain to a private file that is gone at once.
        with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".leaf-", suffix=".pem") as chain:
            chain.write(cert.public_bytes(serialization.Encoding.PEM) + self._leaf_key_pem)
            chain.flush()
            context.load_cert_chain(chain.name)
        return _Leaf(context, not_after)


def upstream_context(extra_ca_file: str | None = None) -> ssl.SSLContext:
    """The proxy's TLS client context: the host's trust store (plus ``extra_ca_file``), HTTP/1.1 only."""
    context = ssl.create_default_context()
    if extra_ca_file:
        context.load_verify_locations(cafile=extra_ca_file)
    context.set_alpn_protocols(_ALPN)
    return context
