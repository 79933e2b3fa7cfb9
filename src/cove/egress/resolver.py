"""Name resolution for the egress proxy, refusing any answer that points inside.

An allowlisted name is not enough: its DNS can answer with ``127.0.0.1``, ``169.254.169.254`` or the
host's own address (DNS rebinding). So every address a name resolves to is checked, one bad answer
refuses the whole name, and the proxy connects to an address it checked, never to the name again.

The static ``hosts`` mapping exists for tests only: its answers are trusted (not checked), because
test servers live on loopback or in test network namespaces. Cove loads it from
``COVE_EGRESS_TEST_HOSTS`` (``name=ip,name=ip``; see ``parse_test_hosts``); production leaves it empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cove.egress.policy import is_ip_literal, normalize_host

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """The destination may not be reached; ``status`` is the HTTP status the proxy answers with."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), which is where it leads."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _kind(address: IPAddress, forbidden: Iterable[str]) -> str | None:
    """What makes ``address`` internal, or None for a public address."""
    if any(address in ipaddress.ip_network(entry, strict=False) for entry in forbidden):
        return "Cove's own"
    checks = [("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("carrier-grade NAT", address in _CGNAT), ("reserved", address.is_reserved),
              ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
              ("private", address.is_private), ("non-public", not address.is_global)]
    return next((kind for kind, hit in checks if hit), None)


def check_address(ip: str, forbidden: Iterable[str] = ()) -> str | None:
    """Why ``ip`` may not be connected to, or None when it is a public address."""
    try:
        address: IPAddress = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return f"{ip!r} is not an IP address"
    if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_ipv4(address)) is not None:
        # Where it leads decides: ::ffff:10.0.0.1 is 10.0.0.1, and ::ffff:<public> is as public as <public>.
        own = any(address in ipaddress.ip_network(entry, strict=False) for entry in forbidden)
        kind = "Cove's own" if own else _kind(inner, forbidden)
        return f"{address}, which leads to {inner}, a {kind} address" if kind else None
    kind = _kind(address, forbidden)
    return f"{address}, a {kind} address" if kind else None


def host_addresses() -> list[str]:
    """Every address of this host's interfaces: no name may lead a client (a container's proxy, a page
    read) back onto the host, whose public address reaches Cove's API and whatever else listens."""
    found: set[str] = set()
    with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
        listing = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True, timeout=5).stdout
        found.update(info["local"] for link in json.loads(listing) for info in link.get("addr_info", [])
                     if "local" in info)
    with contextlib.suppress(OSError):
        found.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None))
    return sorted(found)


def parse_test_hosts(text: str) -> dict[str, str]:
    """``allowed.test=127.0.0.1,other.test=::1`` as a mapping; for tests only (answers are trusted)."""
    hosts: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, ip = item.partition("=")
        if not sep:
            raise ValueError(f"expected name=ip, got {item!r}")
        hosts[normalize_host(name.strip())] = str(ipaddress.ip_address(ip.strip()))
    return hosts


@dataclass(frozen=True)
class Resolution:
    addresses: tuple[str, ...]
    trusted: bool
    """True when the answer came from the test mapping and was not checked."""


class Resolver:
    """Resolves a destination name to addresses that are all safe to connect to (or raises Refused)."""

    def __init__(self, hosts: Mapping[str, str] | None = None, forbidden: Iterable[str] = (),
                 timeout: float = 5.0) -> None:
        self.hosts = {normalize_host(name): str(ipaddress.ip_address(ip)) for name, ip in (hosts or {}).items()}
        self.forbidden = tuple(str(ipaddress.ip_network(entry, strict=False)) for entry in forbidden)
        self.timeout = timeout

    async def resolve(self, host: str, port: int) -> Resolution:
        if is_ip_literal(host):
            raise Refused("raw IP addresses are not allowed")
        try:
            name = normalize_host(host)
        except ValueError as exc:
            raise Refused(f"invalid host name: {exc}", 400) from exc
        if name in self.hosts:
            return Resolution((self.hosts[name],), trusted=True)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except TimeoutError as exc:
            raise Refused(f"resolving {name} timed out", 504) from exc
        except OSError as exc:
            raise Refused(f"cannot resolve {name}", 502) from exc
        addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise Refused(f"cannot resolve {name}", 502)
        for address in addresses:
            reason = check_address(address, self.forbidden)
            if reason is not None:
                raise Refused(f"{name} resolves to {reason}")
        return Resolution(addresses, trusted=False)
