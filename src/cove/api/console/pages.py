"""Sign-in, the lists, a response's trajectory (followed live while it runs) and a conversation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from cove.api.auth import project_for_key
from cove.api.console.context import Signed, is_htmx, page, queries, service
from cove.api.console.render import render, steps
from cove.api.console.sessions import COOKIE, check_csrf, check_origin, session_of, store
from cove.service.console import TERMINAL_EVENTS
from cove.service.console_sessions import LIFETIME, ConsoleSession
from cove.service.conversations import ConversationService
from cove.service.pagination import Page

router = APIRouter()
PAGE_SIZE = 50
LIVE = ("queued", "in_progress")


def _form_value(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


@router.get("/")
async def home(request: Request) -> RedirectResponse:
    signed = await session_of(request) is not None
    return RedirectResponse("/console/responses" if signed else "/console/login", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> HTMLResponse:
    return page("login.html", session=None, error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    """Checks the key as the API would and opens a session for its project; a wrong key gets the form
    again, with a 401."""
    check_origin(request)
    key = _form_value(await request.form(), "key") or ""
    project = project_for_key(request.app.state.settings.keys, key) if key.strip() else None
    if project is None:
        return page("login.html", code=401, session=None, error="That is not an API key of this server.")
    session_id, _ = await store(request).open(project, key.strip())
    answer = RedirectResponse("/console/responses", status_code=303)
    answer.set_cookie(COOKIE, session_id, max_age=int(LIFETIME), path="/console", httponly=True,
                      samesite="strict", secure=request.url.scheme == "https")
    return answer


@router.post("/logout")
async def logout(request: Request, session: Signed) -> RedirectResponse:
    check_origin(request)
    check_csrf(session, _form_value(await request.form(), "csrf"))
    await store(request).close(request.cookies.get(COOKIE))
    answer = RedirectResponse("/console/login", status_code=303)
    answer.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
    return answer


def _list(request: Request, session: ConsoleSession, template: str, rows: list[Any], has_more: bool) -> HTMLResponse:
    """A list page, or only its next rows for htmx's "More" (they replace the "More" row)."""
    next_after = rows[-1].id if has_more and rows else None
    if is_htmx(request):
        return page(f"_{template}_rows.html", rows=rows, next_after=next_after)
    return page(f"{template}.html", session=session, rows=rows, next_after=next_after)


@router.get("/responses")
async def responses(request: Request, session: Signed, after: str | None = None) -> HTMLResponse:
    rows, has_more = await queries(request).response_page(session.project, Page(after, PAGE_SIZE))
    return _list(request, session, "responses", rows, has_more)


@router.get("/conversations")
async def conversations(request: Request, session: Signed, after: str | None = None) -> HTMLResponse:
    rows, has_more = await queries(request).conversation_page(session.project, Page(after, PAGE_SIZE))
    return _list(request, session, "conversations", rows, has_more)


@router.get("/responses/{response_id}")
async def response_page(response_id: str, request: Request, session: Signed) -> HTMLResponse:
    """The trajectory: input items, then output items in order, each tool call with its command,
    output and duration, screenshots inline; tokens and cost."""
    found = queries(request)
    response = await found.responses.get(session.project, response_id)
    inputs, _ = await found.responses.input_items(session.project, response_id, Page(None, 100, "asc"))
    commands = await found.commands(session.project, response_id)
    return page("response.html", session=session, response=response, steps=steps(response["output"], commands),
                inputs=steps(inputs, []), live=response["status"] in LIVE,
                cost=found.cost(str(response.get("model", "")), response.get("usage")))


def _sse(event: str, html: str) -> bytes:
    return (f"event: {event}\n" + "".join(f"data: {line}\n" for line in html.splitlines()) + "\n").encode()


@router.get("/responses/{response_id}/live")
async def follow(response_id: str, request: Request, session: Signed, after: int = 0) -> StreamingResponse:
    """Server-sent events while the response runs: ``item`` with each finished output item from
    index ``after`` on (the page has the ones before), rendered as the page renders it; ``replace``
    with a shell call again once its output is in (now with its commands' durations); ``done`` with
    the summary once it ends (at once when it has ended already)."""
    found = queries(request)
    events = await found.follow(session.project, response_id)

    async def stream() -> AsyncIterator[bytes]:
        yield b": following\n\n"
        calls: dict[str, dict[str, Any]] = {}
        """Shell calls shown so far, by call id: shown again with their durations once they ran."""
        async for event in events or _nothing():
            kind = event.get("type", "")
            if kind == "response.output_item.done" and int(event.get("output_index", -1)) >= after:
                item = event["item"]
                commands = await found.commands(session.project, response_id)
                yield _sse("item", render("_item.html", step=steps([item], commands)[0]))
                if item.get("type") == "shell_call":
                    calls[str(item.get("call_id"))] = item
                elif item.get("type") == "shell_call_output" and str(item.get("call_id")) in calls:
                    call = calls.pop(str(item.get("call_id")))
                    yield _sse("replace", render("_item.html", step=steps([call], commands)[0]))
            elif kind in TERMINAL_EVENTS:
                response = event["response"]
                yield _sse("done", render("_summary.html", response=response,
                                          cost=found.cost(str(response.get("model", "")), response.get("usage"))))
                return
        if events is None:
            response = await found.responses.get(session.project, response_id)
            yield _sse("done", render("_summary.html", response=response,
                                      cost=found.cost(str(response.get("model", "")), response.get("usage"))))

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _nothing() -> AsyncIterator[dict[str, Any]]:
    return
    yield


@router.get("/conversations/{conversation_id}")
async def conversation_page(conversation_id: str, request: Request, session: Signed) -> HTMLResponse:
    conversations_ = service(request, "conversations", ConversationService)
    conversation = await conversations_.get(session.project, conversation_id)
    items = await conversations_.list_items(session.project, conversation_id, Page(None, 100, "asc"))
    return page("conversation.html", session=session, conversation=conversation, steps=steps(items.data, []),
                has_more=items.has_more)
