"""The regression gate: compare a bench run with a committed baseline.

    edgecnn bench --target a72 --emulate --baseline ci/a72.json   # exit 1 on any regression

Rows are matched by what identifies a variant (model, weights, backend, precision,
pruning, mode). Every regression is listed, not just the first: a CI log should
say everything that got worse in one go. A baseline row with no counterpart in
the run is a regression too (a variant that silently stopped being built is how
regressions hide).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from edgecnn.errors import DataError


@dataclass(frozen=True)
class Thresholds:
    """What counts as a regression. Accuracy drops are in percentage points; increases in percent."""

    max_map_drop: float = 0.5
    max_top1_drop: float = 0.5
    max_latency_increase: float = 10.0
    max_instructions_increase: float = 2.0


@dataclass(frozen=True)
class Regression:
    variant: str
    what: str  # "map50_95", "top1", "latency p50", "instructions", "missing"
    baseline: float | None
    current: float | None
    limit: str

    def __str__(self) -> str:
        if self.what == "missing":
            return f"{self.variant}: in the baseline but not in this run"
        return f"{self.variant}: {self.what} {_fmt(self.baseline)} -> {_fmt(self.current)} ({self.limit})"


def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def variant_key(row: dict[str, Any]) -> tuple:
    pruning = row.get("pruning") or None
    pruning_key = (pruning.get("method"), pruning.get("ratio")) if isinstance(pruning, dict) else None
    return (row.get("model"), row.get("weights"), row.get("backend"), row.get("precision"), pruning_key,
            row.get("mode"))


def variant_name(row: dict[str, Any]) -> str:
    name = f"{row.get('model')} {row.get('backend')} {row.get('precision')}"
    pruning = row.get("pruning")
    if isinstance(pruning, dict):
        name += f" pruned {pruning.get('method')}:{pruning.get('ratio')}"
    return f"{name} ({row.get('mode')})"


def load_baseline(path: str | Path) -> dict[str, Any]:
    """A bench JSON file written by `edgecnn bench --format json -o FILE`, checked row by row.

    DataError naming the file (and the row and field) for anything compare() could not read.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"baseline {path} is a directory; give the bench JSON file inside it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"baseline not found: {path} (write one with `edgecnn bench ... --format json -o {path}`)") \
            from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"baseline {path} is not valid JSON ({e})") from None
    except OSError as e:
        raise DataError(f"cannot read baseline {path}: {e.strerror or e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise DataError(f"baseline {path} is not a bench JSON file (no \"results\" list)")
    if not isinstance(data.get("target"), (str, type(None))):
        raise DataError(f"baseline {path}: \"target\" must be a string, got {data['target']!r}")
    for i, row in enumerate(data["results"]):
        problem = _row_problem(row)
        if problem:
            raise DataError(f"baseline {path}: results[{i}] {problem} (is this a `bench --format json` file?)")
    return data


# What compare() reads of a row: field -> allowed types (None: may be null or absent).
_ROW_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,), "backend": (str,), "precision": (str,), "mode": (str,), "weights": (str, type(None)),
    "pruning": (dict, type(None)), "accuracy": (dict, type(None)), "latency_ms": (dict, type(None)),
    "emulated_instructions": (int, float, type(None)),
}
_NUMBER = (int, float, type(None))


def _row_problem(row: Any) -> str | None:
    """What is wrong with one result row, in words, or None when compare() can read it."""
    if not isinstance(row, dict):
        return f"must be an object, got {type(row).__name__} {row!r:.60}"
    for key, types in _ROW_FIELDS.items():
        value = row.get(key)
        if key not in row and type(None) in types:
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            return f"field {key!r} must be {_words(types)}, got {value!r:.60}"
    nested = [("pruning", "method", (str, type(None))), ("pruning", "ratio", _NUMBER),
              ("latency_ms", "p50", _NUMBER), *(("accuracy", m, _NUMBER) for m in ("map50_95", "map50", "top1"))]
    for key, sub, types in nested:
        value = (row.get(key) or {}).get(sub)
        if not isinstance(value, types) or isinstance(value, bool):
            return f"field {key}.{sub} must be {_words(types)}, got {value!r:.60}"
    return None


def _words(types: tuple[type, ...]) -> str:
    names = {str: "a string", dict: "an object", int: "a number", float: "a number"}
    words = list(dict.fromkeys(names[t] for t in types if t is not type(None)))
    return " or ".join(words) + (" or null" if type(None) in types else "")


def _increase(base: float | None, cur: float | None) -> float | None:
    if base is None or cur is None or base <= 0:
        return None
    return (cur - base) / base * 100.0


def compare(current: Iterable[dict[str, Any]], baseline: dict[str, Any],
            thresholds: Thresholds = Thresholds(), target: str | None = None) -> list[Regression]:
    """Every regression of `current` rows against the baseline document."""
    if target is not None and baseline.get("target") not in (None, target):
        raise DataError(f"the baseline is for target {baseline.get('target')!r}, this run is for {target!r}")
    rows = {variant_key(r): r for r in current}
    found: list[Regression] = []
    for base in baseline["results"]:
        name = variant_name(base)
        cur = rows.get(variant_key(base))
        if cur is None:
            found.append(Regression(name, "missing", None, None, "variant not run"))
            continue
        found.extend(_accuracy(name, base.get("accuracy"), cur.get("accuracy"), thresholds))
        base_p50 = (base.get("latency_ms") or {}).get("p50")
        cur_p50 = (cur.get("latency_ms") or {}).get("p50")
        inc = _increase(base_p50, cur_p50)
        if inc is not None and inc > thresholds.max_latency_increase:
            found.append(Regression(name, "latency p50 ms", base_p50, cur_p50,
                                    f"+{inc:.1f}% > {thresholds.max_latency_increase:g}%"))
        base_n, cur_n = base.get("emulated_instructions"), cur.get("emulated_instructions")
        inc = _increase(base_n, cur_n)
        if inc is not None and inc > thresholds.max_instructions_increase:
            found.append(Regression(name, "instructions", base_n, cur_n,
                                    f"+{inc:.2f}% > {thresholds.max_instructions_increase:g}%"))
    return found


def _accuracy(name: str, base: dict | None, cur: dict | None, t: Thresholds) -> list[Regression]:
    if not base or not cur:
        return []
    out = []
    for metric, limit in (("map50_95", t.max_map_drop), ("map50", t.max_map_drop), ("top1", t.max_top1_drop)):
        b, c = base.get(metric), cur.get(metric)
        if b is None or c is None:
            continue
        drop = (b - c) * 100.0  # fractions -> percentage points
        if drop > limit + 1e-9:
            out.append(Regression(name, metric, b, c, f"-{drop:.2f} pt > {limit:g} pt"))
    return out
