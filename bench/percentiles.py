"""p50 and p95, computed the same way by every benchmark here."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def p50_p95(samples: Sequence[float]) -> tuple[float, float]:
    """p50 is the median; p95 interpolates between ranks (``statistics.quantiles``, inclusive)."""
    p95 = statistics.quantiles(samples, n=100, method="inclusive")[94] if len(samples) > 1 else samples[0]
    return statistics.median(samples), p95
