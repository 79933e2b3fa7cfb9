"""Page reads for the online engines: through an egress policy of their own, then the main text.

The URL comes from a search result or from the model, so it is hostile: a read may only reach what
the operator allows (``COVE_WEB_READ_DOMAINS``), on the egress ports, at addresses the egress
proxy's own checks pass (``cove.egress.resolver``: no loopback, private, link-local or this host's
addresses, however the name resolves). The connection goes to the address that was checked, never
to the name again (no DNS rebinding between check and connect), with TLS verified for the name.
Every redirect is a new read, checked the same way; ``domains`` (``filters.allowed_domains``)
narrows each hop. Size and time are bounded, and the body is extracted to text
(``cove.search.extract``) in a worker thread.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from cove.config import Settings, parse_size
from cove.egress.outbound import checked_addresses, pinned_request
from cove.egress.policy import EgressPolicy, is_ip_literal, normalize_host
from cove.egress.resolver import Refused, Resolver, host_addresses, parse_test_hosts
from cove.egress.tls import upstream_context
from cove.search.base import Page, SearchFailed, SearchNotConfigured
from cove.search.extract import Unreadable, extract, kind_of
from cove.search.text import MAX_TITLE, in_domains, page_text, plain, web_url

MAX_REDIRECTS = 5
USER_AGENT = "Mozilla/5.0 (compatible; Cove web_search)"


@dataclass(frozen=True)
class ReadPolicy:
    """What page reads may reach: ``COVE_WEB_READ_DOMAINS`` and the egress ports."""

    any_name: bool
    """``*`` was listed: any name with public addresses."""
    names: EgressPolicy
    """The listed names and ``*.`` patterns."""
    ports: tuple[int, ...]
    max_bytes: int
    timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadPolicy:
        entries = [entry.strip() for entry in settings.web_read_domains.split(",") if entry.strip()]
        try:
            names = EgressPolicy(tuple(entry for entry in entries if entry != "*"))
        except ValueError as exc:
            raise SearchNotConfigured(f"COVE_WEB_READ_DOMAINS: {exc}") from None
        return cls("*" in entries, names, tuple(settings.egress_port_list), parse_size(settings.web_read_max),
                   settings.web_read_timeout)

    def allows(self, host: str) -> bool:
        return self.any_name or self.names.allows(host)

    def named_exactly(self, host: str) -> bool:
        """An exact entry may resolve inside (an intranet wiki the operator named); ``*`` never does."""
        return host in self.names.allowed_domains


class PageReader:
    """Reads pages under one policy; one per server (``Engines`` shares it among the online engines),
    safe to use from many tasks at once."""

    def __init__(self, policy: ReadPolicy, resolver: Resolver, context: ssl.SSLContext | None = None) -> None:
        self.policy = policy
        self.resolver = resolver
        # No keep-alive: a pooled connection is keyed by address, and one verified for one name must
        # never carry a request for another name that happens to share the address.
        self.client = httpx.AsyncClient(
            verify=context or upstream_context(), trust_env=False, follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0), timeout=httpx.Timeout(policy.timeout),
            headers={"User-Agent": USER_AGENT, "Accept": "text/html,application/xhtml+xml,text/plain,"
                     "text/markdown,application/pdf;q=0.9,*/*;q=0.1"})

    @classmethod
    def from_settings(cls, settings: Settings) -> PageReader:
        resolver = Resolver(hosts=parse_test_hosts(settings.egress_test_hosts), forbidden=host_addresses())
        extra_ca = str(settings.egress_ca_file) if settings.egress_ca_file else None
        return cls(ReadPolicy.from_settings(settings), resolver, upstream_context(extra_ca))

    async def read(self, url: str, domains: tuple[str, ...] = ()) -> Page:
        try:
            async with asyncio.timeout(self.policy.timeout):
                final, content_type, body, cut = await self._fetch(url, domains)
        except TimeoutError:
            raise SearchFailed(f"Reading {_shown(url)} took longer than {self.policy.timeout:g} s.") from None
        kind = kind_of(urlsplit(final).path, content_type)
        if kind is None:
            raise SearchFailed(f"{_shown(final)} is {plain(content_type, 100) or 'of an unknown type'}, not a page "
                               "that can be read as text.")
        if cut and kind == "pdf":
            raise SearchFailed(f"{_shown(final)} is a PDF larger than {self.policy.max_bytes} bytes.")
        try:
            doc = await asyncio.to_thread(extract, body, kind, final)
        except Unreadable as exc:
            raise SearchFailed(f"{_shown(final)} could not be read: {exc}.") from None
        return Page(final, plain(doc.title, MAX_TITLE), page_text(doc.text))

    async def _fetch(self, url: str, domains: tuple[str, ...]) -> tuple[str, str, bytes, bool]:
        """The final URL, its media type, the body (at most ``max_bytes``) and whether it was cut."""
        for _ in range(MAX_REDIRECTS + 1):
            host, port = self._check(url, domains)
            response = await self._request(url, host, port)
            try:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    url = urljoin(url, location)
                    continue
                if response.status_code >= 400:
                    raise SearchFailed(f"{_shown(url)} answered HTTP {response.status_code}.")
                body, cut = await self._body(response)
                return url, response.headers.get("content-type", ""), body, cut
            finally:
                await response.aclose()
        raise SearchFailed(f"{_shown(url)} redirected more than {MAX_REDIRECTS} times.")

    def _check(self, url: str, domains: tuple[str, ...]) -> tuple[str, int]:
        """The normalized host and port of ``url``, if policy and ``domains`` allow it."""
        if web_url(url) is None:
            raise SearchFailed(f"{_shown(url)} is not an http(s) URL.")
        parts = urlsplit(url)
        raw_host = parts.hostname or ""
        if is_ip_literal(raw_host):
            raise SearchFailed(f"{_shown(url)} names an IP address; pages are read by name only.")
        try:
            host = normalize_host(raw_host)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise SearchFailed(f"{_shown(url)} has an invalid host or port.") from None
        if not in_domains(url, domains):
            raise SearchFailed(f"{host} is outside the allowed domains ({', '.join(domains)}).")
        if not self.policy.allows(host):
            raise SearchFailed(f"Reading pages from {host} is not allowed by this server's policy.")
        if port not in self.policy.ports:
            raise SearchFailed(f"Port {port} is not allowed for page reads (allowed: "
                               f"{', '.join(map(str, self.policy.ports))}).")
        return host, port

    async def _addresses(self, host: str, port: int) -> tuple[str, ...]:
        try:
            return await checked_addresses(self.resolver, host, port, named_exactly=self.policy.named_exactly(host))
        except Refused as exc:
            if exc.reason.endswith("an address of this server"):
                raise SearchFailed(f"{exc.reason}.") from None
            raise SearchFailed(f"Reading {host} was refused: {exc.reason}.") from None

    async def _request(self, url: str, host: str, port: int) -> httpx.Response:
        failure = "no address"
        for address in await self._addresses(host, port):
            request = pinned_request(self.client, "GET", url, host, port, address)
            try:
                return await self.client.send(request, stream=True)
            except httpx.TimeoutException:
                raise SearchFailed(f"{host} did not answer in time.") from None
            except httpx.HTTPError as exc:
                failure = type(exc).__name__
        raise SearchFailed(f"Could not connect to {host} ({failure}).")

    async def _body(self, response: httpx.Response) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > self.policy.max_bytes:
                    return b"".join(chunks)[: self.policy.max_bytes], True
        except httpx.HTTPError:
            raise SearchFailed(f"The connection to {response.request.headers.get('host')} broke off.") from None
        return b"".join(chunks), False

    async def aclose(self) -> None:
        await self.client.aclose()


def _shown(url: str) -> str:
    """A URL as an error message may show it: bounded, printable."""
    return plain(url, 200) or "The URL"
