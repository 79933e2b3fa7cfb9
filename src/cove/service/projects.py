"""What each project may use and how much of the server it may hold, as the operator decides
(``COVE_PROJECTS_FILE``, TOML). A project is what a key in ``COVE_API_KEYS`` maps to (``key=project``)::

    [defaults]                              # every project, unless its own table says otherwise
    running_containers = 50
    background_running = 2

    [projects.analysts]
    tools = ["function", "code_interpreter"]  # tool types it may use; absent: every tool
    allowed_domains = ["*.internal.example"]  # the most a network_policy may allow; absent: no limit
    domain_secrets = false                  # may its policies carry domain secrets; absent: yes
    containers = true                       # may it create and use containers; absent: when `tools`
                                            # holds a tool that runs in a container (or is absent)
    images = ["default", "py-*"]            # images it may use (shell patterns); absent: every image
                                            # not private to other projects
    web_search = "index:handbook"           # its web_search engine (docs/search.md); absent: COVE_WEB_SEARCH
    webhook_urls = ["https://hooks.example/"]  # where its webhook endpoints may point (docs/webhooks.md);
                                            # absent: ["*"], any https URL of a public host
    mcp_servers = ["https://mcp.example/"]  # where its mcp tools may connect (docs/mcp.md); absent: ["*"]
    running_containers = 10                 # quotas: see below
    memory = "64g"

    [[projects.analysts.webhooks]]          # an endpoint the operator keeps (in a project's table only)
    name = "ci"
    url = "http://ci.internal/cove"         # any URL: the operator's own, not bound by webhook_urls
    secret = "whsec_..."
    event_types = ["response.completed"]

    [private_images]
    py-ml = ["analysts", "research"]        # only these projects may use the image `py-ml`

Every key of a project table but ``webhooks`` may also stand in ``[defaults]``; a project's own table overrides it
key by key. Unknown keys, tool types or malformed values stop the server at start-up.

Quotas (each project on its own; beyond one, 429 ``quota_exceeded`` with ``param`` naming it):
``running_containers``, ``memory``, ``disk``, ``background_queued``, ``background_running``,
``audit_rows`` and ``file_bytes``. What each bounds, the built-in defaults (``Quotas.built_in``) and
why they are what they are: ``docs/projects.md``.

Refusals: a request naming a tool, or allowing a domain, beyond its project's rules is a 400 naming
the parameter (``tool_not_allowed``, ``domain_not_allowed``); a project without containers is
refused containers, ``/exec`` and container files with 403 ``permission_denied`` (as OpenAI answers
a project using a model it has no access to); an image the project may not use is answered exactly
as an image that does not exist (404 ``image_not_found``), so private images stay invisible.
"""

from __future__ import annotations

import base64
import fnmatch
import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cove.config import Settings, parse_size
from cove.egress.policy import EgressPolicy
from cove.errors import InvalidRequest, NotFound, PermissionDenied, TooManyRequests
from cove.search.base import SearchNotConfigured
from cove.search.spec import parse_spec
from cove.tools.base import HostedTool
from cove.tools.registry import TOOLS

CONTAINER_TOOLS = frozenset(name for name in TOOLS.types
                            if isinstance(tool := TOOLS.get(name), HostedTool) and tool.container)
"""Tool types that run in a container: a project allowed none of them has no use for containers."""


@dataclass(frozen=True)
class Quotas:
    running_containers: int
    memory: int
    """Bytes: the sum of the ``memory_limit`` of its running containers."""
    disk: int
    """Bytes: its running containers times ``COVE_DISK_LIMIT``."""
    background_queued: int
    background_running: int
    audit_rows: int
    file_bytes: int
    """Bytes: the sizes of its files in ``/v1/files`` summed."""

    @classmethod
    def built_in(cls, settings: Settings) -> Quotas:
        containers = max(1, math.ceil(settings.max_containers / 4))
        return cls(running_containers=containers, memory=containers * parse_size("4g"),
                   disk=containers * parse_size(settings.disk_limit), background_queued=1000,
                   background_running=max(1, settings.background_workers // 2), audit_rows=10_000,
                   file_bytes=parse_size("100g"))

    def exceeded(self, quota: str, message: str) -> TooManyRequests:
        return TooManyRequests(f"Quota exceeded: {quota} ({message}).", param=quota, code="quota_exceeded")


_SIZES = ("memory", "disk", "file_bytes")
_QUOTAS = frozenset(f.name for f in fields(Quotas))


@dataclass(frozen=True)
class OperatorWebhook:
    """A webhook endpoint written in the projects file: trusted as the operator's (any URL it names)."""

    name: str
    url: str
    secret: str
    event_types: tuple[str, ...]


@dataclass(frozen=True)
class ProjectRules:
    quotas: Quotas
    tools: frozenset[str] | None = None
    """Tool types the project may use; None: all of them."""
    allowed_domains: EgressPolicy | None = None
    """The ceiling of what a network policy may allow (as a policy, for its matching); None: none set."""
    domain_secrets: bool = True
    """Whether its policies may carry domain secrets (and so have their HTTPS to those domains intercepted)."""
    containers: bool | None = None
    """Whether it may create and use containers; None: when it may use a tool that runs in one."""
    images: tuple[str, ...] | None = None
    """Shell patterns of the images it may use; None: any (that is not private to other projects)."""
    web_search: str | None = None
    """The spec of its ``web_search`` engine (``cove.search.spec``); None: ``COVE_WEB_SEARCH``."""
    webhook_urls: tuple[str, ...] = ("*",)
    """Where its webhook endpoints may point: URL prefixes, or ``*`` for any https URL of a public host."""
    webhooks: tuple[OperatorWebhook, ...] = ()
    """Endpoints the operator declares for it: listed with its own, changed only in the file."""
    mcp_servers: tuple[str, ...] = ("*",)
    """Where its ``mcp`` tools may connect: URL prefixes, or ``*`` for any https URL of a public host."""

    @property
    def may_use_containers(self) -> bool:
        if self.containers is not None:
            return self.containers
        return self.tools is None or bool(self.tools & CONTAINER_TOOLS)


_RULES = frozenset({"tools", "allowed_domains", "domain_secrets", "containers", "images", "web_search",
                    "webhook_urls", "webhooks", "mcp_servers"})


class ProjectPolicies:
    def __init__(self, defaults: ProjectRules, rules: dict[str, ProjectRules] | None = None,
                 private_images: dict[str, frozenset[str]] | None = None) -> None:
        self.defaults = defaults
        self.rules = rules or {}
        self.private_images = private_images or {}
        """Image name -> the only projects that may use it."""

    @classmethod
    def load(cls, path: Path | None, settings: Settings) -> ProjectPolicies:
        built_in = ProjectRules(Quotas.built_in(settings))
        if path is None:
            return cls(built_in)
        with path.open("rb") as handle:
            document = tomllib.load(handle)
        unknown = set(document) - {"defaults", "projects", "private_images"}
        if unknown:
            raise ValueError(f"{path}: unknown tables {sorted(unknown)} (known: defaults, projects, private_images)")
        defaults = _rules(path, "defaults", _table(path, "defaults", document.get("defaults", {})), built_in)
        rules = {project: _rules(path, f"projects.{project}", _table(path, f"projects.{project}", table), defaults)
                 for project, table in _table(path, "projects", document.get("projects", {})).items()}
        private = {image: frozenset(_strings(path, f"private_images.{image}", projects))
                   for image, projects in _table(path, "private_images", document.get("private_images", {})).items()}
        return cls(defaults, rules, private)

    def of(self, project: str) -> ProjectRules:
        return self.rules.get(project, self.defaults)

    def quotas(self, project: str) -> Quotas:
        return self.of(project).quotas

    def check_tools(self, project: str, tools: list[dict[str, Any]]) -> None:
        allowed = self.of(project).tools
        if allowed is None:
            return
        for index, tool in enumerate(tools):
            if tool.get("type") not in allowed:
                raise InvalidRequest(f"This project may not use the {tool.get('type')!r} tool.",
                                     param=f"tools[{index}].type", code="tool_not_allowed")

    def check_containers(self, project: str) -> None:
        """Containers, their commands and their files are only for projects allowed containers."""
        if not self.of(project).may_use_containers:
            raise PermissionDenied("This project may not use containers.", code="permission_denied")

    def check_image(self, project: str, image: str) -> None:
        """An image the project may not use is answered as one that does not exist (as the image store does)."""
        allowed = self.of(project).images
        private_to = self.private_images.get(image)
        if (private_to is not None and project not in private_to) or (
                allowed is not None and not any(fnmatch.fnmatchcase(image, pattern) for pattern in allowed)):
            raise NotFound(f"No image named {image!r}", param="image", code="image_not_found")

    def check_network(self, project: str, policy: EgressPolicy | None, param: str) -> None:
        """Every domain a policy allows must be within the project's ceiling; secrets only if allowed."""
        rules = self.of(project)
        if policy is not None and policy.domain_secrets and not rules.domain_secrets:
            raise InvalidRequest("This project may not use domain secrets.", param=f"{param}.domain_secrets",
                                 code="domain_secrets_not_allowed")
        ceiling = rules.allowed_domains
        if policy is None or ceiling is None:
            return
        for index, domain in enumerate(policy.allowed_domains):
            if not _within(ceiling, domain):
                raise InvalidRequest(f"This project may not allow {domain!r}: the operator allows at most "
                                     f"{', '.join(ceiling.allowed_domains)}.",
                                     param=f"{param}.allowed_domains[{index}]", code="domain_not_allowed")


def _table(path: Path, where: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {where} must be a table")
    return value


def _strings(path: Path, where: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{path}: {where} must be a list of strings")
    return value


def _rules(path: Path, where: str, table: dict[str, Any], base: ProjectRules) -> ProjectRules:
    """``base`` with what ``table`` sets; every value checked, so a typo stops the server at start-up."""
    unknown = set(table) - _RULES - _QUOTAS
    if unknown:
        raise ValueError(f"{path}: {where} has unknown settings {sorted(unknown)}")
    changes: dict[str, Any] = {}
    if "tools" in table:
        tools = _strings(path, f"{where}.tools", table["tools"])
        unknown_tools = sorted(set(tools) - TOOLS.types)
        if unknown_tools:
            raise ValueError(f"{path}: {where}.tools names unknown tool types {unknown_tools} "
                             f"(known: {', '.join(sorted(TOOLS.types))})")
        changes["tools"] = frozenset(tools)
    if "allowed_domains" in table:
        changes["allowed_domains"] = EgressPolicy(tuple(_strings(path, f"{where}.allowed_domains",
                                                                 table["allowed_domains"])))
    for flag in ("domain_secrets", "containers"):
        if flag in table:
            if not isinstance(table[flag], bool):
                raise ValueError(f"{path}: {where}.{flag} must be true or false")
            changes[flag] = table[flag]
    if "images" in table:
        changes["images"] = tuple(_strings(path, f"{where}.images", table["images"]))
    if "web_search" in table:
        changes["web_search"] = _web_search(path, f"{where}.web_search", table["web_search"])
    if "webhooks" in table:
        if where == "defaults":
            raise ValueError(f"{path}: webhooks belong in a project's own table, not in [defaults]")
        changes["webhooks"] = _webhooks(path, f"{where}.webhooks", table["webhooks"])
    if "webhook_urls" in table:
        changes["webhook_urls"] = tuple(_webhook_url(path, f"{where}.webhook_urls[{index}]", pattern)
                                        for index, pattern in enumerate(
                                            _strings(path, f"{where}.webhook_urls", table["webhook_urls"])))
    if "mcp_servers" in table:
        changes["mcp_servers"] = tuple(_webhook_url(path, f"{where}.mcp_servers[{index}]", pattern)
                                       for index, pattern in enumerate(
                                           _strings(path, f"{where}.mcp_servers", table["mcp_servers"])))
    quotas = {name: _quota(path, f"{where}.{name}", name, table[name]) for name in _QUOTAS & set(table)}
    return replace(base, quotas=replace(base.quotas, **quotas), **changes)


def _web_search(path: Path, where: str, value: object) -> str:
    """A syntactically valid engine spec; whether its index exists or its key is set is checked when
    a request uses it (an index may be built after the server starts)."""
    if not isinstance(value, str):
        raise ValueError(f"{path}: {where} must be a string such as \"index:docs\"")
    try:
        parse_spec(value)
    except SearchNotConfigured as exc:
        raise ValueError(f"{path}: {where}: {exc.message}") from None
    return value.strip()


def _webhook_url(path: Path, where: str, pattern: str) -> str:
    """``*``, or an http(s) URL prefix naming its host (the operator may name an internal one); for
    webhook endpoints and MCP servers alike."""
    if pattern == "*":
        return pattern
    parts = urlsplit(pattern)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{path}: {where} must be \"*\" or an http(s) URL prefix such as "
                         "\"https://hooks.example/cove/\"")
    return pattern


def _webhooks(path: Path, where: str, value: object) -> tuple[OperatorWebhook, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{path}: {where} must be a list of tables")
    found: list[OperatorWebhook] = []
    for index, entry in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "url", "secret", "event_types"}:
            raise ValueError(f"{path}: {at} must have exactly name, url, secret and event_types")
        if not all(isinstance(entry[key], str) and entry[key] for key in ("name", "url", "secret")):
            raise ValueError(f"{path}: {at}: name, url and secret must be non-empty strings")
        _webhook_url(path, f"{at}.url", entry["url"])
        if entry["url"] == "*" or not entry["secret"].startswith("whsec_"):
            raise ValueError(f"{path}: {at} needs a URL and a whsec_ secret")
        try:
            base64.b64decode(entry["secret"][6:], validate=True)
        except ValueError:
            raise ValueError(f"{path}: {at}.secret is not whsec_ and base64") from None
        found.append(OperatorWebhook(entry["name"], entry["url"], entry["secret"],
                                     tuple(_strings(path, f"{at}.event_types", entry["event_types"]))))
    if len({hook.name for hook in found}) != len(found):
        raise ValueError(f"{path}: {where} names an endpoint twice")
    return tuple(found)


def _quota(path: Path, where: str, name: str, value: object) -> int:
    if name in _SIZES and isinstance(value, str):
        try:
            return parse_size(value)
        except ValueError as exc:
            raise ValueError(f"{path}: {where}: {exc}") from None
    least = 1 if name == "background_running" else 0  # 0 would strand its background responses
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{path}: {where} must be a whole number of at least {least}"
                         + (" or a size such as 64g" if name in _SIZES else ""))
    return value


def _within(ceiling: EgressPolicy, domain: str) -> bool:
    """A name is within the ceiling if the ceiling allows it; a wildcard, if a ceiling wildcard covers it."""
    if not domain.startswith("*."):
        return ceiling.allows(domain)
    inner = domain[2:]
    return any(entry.startswith("*.") and (inner == entry[2:] or inner.endswith("." + entry[2:]))
               for entry in ceiling.allowed_domains)
