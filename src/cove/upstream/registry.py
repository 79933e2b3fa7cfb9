"""Which model name goes where: aliases from the models file, the default upstream, or the local model.

The models file (``COVE_MODELS_FILE``) names upstreams and the model names clients may send::

    default_upstream = "local-vllm"      # optional: where unknown names go if COVE_UPSTREAM_URL is unset

    [upstreams.local-vllm]
    url = "http://127.0.0.1:8000/v1"
    api = "chat"                         # or "responses"
    api_key_env = "VLLM_KEY"             # the key is read from this variable, never from the file
    context_window = 32768               # optional, for this upstream's models (see ``_window``)

    [models."gpt-4o-mini"]               # the name clients send
    upstream = "local-vllm"              # an upstream above, "default" (COVE_UPSTREAM_URL) or "local"
    model = "Qwen/Qwen2.5-7B-Instruct"   # the name the upstream knows; default: the same name
    context_window = 32768
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from openai import AsyncOpenAI

from cove.config import Settings
from cove.errors import UpstreamError
from cove.upstream.base import Model
from cove.upstream.chat import ChatCompletionsModel
from cove.upstream.client import make_client
from cove.upstream.responses import ResponsesApiModel
from cove.upstream.windows import UpstreamWindows

DEFAULT, LOCAL = "default", "local"


@dataclass
class Upstream:
    url: str
    api: str = "chat"
    api_key: str | None = None
    context_window: int | None = None


@dataclass
class Alias:
    upstream: str
    model: str
    context_window: int | None = None


class ModelRegistry:
    """Creates each model once and reuses it; one HTTP client per upstream."""

    def __init__(self, settings: Settings) -> None:
        self.context_window = settings.context_window
        self.local_max_tool_turns = settings.local_max_tool_turns
        self.upstreams: dict[str, Upstream] = {}
        self.aliases: dict[str, Alias] = {}
        self.default: str | None = None
        if settings.models_file is not None:
            self._load(settings.models_file)
        if settings.upstream_url:
            self.upstreams[DEFAULT] = Upstream(settings.upstream_url, settings.upstream_api, settings.upstream_api_key)
            self.default = DEFAULT
        for name, alias in self.aliases.items():
            if alias.upstream not in self.upstreams and alias.upstream != LOCAL:
                raise ValueError(f"models.{name!r} names upstream {alias.upstream!r}, which is not configured")
        self._clients: dict[str, AsyncOpenAI] = {}
        self._models: dict[tuple[str, int], Model] = {}
        self._local: Model | None = None
        self._windows = UpstreamWindows()
        self._created = int(time.time())

    def _load(self, path: Path) -> None:
        with path.open("rb") as file:
            data = tomllib.load(file)
        for name, entry in data.get("upstreams", {}).items():
            where = f"{path}: upstreams.{name}"
            if "api_key" in entry:
                raise ValueError(f"{where}: put the key in an environment variable and name it in api_key_env")
            if entry.get("api", "chat") not in ("chat", "responses") or not entry.get("url"):
                raise ValueError(f"{where}: needs url and an api of 'chat' or 'responses'")
            key_env = entry.get("api_key_env")
            if key_env and key_env not in os.environ:
                raise ValueError(f"{where}: api_key_env names {key_env}, which is not set")
            self.upstreams[name] = Upstream(entry["url"], entry.get("api", "chat"),
                                            os.environ[key_env] if key_env else None, entry.get("context_window"))
        for name, entry in data.get("models", {}).items():
            if "upstream" not in entry:
                raise ValueError(f"{path}: models.{name!r} needs an upstream")
            self.aliases[name] = Alias(entry["upstream"], entry.get("model", name), entry.get("context_window"))
        self.default = data.get("default_upstream")
        if self.default is not None and self.default not in self.upstreams:
            raise ValueError(f"{path}: default_upstream {self.default!r} is not one of the upstreams")

    async def resolve(self, name: str) -> tuple[Model, str]:
        """The model for a name clients send, and the name its upstream knows."""
        alias = self.aliases.get(name)
        if alias is None and self.default is None:
            return self._local_model(), name
        upstream_name, model_name = (alias.upstream, alias.model) if alias else (str(self.default), name)
        if upstream_name == LOCAL:
            return self._local_model(), model_name
        upstream = self.upstreams[upstream_name]
        window = await self._window(upstream_name, model_name, (alias.context_window if alias else None)
                                    or upstream.context_window)
        model = self._models.get((upstream_name, window))
        if model is None:
            kind = ResponsesApiModel if upstream.api == "responses" else ChatCompletionsModel
            model = kind(upstream.url, client=self._client(upstream_name), context_window=window)
            self._models[upstream_name, window] = model
        return model, model_name

    async def _window(self, upstream_name: str, model_name: str, configured: int | None) -> int:
        """The model's context window: the smaller of what the models file and the upstream say (the
        operator may cap it; the upstream cannot take more than it has), else ``COVE_CONTEXT_WINDOW``."""
        said = await self._windows.window(upstream_name, self._client(upstream_name), model_name)
        known = [window for window in (configured, said) if window is not None]
        return min(known) if known else self.context_window

    def _client(self, upstream_name: str) -> AsyncOpenAI:
        if upstream_name not in self._clients:
            upstream = self.upstreams[upstream_name]
            self._clients[upstream_name] = make_client(upstream.url, upstream.api_key)
        return self._clients[upstream_name]

    def _local_model(self) -> Model:
        if self._local is None:
            try:
                local_class = _local_class()
            except ImportError as exc:
                raise UpstreamError("No model upstream is configured (set COVE_UPSTREAM_URL or COVE_MODELS_FILE) "
                                    f"and the embedded local model is not available: {exc}") from exc
            self._local = local_class()
            self._local.max_tool_turns = self.local_max_tool_turns
        return self._local

    def warm_up(self) -> asyncio.Task[None] | None:
        """Loads the embedded model in the background when it is the fallback, so the first request
        does not wait for it."""
        if self.default is not None:
            return None
        try:
            model = self._local_model()
        except UpstreamError:
            return None
        load = getattr(model, "load", None)
        return asyncio.create_task(load()) if load is not None else None

    async def list_models(self) -> list[dict[str, Any]]:
        """``/v1/models`` entries: the aliases, the default upstream's own models (if it answers within
        2 s), and the local model when it is the fallback."""
        entries = {name: self._entry(name, alias.upstream) for name, alias in self.aliases.items()}
        if self.default is not None:
            client = self._client(self.default).with_options(max_retries=0, timeout=2.0)
            try:
                page = await asyncio.wait_for(client.models.list(), 2.0)
            except (openai.APIError, TimeoutError):
                pass  # an upstream without /models still serves the models it has
            else:
                for model in page.data:
                    entries.setdefault(model.id, self._entry(model.id, model.owned_by or self.default))
        else:
            with contextlib.suppress(ImportError):
                name = str(getattr(_local_class(), "name", LOCAL))
                entries.setdefault(name, self._entry(name, "cove"))
        return list(entries.values())

    def _entry(self, name: str, owner: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self._created, "owned_by": owner}

    async def aclose(self) -> None:
        for model in self._models.values():  # their own connections (``upstream/http.py``)
            await model.aclose()
        for client in self._clients.values():
            await client.close()
        if self._local is not None:
            await self._local.aclose()
        self._clients.clear()
        self._models.clear()
        self._local = None


def _local_class() -> type[Model]:
    """The embedded model's class, imported only when needed (it may load heavy libraries)."""
    module = importlib.import_module("cove.upstream.local")
    local_class: type[Model] = module.LocalModel
    return local_class
