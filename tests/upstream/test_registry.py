"""ModelRegistry: names routed through aliases, the default upstream, or nowhere, with real upstreams."""

from __future__ import annotations

import asyncio
import importlib
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cove.config import Settings
from cove.errors import UpstreamError
from cove.upstream.base import Model, ModelRequest, TextDelta
from cove.upstream.chat import ChatCompletionsModel
from cove.upstream.registry import ModelRegistry
from cove.upstream.responses import ResponsesApiModel
from tests.scripted_upstream import Reply, ScriptedUpstream
from tests.upstream.conftest import events_of

T = TypeVar("T")


def settings(**fields: Any) -> Settings:
    return Settings(data_dir=Path("/tmp/cove-registry-test"), **fields)


def write_models(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def within(registry: ModelRegistry, work: Callable[[], Awaitable[T]]) -> T:
    """Runs ``work`` and closes the registry, in one event loop (clients belong to the loop they ran in)."""

    async def main() -> T:
        try:
            return await work()
        finally:
            await registry.aclose()

    return asyncio.run(main())


async def answer(registry: ModelRegistry, name: str) -> str:
    model, upstream_name = await registry.resolve(name)
    events = await events_of(model, ModelRequest(model=upstream_name, input=[{"role": "user", "content": "hi"}]))
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def test_aliases_from_the_models_file(tmp_path: Path, upstream: ScriptedUpstream,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_KEY", "sk-vllm")
    path = write_models(tmp_path, f"""
[upstreams.local-vllm]
url = "{upstream.url}"
api = "chat"
api_key_env = "VLLM_KEY"
context_window = 16384

[upstreams.native]
url = "{upstream.url}"
api = "responses"

[models."gpt-4o-mini"]
upstream = "local-vllm"
model = "Qwen/Qwen2.5-7B-Instruct"
context_window = 32768

[models."qwen-small"]
upstream = "local-vllm"

[models."gpt-5"]
upstream = "native"
model = "gpt-5-2025"
""")
    registry = ModelRegistry(settings(models_file=path))

    async def main() -> None:
        try:
            mini, mini_name = await registry.resolve("gpt-4o-mini")
            assert isinstance(mini, ChatCompletionsModel)
            assert (mini_name, mini.context_window) == ("Qwen/Qwen2.5-7B-Instruct", 32768)
            assert (await registry.resolve("gpt-4o-mini"))[0] is mini  # created once
            small, small_name = await registry.resolve("qwen-small")
            assert (small_name, small.context_window) == ("qwen-small", 16384)
            assert isinstance(small, ChatCompletionsModel) and small.client is mini.client  # one client per upstream
            native, native_name = await registry.resolve("gpt-5")
            assert isinstance(native, ResponsesApiModel) and native_name == "gpt-5-2025"

            upstream.script([Reply(text="from vllm"), Reply(text="from native")])
            assert await answer(registry, "gpt-4o-mini") == "from vllm"
            assert await answer(registry, "gpt-5") == "from native"
            chat, responses = upstream.received[-2:]
            assert (chat.path, chat.body["model"]) == ("/v1/chat/completions", "Qwen/Qwen2.5-7B-Instruct")
            assert chat.headers["authorization"] == "Bearer sk-vllm"
            assert (responses.path, responses.body["model"]) == ("/v1/responses", "gpt-5-2025")
        finally:
            await registry.aclose()

    asyncio.run(main())


def test_unknown_names_go_to_the_default_upstream_unchanged(upstream: ScriptedUpstream) -> None:
    registry = ModelRegistry(settings(upstream_url=upstream.url, upstream_api_key="sk-default", context_window=4096))

    async def main() -> None:
        try:
            model, name = await registry.resolve("meta-llama/Llama-3.1-8B-Instruct")
            assert name == "meta-llama/Llama-3.1-8B-Instruct" and model.context_window == 4096
            assert (await registry.resolve("another-model"))[0] is model
            assert await answer(registry, "meta-llama/Llama-3.1-8B-Instruct") == "echo: hi"
            assert upstream.requests[-1]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
            assert upstream.received[-1].headers["authorization"] == "Bearer sk-default"
        finally:
            await registry.aclose()

    asyncio.run(main())


def test_settings_come_from_the_environment(upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVE_UPSTREAM_URL", upstream.url)
    monkeypatch.setenv("COVE_UPSTREAM_API", "responses")
    monkeypatch.setenv("COVE_CONTEXT_WINDOW", "65536")
    registry = ModelRegistry(Settings())
    model, _ = within(registry, lambda: registry.resolve("anything"))
    assert isinstance(model, ResponsesApiModel) and model.context_window == 65536
    asyncio.run(registry.aclose())


def test_context_windows_come_from_the_upstream_and_the_models_file(tmp_path: Path,
                                                                   upstream: ScriptedUpstream) -> None:
    """vLLM says ``max_model_len``; the models file may cap it; where nobody says, the setting holds."""
    upstream.models = ["big", "capped", "small"]
    upstream.context_windows = {"big": 200_000, "capped": 200_000, "small": 4096}
    path = write_models(tmp_path, f"""
default_upstream = "vllm"
[upstreams.vllm]
url = "{upstream.url}"
[models."capped"]
upstream = "vllm"
context_window = 32768
[models."small"]
upstream = "vllm"
context_window = 32768
""")
    registry = ModelRegistry(settings(models_file=path, context_window=50_000))

    async def windows() -> list[int]:
        return [(await registry.resolve(name))[0].context_window for name in ("big", "capped", "small", "unlisted")]

    assert within(registry, windows) == [200_000, 32768, 4096, 50_000]
    assert sum(r.path == "/v1/models" for r in upstream.received) == 1  # asked once, then kept


def test_an_upstream_that_does_not_answer_leaves_the_configured_window(tmp_path: Path) -> None:
    path = write_models(tmp_path, f'default_upstream = "gone"\n[upstreams.gone]\nurl = "{closed_url()}"\n')
    registry = ModelRegistry(settings(models_file=path, context_window=12_345))
    model, _ = within(registry, lambda: registry.resolve("m"))
    assert model.context_window == 12_345


def test_list_models(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    upstream.models = ["served-a", "gpt-4o-mini"]
    path = write_models(tmp_path, f"""
[upstreams.other]
url = "{closed_url()}"
[models."gpt-4o-mini"]
upstream = "other"
[models."fast"]
upstream = "default"
model = "served-a"
""")
    registry = ModelRegistry(settings(models_file=path, upstream_url=upstream.url))
    models = within(registry, registry.list_models)
    assert [(m["id"], m["owned_by"]) for m in models] == [
        ("gpt-4o-mini", "other"), ("fast", "default"), ("served-a", "scripted")]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in models)
    assert upstream.received[-1].path == "/v1/models"


def test_list_models_when_the_default_upstream_is_down(tmp_path: Path) -> None:
    path = write_models(tmp_path, '[upstreams.x]\nurl = "http://127.0.0.1:9/v1"\n[models.alias]\nupstream = "x"\n')
    registry = ModelRegistry(settings(models_file=path, upstream_url=closed_url()))
    started = time.monotonic()
    models = within(registry, registry.list_models)
    assert [m["id"] for m in models] == ["alias"]
    assert time.monotonic() - started < 3


def test_default_upstream_named_in_the_file(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    path = write_models(tmp_path, f'default_upstream = "box"\n[upstreams.box]\nurl = "{upstream.url}"\n')
    registry = ModelRegistry(settings(models_file=path))
    assert within(registry, lambda: answer(registry, "whatever")) == "echo: hi"
    assert upstream.requests[-1]["model"] == "whatever"


def test_without_any_upstream_names_go_to_the_local_model() -> None:
    registry = ModelRegistry(settings())
    try:
        local_class = importlib.import_module("cove.upstream.local").LocalModel
    except ImportError:  # the embedded model (or its runtime) is not installed
        with pytest.raises(UpstreamError, match="No model upstream is configured"):
            within(registry, lambda: registry.resolve("gpt-4o-mini"))
        assert within(registry, registry.list_models) == []
        return

    async def resolved() -> list[tuple[Model, str]]:
        return [await registry.resolve("gpt-4o-mini"), await registry.resolve("other")]

    (model, name), (other, _) = within(registry, resolved)
    assert isinstance(model, local_class) and name == "gpt-4o-mini"
    assert other is model
    assert [m["id"] for m in within(registry, registry.list_models)] == [local_class.name]


@pytest.mark.parametrize(("text", "complaint"), [
    ('[upstreams.a]\nurl = "http://127.0.0.1:1/v1"\napi_key = "sk-secret"\n', "api_key_env"),
    ('[upstreams.a]\nurl = "http://127.0.0.1:1/v1"\napi_key_env = "COVE_TEST_UNSET_KEY"\n', "not set"),
    ('[upstreams.a]\nurl = "http://127.0.0.1:1/v1"\napi = "grpc"\n', "api of 'chat' or 'responses'"),
    ('[models.m]\nupstream = "nowhere"\n', "'nowhere', which is not configured"),
    ('[models.m]\nmodel = "x"\n', "needs an upstream"),
    ('default_upstream = "ghost"\n', "default_upstream 'ghost'"),
])
def test_bad_models_files_are_refused(tmp_path: Path, text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        ModelRegistry(settings(models_file=write_models(tmp_path, text)))
