"""Settings, read once from the environment (``COVE_*``) so every layer sees the same values."""

from __future__ import annotations

import ipaddress
import os
import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/cove")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cove"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COVE_", extra="ignore", use_attribute_docstrings=True)

    data_dir: Path = Field(default_factory=_default_data_dir)
    """All state: database, images, container layers, runtime state."""

    images_dir: Path | None = None
    """Where images live; default ``data_dir/images``. Several data dirs may share one."""

    api_keys: str = ""
    """Comma-separated ``key`` or ``key=project``. Empty: any key, loopback only (``Host`` and ``Origin`` too)."""

    public_docs: bool = False
    """Serve ``/docs``, ``/redoc`` and ``/openapi.json`` without a key."""

    database_url: str | None = None
    """SQLAlchemy async URL; default is SQLite (WAL) inside ``data_dir``."""

    default_image: str = "default"
    """Image used when a container is created without ``image``."""

    desktop_image: str = "desktop"
    """Image of the containers a request with a hosted computer tool makes (``container_auto``)."""

    novnc_dir: Path = Path("/usr/share/novnc")
    """noVNC's files (Debian's ``novnc`` package): its ``core/`` and ``vendor/`` are served at ``/novnc/`` for the live
    view page, nothing else of the directory."""

    container_idle_minutes: int = 20
    """Idle expiry when a create request gives no ``expires_after``."""

    idle_action: Literal["delete", "stop"] = "delete"
    """What idle expiry does: ``delete`` the container (status ``expired``, its files gone), or ``stop``
    it (status ``stopped``: processes end, files stay, its next use starts it again)."""

    response_snapshot_hours: float = Field(default=168, gt=0)
    """How long the snapshot Cove takes at the end of a response that used a container is kept (a
    continuation from that response branches from it; ``docs/snapshots.md``)."""

    stopped_hours: int = Field(default=168, ge=1)
    """With ``idle_action`` ``stop``: how long a stopped container keeps its files before it expires."""

    pids_limit: int = 1024
    """Process cap per container: a fork bomb stops here."""

    runtime: Literal["auto", "cove", "runc"] = "auto"
    """What starts containers: ``cove``, Cove's own launcher (``cove-launch``, a few ms a start), which
    performs the very OCI config runc would get; ``runc`` (``runc run --detach``, 20-30 ms); ``auto``:
    the launcher on cgroup v1 and hybrid hosts, runc on cgroup v2 ones (where the launcher cannot yet
    filter devices)."""

    disk_limit: str = "10g"
    """Each container's writable layer is a filesystem of this size: writes past it fail with ENOSPC."""

    disk_pool: Literal["auto", "off"] = "auto"
    """``auto``: container disks live on a filesystem with reflinks (the data dir's own, or an XFS pool
    Cove mounts), so snapshots and forks are O(1) in what a container wrote. ``off``: copied block by block."""

    egress_ports: str = "80,443"
    """Ports the egress proxy connects to."""

    egress_ca_file: Path | None = None
    """More CA certificates the proxy trusts (beyond the host's) when it opens TLS for domain secrets."""

    secrets_key_file: Path | None = None
    """Key that seals domain secrets in the store; default ``data_dir/secrets.key``, made on first use.
    Servers sharing one database must share this file."""

    egress_test_hosts: str = ""
    """FOR TESTS ONLY: ``name=ip,...`` answers the egress proxy trusts without its address checks."""

    max_upload: str = "1g"
    """Largest container file upload (multipart body); larger ones are refused with 413."""

    max_request: str = "64m"
    """Largest JSON request body (a response's input, an exec's commands)."""

    max_file_upload: str = "512m"
    """Largest upload to ``/v1/files`` (multipart body); larger ones are refused with 413."""

    files_s3_bucket: str | None = None
    """Keep ``/v1/files`` bytes in this S3-compatible bucket instead of ``data_dir/files``."""

    files_s3_endpoint_url: str | None = None
    """The bucket's endpoint (MinIO, Ceph, R2 ...); default: AWS's, found by boto3."""

    files_s3_region: str | None = None
    """The bucket's region; default: boto3's usual configuration (``AWS_REGION``, ``~/.aws/config``)."""

    files_s3_access_key_id: str | None = None
    """Access key for the bucket; default: boto3's usual credentials (``AWS_ACCESS_KEY_ID``, roles ...)."""

    files_s3_secret_access_key: str | None = None
    """Secret key for ``files_s3_access_key_id``."""

    files_s3_prefix: str = "files/"
    """Key prefix of the objects Cove writes in the bucket (it may share the bucket with others)."""

    websocket_buffer: str = "16m"
    """Events a WebSocket client (``client.responses.connect()``) may leave unread; one that keeps them
    unread for ten seconds is dropped (``api/responses_socket.py``)."""

    nofile_limit: int = 4096
    """Open-file cap per container process."""

    background_pipes_per_container: int = Field(default=256, ge=0)
    """Output pipes a container's background processes may keep open in the server after their command."""

    background_pipes_per_project: int | None = Field(default=None, ge=0)
    """The same, summed over a project's containers; default a quarter of ``background_pipes``."""

    background_pipes: int | None = Field(default=None, ge=0)
    """The same, summed over the server; default half the server's open-file limit (raised to its hard
    limit at start), the other half staying free for connections, containers' sockets and the store."""

    default_cpu_limit: float = 1.0
    """CPUs a container may use when the request gives no ``cpu_limit``."""

    max_cpu_limit: float = Field(default_factory=lambda: float(os.cpu_count() or 1))
    """The most CPUs a create may ask for (``cpu_limit``); default: the host's CPU count."""

    max_containers: int = 1000
    """Running containers per server; creates beyond it are refused with 429."""

    subuid_base: int = 100000
    """Host uid that container root maps to; container uids 0-65535 map onto base+0-65535."""

    expiry_check_seconds: float = 30.0
    """How often idle containers and expired files are looked for and removed (an expiry can be this late)."""

    upstream_url: str | None = None
    """OpenAI-compatible base URL ending in /v1; model names not in ``models_file`` go here unchanged."""

    upstream_api_key: str | None = None
    """Bearer token for ``upstream_url``; keyless local servers need none."""

    upstream_api: Literal["chat", "responses"] = "chat"
    """What ``upstream_url`` speaks: Chat Completions (every server) or the Responses API."""

    projects_file: Path | None = None
    """TOML with what each project may use (see ``cove.service.projects``)."""

    models_file: Path | None = None
    """TOML naming more upstreams and model aliases (format in ``cove/upstream/registry.py``)."""

    context_window: int = 131072
    """Tokens a model holds when neither its upstream (``GET /models``) nor the models file says; input
    beyond it is truncated or refused. 128k: a coding agent's first request alone passes 8k."""

    max_turns: int = Field(default=50, ge=1)
    """Model turns one foreground response may take (each after hosted tool calls): a runaway agent ends
    ``incomplete`` (``max_messages``) here rather than running up the upstream's bill forever."""

    background_max_turns: int = Field(default=1000, ge=1)
    """The same for a background response, which may work for hours: its bounds are this, its own
    ``max_tool_calls`` and ``response_time_limit``."""

    response_time_limit: float = Field(default=21600.0, gt=0)
    """Seconds of wall-clock time a response may run, from when it starts (not while queued), server
    restarts included: then it ends ``incomplete`` (``max_messages``) and the tool call in flight is stopped."""

    heartbeat_seconds: float = Field(default=30.0, gt=0)
    """How often a running background response's row gets its ``heartbeat_at`` and current step written."""

    stuck_tool_seconds: float = Field(default=900.0, gt=0)
    """A hosted tool call running longer than this is logged as stuck (with the response, tool and time)."""

    max_resumes: int = Field(default=3, ge=0)
    """Server restarts a running background response is resumed after; at the next one it fails (0:
    every restart fails it)."""

    local_max_tool_turns: int = Field(default=3, ge=0)
    """Rounds of hosted tool calls the embedded model may make in one response before it must answer
    from their output (its next turn gets ``tool_choice: none``): a 135M model's calls are close to
    random, and without a cap it spends ``max_turns`` repeating them."""

    warm_pool: int = Field(default=4, ge=0)
    """Containers kept started for creates with the default image and limits (0 turns the pool off):
    the pool's floor; it grows past it after bursts of creates (``warm_pool_max``)."""

    warm_pool_max: int = Field(default=128, ge=0)
    """The most containers the warm pool grows to after a burst of creates (it keeps as many as the
    largest burst of the last minutes, while the host has memory to spare, and shrinks back)."""

    background_workers: int = 8
    """Background responses generated at once; more wait in the queue (in the store)."""

    apt_sources: Path | None = None
    """The apt sources file ``cove image build`` gives mmdebstrap; default: the host's own."""

    web_search: str | None = None
    """The engine of the hosted ``web_search`` tool: ``index:NAME``, ``searxng:BASE_URL``, ``brave``,
    ``tavily`` or ``upstream`` (``docs/search.md``); unset: the tool is refused. A project's
    ``web_search`` in the projects file overrides it."""

    brave_api_key: str | None = None
    """Subscription token for the ``brave`` engine (Brave Search API)."""

    brave_base_url: str = "https://api.search.brave.com/res/v1"
    """Where the ``brave`` engine sends its requests: change it only for a proxy in front of Brave, or tests."""

    tavily_api_key: str | None = None
    """API key for the ``tavily`` engine."""

    tavily_base_url: str = "https://api.tavily.com"
    """Where the ``tavily`` engine sends its requests: change it only for a proxy in front of Tavily, or tests."""

    web_search_timeout: float = Field(default=15.0, gt=0)
    """Seconds an engine (SearXNG, Brave, Tavily) may take to answer a search before the call fails."""

    web_search_cache_seconds: float = Field(default=600.0, ge=0)
    """How long search results and page reads are reused for the same query or page (0: not cached)."""

    web_search_cache_size: str = "64m"
    """Memory the cache of results and pages may hold; the least recently used go first."""

    web_read_domains: str = "*"
    """Comma-separated names page reads may reach (``*.example.com`` for subdomains, ``*`` for any);
    only public addresses, except for a name listed exactly, which may resolve inside (an intranet)."""

    web_read_max: str = "5m"
    """Largest page a read downloads; a longer one is cut there."""

    web_read_timeout: float = Field(default=20.0, gt=0)
    """Seconds one page read may take, redirects included."""

    webhook_retries: str = "5s,5m,30m,2h,5h,10h,10h,10h"
    """Waits between a webhook delivery's attempts, comma-separated (``s``, ``m``, ``h``): one attempt, then
    one more after each wait; after the last the delivery is ``failed``. The default retries for 42 hours."""

    webhook_timeout: float = Field(default=10.0, gt=0)
    """Seconds one webhook attempt may take (connect, send, the receiver's answer)."""

    webhook_concurrency: int = Field(default=16, ge=1)
    """Webhook deliveries in flight at once, server-wide; each endpoint has at most one."""

    # -- the fleet (issue 16, docs/fleet.md) --
    ray_address: str | None = None
    """A Ray cluster's GCS address (``host:port``): containers then live on its nodes' ``SandboxHost``
    actors, placed through the database. Unset: containers live on this machine, and Ray is not imported."""

    ray_node_ip: str | None = None
    """This server's address as a Ray driver (Ray's ``_node_ip_address``); unset: Ray picks one."""

    fleet_call_timeout: float = Field(default=10.0, gt=0)
    """Seconds any call to a fleet node may take beyond a command's own timeout; past it the call fails
    with 503 ``sandbox_unavailable`` ("may or may not have run")."""

    fleet_check_seconds: float = Field(default=1.0, gt=0)
    """How often the server asks every fleet node for its capacity, finding lost and rejoined nodes."""

    fleet_host_engine: str = "cove.sandbox.fleet.host:linux_host"
    """``module:function`` making the engine each node's ``SandboxHost`` runs (tests and the bench use
    ``cove.testing.fleet:simulated_host``: containers in memory)."""
    # -- skills (/v1/skills, docs/skills.md) --
    skill_max_bytes: str = "32m"
    """Largest skill: its files' total size once unzipped (a zip that inflates past it is refused)."""

    skill_max_files: int = Field(default=500, ge=1)
    """Most files one skill may hold."""

    # -- metrics (docs/metrics.md) --
    metrics_token: str | None = None
    """Bearer token a scraper sends for ``GET /metrics``; unset, only clients on this machine may read it."""

    # -- replicas (issue 16: several servers on one PostgreSQL, docs/replicas.md) --
    replica_id: str | None = None
    """This server's name among replicas sharing a PostgreSQL store; default: the host name and the data
    dir, so a server restarted on the same data dir is the same replica (it holds the same containers)."""

    replica_lease_seconds: float = Field(default=90.0, gt=0)
    """A replica whose heartbeat (every ``heartbeat_seconds``) is older than this is taken for dead: another
    takes over its background responses (and fails its foreground ones). Keep it several heartbeats long."""

    # -- the web console (docs/console.md) --
    console_prices: str = ""
    """Prices the web console shows a response's cost by: ``model=input/output,...`` in US dollars per
    million tokens (e.g. ``gpt-4.1=2/8``); a model not listed shows its tokens only."""

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("webhook_retries")
    @classmethod
    def _waits(cls, value: str) -> str:
        parse_waits(value)
        return value

    @field_validator("console_prices")
    @classmethod
    def _prices(cls, value: str) -> str:
        parse_prices(value)
        return value

    @property
    def webhook_waits(self) -> list[float]:
        """``webhook_retries`` in seconds."""
        return parse_waits(self.webhook_retries)

    @cached_property
    def keys(self) -> dict[str, str]:
        """API key -> project id."""
        result: dict[str, str] = {}
        for raw in self.api_keys.split(","):
            entry = raw.strip()
            if not entry:
                continue
            key, _, project = entry.partition("=")
            result[key.strip()] = project.strip() or "default"
        return result

    @property
    def egress_port_list(self) -> list[int]:
        return [int(port) for port in self.egress_ports.split(",") if port.strip()]

    @property
    def secrets_key_path(self) -> Path:
        return self.secrets_key_file or self.data_dir / "secrets.key"

    @property
    def spool_dir(self) -> Path:
        """Where uploads are spooled while they arrive."""
        return self.data_dir / "spool"

    @property
    def files_dir(self) -> Path:
        """Where ``/v1/files`` bytes live when no bucket is configured."""
        return self.data_dir / "files"

    @property
    def image_root(self) -> Path:
        return self.images_dir or self.data_dir / "images"

    @property
    def replica(self) -> str:
        """This server's replica name (``replica_id``)."""
        return self.replica_id or f"{socket.gethostname()}:{self.data_dir}"[-128:]

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'cove.db'}"


def parse_size(text: str) -> int:
    """``512m``, ``10g``, ``1t`` or plain bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    value = text.strip().lower().removesuffix("b")
    try:
        return int(float(value[:-1]) * units[value[-1]]) if value and value[-1] in units else int(value)
    except ValueError:
        raise ValueError(f"Not a size: {text!r} (use e.g. 512m or 10g)") from None


def parse_waits(text: str) -> list[float]:
    """``5s,5m,2h`` as seconds; empty means no retry."""
    units = {"s": 1, "m": 60, "h": 3600}
    waits = []
    for item in filter(None, (part.strip().lower() for part in text.split(","))):
        try:
            wait = float(item[:-1]) * units[item[-1]] if item[-1] in units else float(item)
        except (ValueError, KeyError):
            raise ValueError(f"Not a wait: {item!r} (use e.g. 30s, 5m or 2h)") from None
        if wait < 0:
            raise ValueError(f"A wait cannot be negative: {item!r}")
        waits.append(wait)
    return waits


def parse_prices(text: str) -> dict[str, tuple[float, float]]:
    """``model=input/output,...`` (US dollars per million tokens) as (input, output) by model."""
    prices: dict[str, tuple[float, float]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        model, _, pair = part.rpartition("=")
        given, _, taken = pair.partition("/")
        try:
            price = (float(given), float(taken))
        except ValueError:
            price = (-1.0, -1.0)
        if not model or min(price) < 0:
            raise ValueError(f"{part!r} is not model=input/output (US dollars per million tokens, e.g. gpt-4.1=2/8)")
        prices[model] = price
    return prices


def is_loopback_host(host: str) -> bool:
    """True when binding ``host`` exposes the server only to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
