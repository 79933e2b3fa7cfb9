"""Cove's own requests to addresses someone else chose (page reads, webhook deliveries): resolved and
checked as the egress proxy checks a container's, then sent to the address that was checked.

A URL given by a model or a tenant is hostile: its name may resolve to loopback, a private network or
this host (DNS rebinding included), and Cove would carry the request inside. So the name is resolved
once, every answer is checked (``cove.egress.resolver``), and the connection goes to a checked address
with the name as ``Host`` and TLS server name, never to the name again. Only a name the operator wrote
exactly may resolve to a private address (an intranet service), and even then never to this host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import httpx

from cove.egress.resolver import Refused, Resolver


async def checked_addresses(resolver: Resolver, host: str, port: int, *, named_exactly: bool) -> tuple[str, ...]:
    """The addresses ``host`` may be reached at; raises ``Refused`` (with a reason a client may read).

    ``.invalid`` names never resolve (RFC 6761 asks resolvers to answer them at once, without a query)."""
    if (host == "invalid" or host.endswith(".invalid")) and host not in resolver.hosts:
        raise Refused(f"cannot resolve {host}", 502)
    if not named_exactly or host in resolver.hosts:
        return (await resolver.resolve(host, port)).addresses
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(resolver.timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, TimeoutError):
        raise Refused(f"cannot resolve {host}", 502) from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise Refused(f"cannot resolve {host}", 502)
    if any(on_this_host(address, resolver.forbidden) for address in addresses):
        raise Refused(f"{host} resolves to an address of this server")
    return addresses


def on_this_host(address: str, own: tuple[str, ...]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_loopback or ip.is_unspecified or any(ip in ipaddress.ip_network(net) for net in own)


def pinned_request(client: httpx.AsyncClient, method: str, url: str, host: str, port: int, address: str,
                   **kwargs: Any) -> httpx.Request:
    """A request for ``url`` that connects to ``address``, with ``host`` as its Host header and TLS name.

    The client must not keep connections alive: a pooled connection is keyed by address, and one
    verified for one name must never carry a request for another name that shares the address."""
    target = httpx.URL(url)
    authority = host if port == (443 if target.scheme == "https" else 80) else f"{host}:{port}"
    headers = {**kwargs.pop("headers", {}), "Host": authority}
    return client.build_request(method, target.copy_with(host=address), headers=headers,
                                extensions={"sni_hostname": host}, **kwargs)
