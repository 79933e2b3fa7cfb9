"""The server's Prometheus metrics, served at ``GET /metrics`` (``api/metrics.py``; ``docs/metrics.md``).

Labels are chosen so that the number of series stays bounded whatever tenants send, and so that one
tenant's numbers never name another: there is no project, container, host or function-name label, and
a model name becomes a label only after an upstream served a turn for it (``model_label``), at most
``MAX_MODEL_LABELS`` of them. The fleet's gauges name nodes, which the operator's cluster defines. Egress
reasons, which name hosts and secrets, stay in the audit trail.

Counters and histograms are updated where things happen; gauges of what the store holds (containers by
status, the background queue) are read when scraped, by hooks (``on_scrape``) that the app registers:
the fleet adds its own gauges the same way, with ``registry=REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder

REGISTRY = CollectorRegistry(auto_describe=True)
"""Cove's own registry (not the library's global one), so what ``/metrics`` shows is exactly what is defined here
and by the hooks' owners, plus the process's CPU, memory and open files."""
ProcessCollector(registry=REGISTRY)

MAX_MODEL_LABELS = 100
"""Distinct ``model`` label values; later names are counted as ``other``."""

_QUICK = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_SLOW = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

CONTAINERS = Gauge("cove_containers", "Containers in the store by status (running, paused, stopped, expired).",
                   ["status"], registry=REGISTRY)
BACKGROUND = Gauge("cove_background_responses", "Background responses in the store waiting for a worker "
                   "(queued: the queue depth) or being generated (in_progress).", ["status"], registry=REGISTRY)
WEBHOOKS_PENDING = Gauge("cove_webhook_deliveries_pending", "Webhook deliveries waiting for their next attempt.",
                         registry=REGISTRY)
FLEET_NODES = Gauge("cove_fleet_nodes", "Fleet nodes in the registry by state (alive, lost); only with a fleet.",
                    ["state"], registry=REGISTRY)
FLEET_CONTAINERS = Gauge("cove_fleet_node_containers", "Containers placed on each fleet node, and lost with it.",
                         ["node", "state"], registry=REGISTRY)
FLEET_SLOTS = Gauge("cove_fleet_node_slots", "Containers each fleet node may hold.", ["node"], registry=REGISTRY)
FLEET_MEMORY = Gauge("cove_fleet_node_memory_bytes", "Each fleet node's memory: its total, and what its containers' "
                     "limits reserve (placed).", ["node", "kind"], registry=REGISTRY)
CREATE_SECONDS = Histogram("cove_container_create_seconds", "Time to make and start a container (the engine's "
                           "create: a warm pool hit or a cold start).", registry=REGISTRY, buckets=_QUICK)
EXEC_SECONDS = Histogram("cove_exec_seconds", "Time one command took in a container (API exec and hosted tools), "
                         "by how it ended.", ["outcome"], registry=REGISTRY, buckets=_QUICK)
RESPONSES = Counter("cove_responses", "Responses finished, by final status and model.", ["status", "model"],
                    registry=REGISTRY)
UPSTREAM_SECONDS = Histogram("cove_upstream_seconds", "Time of one model turn at an upstream, request to last "
                             "event, by model and outcome (ok, error, cancelled).", ["model", "outcome"],
                             registry=REGISTRY, buckets=_SLOW)
UPSTREAM_TOKENS = Counter("cove_upstream_tokens", "Tokens model turns used, by model and kind (input, output, "
                          "cached, reasoning).", ["model", "kind"], registry=REGISTRY)
TOOL_CALLS = Counter("cove_tool_calls", "Hosted tool calls run, by tool type and outcome (the output item's "
                     "status, error when the call raised, cancelled).", ["type", "outcome"], registry=REGISTRY)
TOOL_SECONDS = Histogram("cove_tool_call_seconds", "Time one hosted tool call took, by tool type.", ["type"],
                         registry=REGISTRY, buckets=_QUICK)
EGRESS = Counter("cove_egress_decisions", "The egress proxy's decisions on containers' requests (allowed, denied).",
                 ["decision"], registry=REGISTRY)
WEBHOOK_ATTEMPTS = Counter("cove_webhook_deliveries", "Webhook delivery attempts by result: delivered, retry "
                           "(failed, another attempt is due) or failed (no attempt left).", ["result"],
                           registry=REGISTRY)

_EXEC = {outcome: EXEC_SECONDS.labels(outcome) for outcome in ("exit", "timeout")}
"""Children bound once: a command's observation is a dict lookup and an ``observe``."""
_EGRESS = {True: EGRESS.labels("allowed"), False: EGRESS.labels("denied")}
_models: set[str] = set()
_hooks: list[Callable[[], Awaitable[None]]] = []


def exec_done(seconds: float, outcome: str) -> None:
    """A command ended (``outcome``: its ``Outcome.type``)."""
    child = _EXEC.get(outcome)
    (child or EXEC_SECONDS.labels(outcome)).observe(seconds)


def container_created(seconds: float) -> None:
    CREATE_SECONDS.observe(seconds)


def egress_decided(allowed: bool) -> None:
    _EGRESS[allowed].inc()


def webhook_attempted(result: str) -> None:
    """``result``: the delivery's status after the attempt (delivered, pending, failed)."""
    WEBHOOK_ATTEMPTS.labels("retry" if result == "pending" else result).inc()


def response_finished(status: str, model: str | None) -> None:
    RESPONSES.labels(status, model_label(model)).inc()


def admit_model(model: str) -> str:
    """Makes ``model`` a label value once an upstream has served it (a name a tenant made up never is)."""
    if model not in _models and len(_models) < MAX_MODEL_LABELS:
        _models.add(model)
    return model_label(model)


def model_label(model: str | None) -> str:
    return model if model in _models else "other"


def on_scrape(hook: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Runs ``hook`` before each scrape (it sets gauges, e.g. from the store); returns its removal."""
    _hooks.append(hook)
    return lambda: _hooks.remove(hook)


async def exposition(accept: str) -> tuple[bytes, str]:
    """Every metric, the scrape hooks' gauges fresh, in the format the scraper's ``Accept`` asks for
    (Prometheus text 0.0.4 unless it names a newer one or OpenMetrics), and that format's content type."""
    for hook in list(_hooks):
        await hook()
    encode, content_type = choose_encoder(accept)
    return encode(REGISTRY), content_type
