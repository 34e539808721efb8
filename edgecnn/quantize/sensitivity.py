"""Per-layer sensitivity and the fallback search, independent of the backend.

A backend measures, for every quantizable layer, the SNR (dB) of that layer's
output when it alone is quantized; lower means more sensitive. The fallback
search then keeps the most sensitive layers in float, doubling how many
(1, 2, 4, ...), until the accuracy drop is inside the allowed budget. Doubling
needs O(log n) requantize-and-validate rounds instead of n.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from edgecnn.errors import AccuracyError


@dataclass(frozen=True)
class LayerError:
    layer: str  # the backend's own name (TFLite tensor name, ONNX node name)
    short: str  # readable layer name for reports
    snr_db: float


def rank(errors: dict[str, float], short: Callable[[str], str] = lambda s: s) -> list[LayerError]:
    """Most sensitive (lowest SNR) first; ties broken by name so the order is reproducible."""
    return [LayerError(name, short(name), round(snr, 2)) for name, snr in
            sorted(errors.items(), key=lambda kv: (kv[1], kv[0]))]


@dataclass
class Attempt:
    float_layers: list[str]
    drop: float
    result: object = None  # whatever the backend/validation returned for this attempt


@dataclass
class FallbackOutcome:
    chosen: Attempt
    attempts: list[Attempt] = field(default_factory=list)


def search(ranked: Sequence[LayerError], try_layers: Callable[[list[str]], Attempt], max_drop: float,
           what: Callable[[Attempt], str]) -> FallbackOutcome:
    """Keep 1, 2, 4, ... of the most sensitive layers in float until the drop is <= max_drop.

    `try_layers` requantizes with those layers in float and validates; `what`
    describes an attempt for the error raised when even all layers in float
    do not get inside the budget.
    """
    attempts: list[Attempt] = []
    count = 1
    while True:
        count = min(count, len(ranked))
        attempt = try_layers([r.layer for r in ranked[:count]])
        attempts.append(attempt)
        if attempt.drop <= max_drop:
            return FallbackOutcome(attempt, attempts)
        if count == len(ranked):
            raise AccuracyError(f"still {what(attempt)} with all {count} measured layers kept in float, "
                                f"past --max-drop {max_drop:g}")
        count *= 2
