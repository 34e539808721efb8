"""Per-layer sensitivity and the fallback search, independent of the backend.

A backend measures, for every quantizable layer, the SNR (dB) of that layer's
output when it alone is quantized; lower means more sensitive. The fallback
search then keeps the most sensitive layers in float, doubling how many
(1, 2, 4, ...), until the accuracy drop is inside the allowed budget, then
bisects back to the smallest count that still passes (assuming more float
layers never hurt). That is O(log n) requantize-and-validate rounds, not n.
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
    """Keep the fewest most-sensitive layers in float (1, 2, 4, ..., then bisect) with drop <= max_drop.

    `try_layers` requantizes with those layers in float and validates; `what`
    describes an attempt for the error raised when even all layers in float
    do not get inside the budget.
    """
    attempts: list[Attempt] = []

    def run(count: int) -> Attempt:
        attempt = try_layers([r.layer for r in ranked[:count]])
        attempts.append(attempt)
        return attempt

    failed, count = 0, 1
    while True:
        count = min(count, len(ranked))
        attempt = run(count)
        if attempt.drop <= max_drop:
            break
        if count == len(ranked):
            raise AccuracyError(f"still {what(attempt)} with all {count} measured layers kept in float, "
                                f"past --max-drop {max_drop:g}")
        failed, count = count, count * 2
    # Doubling overshoots by up to 2x: bisect between the last count that failed and the first that passed.
    best, passed = attempt, count
    while passed - failed > 1:
        mid = (failed + passed) // 2
        attempt = run(mid)
        if attempt.drop <= max_drop:
            best, passed = attempt, mid
        else:
            failed = mid
    return FallbackOutcome(best, attempts)
