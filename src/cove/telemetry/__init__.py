"""What the server counts and traces: Prometheus metrics (``metrics.py``) and OpenTelemetry spans
(``tracing.py``).

Every layer may call in here (like ``cove.errors``), so this package imports nothing of Cove's layers:
the code that runs a command or a model turn makes a one-line call, and the numbers stay in one place.
The calls are flat functions on this package so a hot path pays one attribute lookup and one call.
"""

from cove.telemetry.calls import model_call, tool_call
from cove.telemetry.metrics import (
    container_created,
    egress_decided,
    exec_done,
    on_scrape,
    response_finished,
    webhook_attempted,
)
from cove.telemetry.tracing import span

__all__ = ["container_created", "egress_decided", "exec_done", "model_call", "on_scrape", "response_finished",
           "span", "tool_call", "webhook_attempted"]
