"""What `--fallback` does when int8 drops more than `--max-drop`: better ranges first, then float layers.

Order (docs/architecture.md, "Quantize backends"):
1. Outlier-robust calibration ranges with every layer still int8: the backend's
   percentile steps (TFLite: 99.99, then 99.9). MobileNetV3 goes from 2.6 points
   to under 1 this way. Detector heads need their range tails, so each candidate
   is validated like any other attempt and the best one wins, min/max included.
2. If that is not enough: keep the most sensitive layers in float on top of the
   best ranges (sensitivity.search: doubling, then bisecting).

Backend-agnostic: it talks to a quantize backend session only through
use_method / quantize / sensitivity / short_name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from edgecnn.kinds import QuantMethod
from edgecnn.quantize import sensitivity as sens


@dataclass
class Candidate:
    """One quantized model and how it scored."""

    drop: float
    model: bytes
    evaluation: Any  # quantize.validate.Evaluation


@dataclass
class Outcome:
    chosen: Candidate
    method: str  # the calibration method the chosen model was quantized with
    percentile: float | None  # its percentile, when the method is percentile
    ranked: list[sens.LayerError]  # sensitivity under the chosen ranges
    float_layers: list[str] = field(default_factory=list)  # short names of the layers kept in float
    steps: list[str] = field(default_factory=list)  # what was tried, in order, for the report


def search(session, first: Candidate, ranked: list[sens.LayerError], max_drop: float, method: str,
           evaluate: Callable[[bytes], Any], drop_of: Callable[[Any], float],
           describe: Callable[[dict, float], str], sensitivity_samples: int,
           say: Callable[[str], None]) -> Outcome:
    """The int8 model closest to the budget: AccuracyError (from sensitivity.search) when nothing gets inside.

    first: the plain quantization that missed the budget. evaluate: model bytes -> Evaluation on the
    labelled held-out set; drop_of: Evaluation -> points lost; describe(accuracy, drop) words an attempt.
    """
    steps: list[str] = []

    def attempt(layers: list[str]) -> sens.Attempt:
        say(f"fallback: {len(layers)} layer(s) in float")
        model = session.quantize(layers)
        ev = evaluate(model)
        return sens.Attempt(layers, drop_of(ev), Candidate(drop_of(ev), model, ev))

    tried: dict[str, tuple[Candidate, float | None]] = {"minmax": (first, None)}
    if method == QuantMethod.MINMAX.value and QuantMethod.PERCENTILE in session.methods:
        for pct in session.percentile_steps:
            say(f"fallback: percentile {pct:g} calibration ranges")
            session.use_method(QuantMethod.PERCENTILE.value, pct)
            a = attempt([])
            tried[f"percentile {pct:g}"] = (a.result, pct)
            steps.append(f"calibration percentile {pct:g}: drop {a.drop:.2f} points")
            if a.drop <= max_drop:
                break
    label = min(tried, key=lambda k: tried[k][0].drop)
    best, pct = tried[label]
    if pct is not None:
        method = QuantMethod.PERCENTILE.value
        session.use_method(method, pct)
    else:
        session.use_method(method)
    outcome = Outcome(best, method, pct, ranked, [], steps)
    if best.drop <= max_drop:
        return outcome
    if pct is not None:
        say("measuring per-layer sensitivity with those ranges")
        outcome.ranked = sens.rank(session.sensitivity(best.model, sensitivity_samples), session.short_name)
    steps.append(f"layers kept in float on top of {label} ranges")
    found = sens.search(outcome.ranked, attempt, max_drop,
                        lambda a: describe(a.result.evaluation.accuracy, a.drop))
    short = {r.layer: r.short for r in outcome.ranked}
    outcome.chosen = found.chosen.result
    outcome.float_layers = [short[name] for name in found.chosen.float_layers]
    return outcome
