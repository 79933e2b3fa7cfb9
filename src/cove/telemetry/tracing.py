"""OpenTelemetry traces, exported over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Unset, the SDK and the exporter are never imported and ``span`` hands out one shared null context:
tracing then costs a global read per call. Set, the server installs the global tracer provider (the
exporter reads the standard ``OTEL_EXPORTER_OTLP_*`` variables, the batch processor ``OTEL_BSP_*``),
and FastAPI's own telemetry makes the HTTP request spans the model and tool spans nest under
(``fastapi_telemetry``).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_NOTHING: AbstractContextManager[None] = nullcontext()


def enabled() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def start() -> None:
    """Installs the tracer provider and its exporter, once per process, when the endpoint is set."""
    global _tracer, _provider
    if _provider is not None or not enabled():
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from cove import __version__

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "cove"),
                                "service.version": __version__})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(_query_redactor())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider, _tracer = provider, provider.get_tracer("cove", __version__)


def _query_redactor() -> Any:
    """A span processor that keeps a request span's query keys and drops their values: ``?token=`` view
    and terminal tokens open containers, and a trace store is no place for them (FastAPI redacts only
    cloud signatures)."""
    from urllib.parse import parse_qsl, urlencode

    from opentelemetry.sdk.trace import SpanProcessor

    class QueryRedactor(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            query = (span.attributes or {}).get("url.query")
            if isinstance(query, str):
                span.set_attribute("url.query", urlencode([(key, "REDACTED") for key, _value
                                                           in parse_qsl(query, keep_blank_values=True)]))

    return QueryRedactor()


def flush() -> None:
    """Sends the spans still batched (at shutdown: the last requests' spans are not lost)."""
    if _provider is not None:
        _provider.force_flush()


UNTRACED = frozenset({"/metrics", "/healthz"})
"""Paths polled every few seconds by scrapers and probes: their spans would bury the requests that matter."""


def fastapi_telemetry() -> TelemetryConfig:
    """FastAPI's native telemetry: request spans when tracing, nothing at all otherwise (its metrics and
    logs would go to providers Cove does not install; its per-operation spans add little to a trace)."""
    on = _provider is not None
    return {"tracer_provider": _provider, "tracing": on, "metrics": False, "logs": False,
            "operation_spans": False, "auto_configure": False, "exclude": lambda scope: scope["path"] in UNTRACED}


def span(name: str, attributes: dict[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A span around a block, the current one its parent; a shared null context when not tracing."""
    if _tracer is None:
        return _NOTHING
    return _tracer.start_as_current_span(name, attributes=attributes)
