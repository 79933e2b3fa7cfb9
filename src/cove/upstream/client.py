"""What every HTTP upstream shares: one ``openai`` client per upstream and one error mapping."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from openai import AsyncOpenAI, AsyncStream

from cove.errors import ContextWindowExceeded, UpstreamError
from cove.upstream.base import Model
from cove.upstream.http import JsonPoster, StatusError, StreamFailed, Unreachable, usable

_CONTEXT_ERROR = re.compile(r"context[ _](length|size|window)|maximum context|too many tokens|prompt is too long"
                            r"|exceeds? the (available )?context", re.IGNORECASE)
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def make_client(base_url: str, api_key: str | None, *, max_retries: int = 3, timeout: float = 300.0) -> AsyncOpenAI:
    """One client per upstream. The SDK retries 408/409/429/5xx and failed connections with backoff.
    The timeout bounds each read, so a long generation that keeps streaming never times out."""
    # The SDK refuses an empty key; keyless local servers ignore whatever bearer token they get.
    return AsyncOpenAI(base_url=base_url, api_key=api_key or "none", max_retries=max_retries,
                       timeout=openai.Timeout(timeout, connect=10.0))


async def create(client: AsyncOpenAI, path: str, params: dict[str, Any]) -> Any:
    """What ``client.<resource>.create(**params)`` sends, answered as plain JSON (a dict, or a stream of
    dicts when ``params["stream"]``): without the SDK's transform of the params (Cove builds them as plain
    JSON, for which that walk through the SDK's typed dicts changes nothing) and without building its
    models of the answer (for a stream, one per chunk). Against a fast upstream those two were the
    largest costs of a response in the server. Retries, auth, timeouts, error events and errors are the
    SDK's own; the caller checks the shape of what it reads."""
    stream = bool(params.get("stream"))
    answer = await client.post(path, body=params, cast_to=object, stream=stream, stream_cls=AsyncStream[object],
                               options={"security": {"bearer_auth": True}})
    return _chunks(answer) if isinstance(answer, AsyncStream) else answer


async def _chunks(stream: AsyncStream[object]) -> AsyncIterator[object]:
    """A stream the caller closes as it closes ``JsonPoster``'s (closing it hangs up on the upstream)."""
    async with stream:
        async for chunk in stream:
            yield chunk


def upstream_message(exc: openai.APIStatusError | StatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return exc.message


def public_url(url: str) -> str:
    """``url`` as an error message may show it: no user, password or query (where keys hide)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def scrub_urls(text: str) -> str:
    """``text`` with the credentials of any URL in it removed (an SDK message may quote one)."""
    return _URL.sub(lambda match: public_url(match.group(0)), text)


@contextlib.contextmanager
def upstream_errors(where: str) -> Iterator[None]:
    """Turns SDK errors into Cove's: unreachable, refused (in the upstream's own words), or too long.
    ``where`` names the upstream in messages (``ClientModel.where``).
    The SDK's errors and those of ``JsonPoster`` (``upstream/http.py``) read the same to a client.
    """
    try:
        yield
    except openai.APIConnectionError as exc:  # includes timeouts
        raise UpstreamError(scrub_urls(f"{where} could not be reached: {exc.__cause__ or exc}")) from exc
    except Unreachable as exc:
        raise UpstreamError(scrub_urls(f"{where} could not be reached: {exc}")) from exc
    except (openai.APIStatusError, StatusError) as exc:
        message = scrub_urls(upstream_message(exc))
        if exc.status_code in (400, 413, 422) and (
                exc.code == "context_length_exceeded" or _CONTEXT_ERROR.search(message)):
            raise ContextWindowExceeded(f"The input is too long for the model: {message}", param="input",
                                        code="context_length_exceeded") from exc
        raise UpstreamError(f"{where} answered {exc.status_code}: {message}") from exc
    except (openai.APIError, StreamFailed) as exc:  # an error event inside a stream
        raise UpstreamError(scrub_urls(f"{where} failed: {exc.message}")) from exc
    except json.JSONDecodeError as exc:
        raise UpstreamError(f"{where} sent an event that is not JSON: {exc}") from exc


class ClientModel(Model):
    """A model behind an OpenAI-compatible HTTP API."""

    def __init__(self, base_url: str, api_key: str | None = None, *, client: AsyncOpenAI | None = None,
                 context_window: int = 8192, max_retries: int = 3, timeout: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.where = f"The model upstream at {public_url(self.base_url)}"
        """How error messages name it: without the credentials its URL may hold (clients read them)."""
        self.context_window = context_window
        self._owns_client = client is None
        self.client = client or make_client(self.base_url, api_key, max_retries=max_retries, timeout=timeout)
        self.poster = _poster(self.client) if usable(self.base_url) else None
        """The lean path for JSON posts where it serves as the SDK would (``upstream/http.py``)."""

    async def post(self, path: str, params: dict[str, Any]) -> Any:
        """What ``client.<resource>.create(**params)`` sends, answered as plain JSON: a dict, or for
        ``params["stream"]`` an async generator of dicts (close it to hang up early). Raises the SDK's
        errors or ``JsonPoster``'s; ``upstream_errors`` maps either."""
        if self.poster is not None:
            return await self.poster.post(path, params)
        return await create(self.client, path, params)

    async def aclose(self) -> None:
        if self.poster is not None:
            await self.poster.aclose()
        if self._owns_client:
            await self.client.close()


def _poster(client: AsyncOpenAI) -> JsonPoster:
    """A ``JsonPoster`` with the client's key, retries and timeouts (``make_client``'s, or a caller's)."""
    timeout = client.timeout
    read = timeout if isinstance(timeout, int | float) else getattr(timeout, "read", None)
    connect = getattr(timeout, "connect", None)
    return JsonPoster(str(client.base_url), client.api_key if isinstance(client.api_key, str) else None,
                      max_retries=client.max_retries, timeout=float(read) if read is not None else 300.0,
                      connect_timeout=float(connect) if connect is not None else 10.0)
