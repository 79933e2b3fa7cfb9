"""The application factory: wires settings, store, sandbox engine and routers together."""

from __future__ import annotations

import asyncio
import logging
import resource
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.routing import Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from cove import __version__
from cove.api import (
    container_display,
    container_files,
    container_terminals,
    containers,
    conversations,
    display_socket,
    docs,
    errors,
    files,
    metrics,
    models,
    previews,
    responses,
    responses_socket,
    snapshots,
    terminal_socket,
    webhooks,
)
from cove.api import skills as skills_api
from cove.api.body_limit import BodyLimit
from cove.api.console import console_app
from cove.api.json_text import refuse_lone_surrogates
from cove.api.loopback import LoopbackGuard
from cove.config import Settings, parse_prices, parse_size
from cove.sandbox.base import SandboxEngine
from cove.sandbox.images.store import ImageStore
from cove.sandbox.linux.engine import LinuxEngine
from cove.search.engines import Engines
from cove.service.audit import AuditLog
from cove.service.console import ConsoleQueries
from cove.service.console_sessions import ConsoleSessions
from cove.service.containers import ContainerService
from cove.service.conversations import ConversationService
from cove.service.displays import DisplayService
from cove.service.file_blobs import blobs_for
from cove.service.files import FileService
from cove.service.fleet import FleetRegistry
from cove.service.mcp import McpServers
from cove.service.metrics import FleetGauges, StoreGauges
from cove.service.models import ModelService
from cove.service.previews import PreviewService
from cove.service.project_files import ProjectFileService
from cove.service.projects import ProjectPolicies
from cove.service.responses import ResponseService
from cove.service.secrets import SecretKeeper
from cove.service.skills import SkillService, skill_limits
from cove.service.snapshots import SnapshotService
from cove.service.terminals import TerminalService
from cove.service.web_search import WebSearchEngines
from cove.service.webhooks import WebhookService
from cove.store.db import Database
from cove.telemetry import on_scrape, tracing
from cove.upstream.registry import ModelRegistry

log = logging.getLogger(__name__)


def raise_fd_limit() -> None:
    """Lifts the server's soft open-file limit to its hard limit: containers' sockets and background
    pipes are budgeted from it (``COVE_BACKGROUND_PIPES``), and the usual soft 1024 is far too few.
    Done here rather than in ``cove serve`` so that any ASGI server running the app gets it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log.info("open-file limit: %d (was %d)", hard, soft)


def fresh_spool_dir(settings: Settings) -> None:
    """Uploads spool here, on the data dir's disk and private to the server, never in the host's /tmp;
    what a crash left is removed."""
    shutil.rmtree(settings.spool_dir, ignore_errors=True)
    settings.spool_dir.mkdir(mode=0o700)
    settings.spool_dir.chmod(0o700)


def fleet_engine(settings: Settings, db: Database) -> SandboxEngine:
    """Containers on a Ray cluster's nodes (``COVE_RAY_ADDRESS``); imported only then, so that one
    machine never loads Ray."""
    from cove.sandbox.fleet.engine import FleetEngine

    assert settings.ray_address is not None
    return FleetEngine(FleetRegistry(db), address=settings.ray_address, node_ip=settings.ray_node_ip,
                       call_timeout=settings.fleet_call_timeout, check_seconds=settings.fleet_check_seconds,
                       host_factory=settings.fleet_host_engine)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise_fd_limit()
        # The database, keys and container layers are the server's alone; runc reaches containers'
        # roots through the engine's gate (``sandbox/linux/gate.py``).
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        settings.data_dir.chmod(0o700)
        fresh_spool_dir(settings)
        db = Database(settings.db_url)
        await db.migrate()
        engine = fleet_engine(settings, db) if settings.ray_address else LinuxEngine(
            settings, ImageStore(settings.image_root, settings.subuid_base))
        await engine.start()
        policies = ProjectPolicies.load(settings.projects_file, settings)
        audit = AuditLog(db, keep=lambda project: policies.quotas(project).audit_rows,
                         journal=settings.data_dir / "audit-journal")
        await audit.start()
        secrets = SecretKeeper(settings.secrets_key_path)
        service = ContainerService(db, engine, settings, policies=policies, secrets=secrets, audit=audit)
        engine.watch_egress(service.record_egress)  # a fleet's are collected from its nodes (docs/fleet.md)
        snapshot_service = SnapshotService(db, engine, service, settings, audit)
        files = FileService(db, service)
        project_files = ProjectFileService(db, blobs_for(settings), files, policies)
        skills = SkillService(db, project_files.blobs, service, policies, skill_limits(settings))
        registry = ModelRegistry(settings)
        engines = Engines(settings)
        search = WebSearchEngines(lambda project: policies.of(project).web_search or settings.web_search, engines.get)
        webhooks = WebhookService.from_settings(db, policies, secrets.sealer, settings)
        mcp = McpServers.from_settings(policies, secrets.sealer, audit, settings)
        response_service = ResponseService(db, registry, service, files, settings, policies=policies,
                                           secrets=secrets, project_files=project_files, search=search,
                                           webhooks=webhooks, snapshots=snapshot_service, skills=skills,
                                           mcp=mcp)
        app.state.settings = settings
        app.state.containers = service
        app.state.snapshots = snapshot_service
        app.state.displays = DisplayService(service)
        app.state.terminals = TerminalService(service)
        app.state.previews = PreviewService(service)
        app.state.files = files
        app.state.project_files = project_files
        app.state.skills = skills
        app.state.models = ModelService(registry)
        app.state.responses = response_service
        app.state.conversations = ConversationService(db)
        app.state.audit = audit
        app.state.console = ConsoleQueries(db, response_service, audit, parse_prices(settings.console_prices))
        app.state.console_sessions = ConsoleSessions(db, secrets.sealer)
        app.state.webhooks = webhooks
        await webhooks.start()  # the projects file's endpoints first: start-up may fail responses
        await response_service.start()
        warm_up = registry.warm_up()
        service.start_expiry()
        snapshot_service.start_expiry()
        project_files.start_expiry(settings.expiry_check_seconds)
        app.state.ready = True
        forget_gauges = on_scrape(StoreGauges(db))
        forget_fleet = on_scrape(FleetGauges(FleetRegistry(db))) if settings.ray_address else None
        try:
            yield
        finally:
            app.state.ready = False
            forget_gauges()
            if forget_fleet is not None:
                forget_fleet()
            if warm_up is not None:
                warm_up.cancel()
                await asyncio.gather(warm_up, return_exceptions=True)
            await response_service.stop()
            await mcp.aclose()
            await webhooks.stop()
            await service.stop_expiry()
            await snapshot_service.stop_expiry()
            await project_files.stop_expiry()
            await engine.close()
            await audit.stop()
            await registry.aclose()
            await engines.aclose()
            await db.close()
            tracing.flush()

    public = settings.public_docs  # else ``api/docs.py`` serves them behind a key
    tracing.start()  # before the app: FastAPI's request spans take its provider (or are off)
    app = FastAPI(title="Cove", version=__version__, lifespan=lifespan, telemetry=tracing.fastapi_telemetry(),
                  openapi_url="/openapi.json" if public else None, docs_url="/docs" if public else None,
                  redoc_url="/redoc" if public else None,
                  dependencies=[Depends(refuse_lone_surrogates)])
    app.state.settings = settings
    app.state.ready = False
    errors.install(app)
    app.add_middleware(BodyLimit, upload_bytes=parse_size(settings.max_upload),
                       file_bytes=parse_size(settings.max_file_upload), json_bytes=parse_size(settings.max_request))
    app.add_middleware(LoopbackGuard, keyless=not settings.keys)  # outermost: before anything reads the body
    app.include_router(containers.router)
    app.include_router(container_files.router)
    app.include_router(container_display.router)
    app.include_router(snapshots.router)
    app.router.routes.append(WebSocketRoute("/v1/containers/{container_id}/display", display_socket.serve))
    app.include_router(container_terminals.router)
    app.router.routes.append(WebSocketRoute("/v1/containers/{container_id}/pty", terminal_socket.serve))
    app.include_router(previews.router)  # before the proxy: POST .../ports/{port}/url is Cove's own
    for path in (previews.PREVIEW_PATH, previews.PREVIEW_PATH.removesuffix("/{rest:path}")):
        app.router.routes.append(Route(path, previews.HttpProxy()))
        app.router.routes.append(WebSocketRoute(path, previews.proxy_websocket))
    # noVNC's RFB client for the live view page: public (Debian's), and a browser loads it without a key.
    # Only the two trees its modules import from are served, so a COVE_NOVNC_DIR set to the wrong
    # directory cannot put the host's files behind no key.
    for part in ("core", "vendor"):
        app.mount(f"/novnc/{part}", StaticFiles(directory=settings.novnc_dir / part, check_dir=False),
                  name=f"novnc-{part}")
    app.include_router(files.router)
    app.include_router(skills_api.router)
    app.include_router(responses.router)
    # A Starlette route: the app-wide dependencies are for HTTP requests (the socket checks each message).
    app.router.routes.append(WebSocketRoute("/v1/responses", responses_socket.serve))
    app.include_router(conversations.router)
    app.include_router(models.router)
    app.include_router(webhooks.router)
    app.include_router(metrics.router)
    if not public:
        app.include_router(docs.router)
    app.mount("/console", console_app(app))  # the web console (docs/console.md)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok" if app.state.ready else "starting"}

    return app
