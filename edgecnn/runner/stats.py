"""Latency statistics: the figures the bench JSON reports for a list of timed runs.

numpy only, so the runner computes them on the board and bench reuses them on the PC.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

LATENCY_KEYS = ("mean", "p50", "p90", "p99", "std")


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """{mean, p50, p90, p99, std} in ms of the timed runs.

    Percentiles are numpy's default (linear interpolation between closest ranks);
    std is the population standard deviation (ddof=0), defined for one run too.
    """
    x = np.asarray(samples_ms, np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("latency statistics need at least one timed run")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError("latency samples must be finite and non-negative")
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "std": float(x.std())}


def fps(latency_ms: float) -> float | None:
    """Inferences per second at the given latency (None for zero). The bench JSON's "fps" is 1000 / p50, so it
    agrees with the p50 column; "fps_mean" is 1000 / mean, the throughput of back-to-back invokes."""
    return 1000.0 / latency_ms if latency_ms > 0 else None
