"""Which domains a container may reach, in the shape of OpenAI's ``network_policy``.

Matching rules (the same everywhere a name is compared, so the allowlist and the proxy agree):

* names are case-insensitive, one trailing dot is ignored and Unicode names are IDNA-encoded
  (``bücher.example`` and ``xn--bcher-kva.example`` are the same entry);
* ``api.example.com`` matches exactly that name, never its parent or its subdomains;
* ``*.example.com`` matches subdomains at any depth (``a.example.com``, ``a.b.example.com``) but not
  ``example.com`` itself, as Envoy's and most egress proxies' wildcards do; list both to allow both.
  The ``*`` must be the whole leftmost label and at least two labels must follow it, so ``*.com``
  cannot open a whole top-level domain;
* IP literals are never entries: a container names what it reaches, and addresses are checked
  separately (see ``resolver.py``).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cove.errors import InvalidRequest

MAX_DOMAINS = 256
MAX_SECRETS = 64
MAX_SECRET_BYTES = 16 * 1024
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def is_ip_literal(host: str) -> bool:
    """True for anything a resolver would read as an address, including ``127.1`` and ``0x7f000001``."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
        return True
    except ValueError:
        pass
    if bare and not any(ch.isspace() for ch in bare):
        try:
            socket.inet_aton(bare)  # the C parser getaddrinfo uses: hex, octal and short forms
            return True
        except (OSError, ValueError):  # ValueError: a NUL, which no address or name contains
            pass
    return bare.rstrip(".").rpartition(".")[2].isdigit()  # no top-level domain is numeric


def normalize_host(host: str) -> str:
    """The canonical ASCII form of a host name; ValueError says why ``host`` is not one."""
    name = host[:-1] if host.endswith(".") else host
    if not name or is_ip_literal(name):
        raise ValueError("not a domain name")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError("not a valid internationalized domain name") from exc
    name = name.lower()
    if len(name) > 253:
        raise ValueError("longer than 253 characters")
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            raise ValueError(f"invalid label {label!r}")
    return name


def normalize_pattern(entry: str) -> str:
    """An allowlist entry in canonical form: an exact name or ``*.`` followed by one."""
    if entry.startswith("*."):
        suffix = normalize_host(entry[2:])
        if suffix.count(".") < 1:
            raise ValueError("a wildcard needs at least two labels after '*.'")
        return "*." + suffix
    if "*" in entry:
        raise ValueError("'*' is only allowed as the whole leftmost label, as in *.example.com")
    return normalize_host(entry)


def new_placeholder() -> str:
    """An opaque stand-in for a secret: all the container and the model ever see of it."""
    return f"cove_secret_{secrets.token_hex(20)}"


@dataclass(frozen=True)
class DomainSecret:
    """A secret the proxy substitutes for ``placeholder`` in HTTPS requests to ``domain``.

    ``domain`` is an allowlist pattern (exact or ``*.``); neither value nor placeholder ever prints.
    """

    domain: str
    name: str
    value: str = field(repr=False)
    placeholder: str = field(default_factory=new_placeholder, repr=False)

    def applies_to(self, host: str) -> bool:
        """Whether a request to ``host`` (a normalized name) gets this secret."""
        if self.domain.startswith("*."):
            return host.endswith(self.domain[1:])
        return host == self.domain


@dataclass(frozen=True)
class EgressPolicy:
    """The domains a client may reach; entries are normalized on construction."""

    allowed_domains: tuple[str, ...]
    domain_secrets: tuple[DomainSecret, ...] = ()
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _suffixes: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        entries: list[str] = []
        for index, entry in enumerate(self.allowed_domains):
            try:
                entries.append(normalize_pattern(entry))
            except ValueError as exc:
                raise InvalidRequest(f"Invalid domain {entry!r}: {exc}",
                                     param=f"network_policy.allowed_domains[{index}]") from exc
        normalized = tuple(dict.fromkeys(entries))
        object.__setattr__(self, "allowed_domains", normalized)
        object.__setattr__(self, "_exact", frozenset(e for e in normalized if not e.startswith("*.")))
        object.__setattr__(self, "_suffixes", tuple(e[1:] for e in normalized if e.startswith("*.")))

    def allows(self, host: str) -> bool:
        try:
            name = normalize_host(host)
        except ValueError:
            return False
        return name in self._exact or any(name.endswith(suffix) for suffix in self._suffixes)

    def secrets_for(self, host: str) -> tuple[DomainSecret, ...]:
        """The secrets for ``host`` (a normalized name): the proxy intercepts its TLS only if any."""
        return tuple(secret for secret in self.domain_secrets if secret.applies_to(host))


def parse_network_policy(data: Any, param: str = "network_policy") -> EgressPolicy | None:
    """Validate an OpenAI ``network_policy`` object: None means ``disabled`` (no network at all)."""
    if not isinstance(data, Mapping):
        raise InvalidRequest("network_policy must be an object", param=param)
    kind = data.get("type")
    if kind == "disabled":
        _no_extra_keys(data, {"type"}, param)
        return None
    if kind != "allowlist":
        raise InvalidRequest("network_policy.type must be 'disabled' or 'allowlist'", param=f"{param}.type")
    _no_extra_keys(data, {"type", "allowed_domains", "domain_secrets"}, param)
    domains = data.get("allowed_domains")
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise InvalidRequest("allowed_domains must be a list of strings", param=f"{param}.allowed_domains")
    if not 1 <= len(domains) <= MAX_DOMAINS:
        raise InvalidRequest(f"allowed_domains must list 1 to {MAX_DOMAINS} domains",
                             param=f"{param}.allowed_domains")
    for index, domain in enumerate(domains):
        if is_ip_literal(domain.strip("[]")):
            raise InvalidRequest(f"IP addresses are not allowed in allowed_domains: {domain!r}",
                                 param=f"{param}.allowed_domains[{index}]")
    policy = EgressPolicy(tuple(domains))
    parsed: dict[str, DomainSecret] = {}
    for index, item in enumerate(_secret_list(data.get("domain_secrets"), param)):
        secret = _parse_secret(item, policy, f"{param}.domain_secrets[{index}]")
        if secret.name in parsed:  # each becomes an environment variable of that name
            raise InvalidRequest(f"two domain secrets are named {secret.name!r}",
                                 param=f"{param}.domain_secrets[{index}].name")
        parsed[secret.name] = secret
    return EgressPolicy(policy.allowed_domains, tuple(parsed.values()))


def _no_extra_keys(data: Mapping[str, Any], allowed: set[str], param: str) -> None:
    for key in data:
        if key not in allowed:
            raise InvalidRequest(f"Unknown field {key!r} in network_policy", param=f"{param}.{key}")


def _secret_list(value: Any, param: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_SECRETS:
        raise InvalidRequest(f"domain_secrets must be a list of at most {MAX_SECRETS} objects",
                             param=f"{param}.domain_secrets")
    return value


def _parse_secret(item: Any, policy: EgressPolicy, param: str) -> DomainSecret:
    if not isinstance(item, Mapping) or set(item) != {"domain", "name", "value"}:
        raise InvalidRequest("a domain secret is an object with domain, name and value", param=param)
    domain, name, value = item["domain"], item["name"], item["value"]
    if not all(isinstance(v, str) for v in (domain, name, value)):
        raise InvalidRequest("domain, name and value must be strings", param=param)
    try:
        domain = normalize_pattern(domain)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid domain {domain!r}: {exc}", param=f"{param}.domain") from exc
    if domain not in policy.allowed_domains and not policy.allows(domain.removeprefix("*.")):
        raise InvalidRequest(f"{domain!r} is not in allowed_domains", param=f"{param}.domain")
    if not _SECRET_NAME.fullmatch(name):
        raise InvalidRequest("a secret name is letters, digits and '_', not starting with a digit",
                             param=f"{param}.name")
    if not value or len(value.encode()) > MAX_SECRET_BYTES:
        raise InvalidRequest(f"a secret value must be 1 to {MAX_SECRET_BYTES} bytes", param=f"{param}.value")
    if any(not ch.isprintable() for ch in value):
        # It goes into HTTP header lines: a line break would let it forge headers or requests.
        raise InvalidRequest("a secret value may not contain control characters or line breaks",
                             param=f"{param}.value")
    return DomainSecret(domain, name, value)
