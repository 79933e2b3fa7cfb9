"""A container's page: its live terminal, files (list, upload, download), audit trail, and the ways
into its live display and preview URLs."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse

from cove.api import multipart
from cove.api.console.context import TERMINAL_CSP, ApiRefused, Signed, call_api, is_htmx, page, service
from cove.api.console.sessions import check_csrf, check_origin
from cove.errors import InvalidRequest
from cove.service.audit import AuditLog
from cove.service.containers import ContainerService
from cove.service.files import FileService
from cove.service.objects import AuditPage
from cove.service.pagination import Page

router = APIRouter(prefix="/containers")
PAGE_SIZE = 50
_AUDIT_COMMON = {"id", "object", "type", "container_id", "response_id", "created_at"}


@router.get("")
async def containers(request: Request, session: Signed, after: str | None = None) -> HTMLResponse:
    containers_ = service(request, "containers", ContainerService)
    listed = await containers_.list_page(session.project, Page(after, PAGE_SIZE), None)
    next_after = listed.last_id if listed.has_more else None
    if is_htmx(request):
        return page("_containers_rows.html", rows=listed.data, next_after=next_after)
    return page("containers.html", session=session, rows=listed.data, next_after=next_after)


async def _audit_rows(request: Request, project: str, container_id: str,
                      after: str | None) -> tuple[AuditPage, list[dict[str, Any]], str | None]:
    # another project's container: 404, as the API answers
    await service(request, "containers", ContainerService).get(project, container_id)
    audit = await service(request, "audit", AuditLog).events(project, container_id, Page(after, PAGE_SIZE))
    rows = [{**event.model_dump(), "details": event.model_dump(exclude=_AUDIT_COMMON)} for event in audit.data]
    return audit, rows, audit.last_id if audit.has_more else None


@router.get("/{container_id}")
async def container_page(container_id: str, request: Request, session: Signed) -> HTMLResponse:
    container = await service(request, "containers", ContainerService).get(session.project, container_id)
    files = await service(request, "files", FileService).list_page(session.project, container_id, Page(None, 100))
    audit, rows, next_after = await _audit_rows(request, session.project, container_id, None)
    return page("container.html", csp=TERMINAL_CSP, session=session, container=container, container_id=container_id,
                files=files.data,
                files_more=files.has_more, rows=rows, next_after=next_after, pruned=audit.pruned)


@router.get("/{container_id}/audit")
async def audit_rows(container_id: str, request: Request, session: Signed, after: str | None = None) -> HTMLResponse:
    """The audit trail's next rows (the page's "More")."""
    _, rows, next_after = await _audit_rows(request, session.project, container_id, after)
    return page("_audit_rows.html", rows=rows, next_after=next_after, container_id=container_id)


@router.post("/{container_id}/files")
async def upload(container_id: str, request: Request, session: Signed) -> RedirectResponse:
    """The upload form: the file to ``path`` (default ``/mnt/data/<its name>``), then the page again."""
    check_origin(request)  # before the body is parsed and spooled
    form = await multipart.form(request)
    try:
        check_csrf(session, multipart.field(form, "csrf"))
        file = multipart.file_part(form)
        if file is None:
            raise InvalidRequest("Choose a file to upload.", param="file")
        await service(request, "files", FileService).upload(session.project, container_id, file.filename or "upload",
                                               multipart.field(form, "path") or None, multipart.chunks(file))
    finally:
        await form.close()
    return RedirectResponse(f"/console/containers/{container_id}", status_code=303)


@router.get("/{container_id}/files/{file_id}")
async def download(container_id: str, file_id: str, request: Request, session: Signed) -> StreamingResponse:
    files = service(request, "files", FileService)
    found = await files.get(session.project, container_id, file_id)
    size, chunks = await files.content(session.project, container_id, file_id)
    name = found.path.rsplit("/", 1)[-1] or "file"
    return StreamingResponse(chunks, media_type="application/octet-stream", headers={
        "Content-Length": str(size), "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"})


async def _checked_form(request: Request, session: Any) -> Any:
    check_origin(request)
    form = await request.form()
    csrf = form.get("csrf")
    check_csrf(session, csrf if isinstance(csrf, str) else None)
    return form


@router.post("/{container_id}/terminal")
async def terminal_token(container_id: str, request: Request, session: Signed) -> JSONResponse:
    """A short-lived token for the page's terminal, minted by the API's PTY token endpoint with the
    session's key; the page opens ``/v1/containers/{id}/pty?token=`` with it (the key never reaches
    the browser). htmx-style: the CSRF token in ``X-CSRF-Token``."""
    check_origin(request)
    check_csrf(session, request.headers.get("x-csrf-token"))
    try:
        minted = await call_api(request, session, "POST", f"/v1/containers/{quote(container_id)}/pty/token")
    except ApiRefused as exc:  # the page's script shows it where the terminal would be
        return JSONResponse({"error": {"message": exc.message}}, status_code=exc.status)
    return JSONResponse({"url": f"/v1/containers/{quote(container_id)}/pty?token={quote(str(minted['token']))}",
                         "expires_at": minted.get("expires_at")})


@router.post("/{container_id}/display")
async def display(container_id: str, request: Request, session: Signed) -> RedirectResponse:
    """The live view page (``/v1/containers/{id}/display/view``) with a fresh view token."""
    await _checked_form(request, session)
    minted = await call_api(request, session, "POST", f"/v1/containers/{quote(container_id)}/display/token")
    return RedirectResponse(str(minted["view_url"]), status_code=303)


@router.post("/{container_id}/preview")
async def preview(container_id: str, request: Request, session: Signed) -> RedirectResponse:
    """The port's preview through a signed, expiring URL from ``POST .../ports/{port}/url``."""
    form = await _checked_form(request, session)
    port = str(form.get("port", ""))
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidRequest("The port must be a number from 1 to 65535.", param="port")
    minted = await call_api(request, session, "POST", f"/v1/containers/{quote(container_id)}/ports/{port}/url")
    return RedirectResponse(str(minted["url"]), status_code=303)
