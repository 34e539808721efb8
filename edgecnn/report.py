"""Bench results as a table, JSON, Markdown, CSV, or an accuracy-vs-latency plot.

Input is the bench document of docs/architecture.md: {"edgecnn", "target", "results": [row, ...]}.
JSON is that document unchanged; the other formats flatten each row into the same
columns, so a table on screen and a CSV in CI say the same thing.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from edgecnn.errors import DataError
from edgecnn.kinds import ReportFormat


COLUMNS = ["model", "backend", "precision", "pruning", "mode", "threads", "size_kb", "macs_m", "metric", "accuracy",
           "min_snr_db", "p50_ms", "p90_ms", "p99_ms", "fps", "e2e_ms", "instructions", "predicted_ms",
           "predicted_err_pct"]


def _pruning(row: dict) -> str:
    p = row.get("pruning")
    return f"{p['method']}:{p['ratio']}" if isinstance(p, dict) else "-"


def accuracy_value(row: dict) -> tuple[str, float | None]:
    """The row's primary accuracy metric and its value (a fraction), or ("-", None)."""
    acc = row.get("accuracy") or {}
    metric = acc.get("metric")
    return (metric, acc.get(metric)) if metric else ("-", None)


def latency_value(row: dict) -> float | None:
    """Measured p50 latency, else the predicted one (emulated mode), else None."""
    lat = row.get("latency_ms") or {}
    return lat.get("p50") if lat.get("p50") is not None else row.get("predicted_latency_ms")


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """One row -> the flat columns of COLUMNS (None where not measured)."""
    lat = row.get("latency_ms") or {}
    metric, value = accuracy_value(row)
    size = row.get("size_bytes")
    macs = row.get("macs")
    return {
        "model": row.get("model"), "backend": row.get("backend"), "precision": row.get("precision"),
        "pruning": _pruning(row), "mode": row.get("mode"), "threads": row.get("threads"),
        "size_kb": round(size / 1024, 1) if size else None,
        "macs_m": round(macs / 1e6, 1) if macs else None,
        "metric": metric, "accuracy": round(value, 4) if value is not None else None,
        "p50_ms": _r(lat.get("p50")), "p90_ms": _r(lat.get("p90")), "p99_ms": _r(lat.get("p99")),
        "min_snr_db": _min_snr(row),
        "fps": _r(row.get("fps"), 1), "e2e_ms": _r((row.get("end_to_end") or {}).get("total_ms")),
        "instructions": row.get("emulated_instructions"),
        "predicted_ms": _r(row.get("predicted_latency_ms")),
        # The cost model's leave-one-out median |error| on networks it was not fitted to, in percent.
        "predicted_err_pct": _r(100 * _band(row), 0) if _band(row) is not None else None,
    }


def _band(row: dict) -> float | None:
    band = ((row.get("prediction") or {}).get("error_band") or {}).get("median")
    return None if band is None or row.get("predicted_latency_ms") is None else float(band)


def _min_snr(row: dict) -> float | None:
    """The worst output's SNR against the source model (fidelity), in dB; None when not measured or identical."""
    values = [o.get("snr_db") for o in ((row.get("fidelity") or {}).get("outputs") or [])]
    values = [v for v in values if v is not None]
    return round(min(values), 1) if values else None


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(float(x), digits)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and value >= 10000:
        return f"{value:,}"
    return str(value)


def render(doc: dict[str, Any], fmt: str | ReportFormat) -> str:
    """The document in one text format (table is plain text here; the CLI prints it with rich)."""
    fmt = ReportFormat(fmt)
    if fmt is ReportFormat.JSON:
        return json.dumps(doc, indent=1)
    rows = [flatten(r) for r in doc.get("results", [])]
    if fmt is ReportFormat.CSV:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if v is None else v for k, v in r.items()})
        return buf.getvalue()
    lines = [f"edgecnn {doc.get('edgecnn', '?')} bench, target {doc.get('target', '?')}", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


MIN_NAME = 4  # a name column folds (on a terminal too narrow for the table) to no fewer characters

_SHORT = {"precision": "prec", "pruning": "prune", "threads": "thr", "size_kb": "KB", "macs_m": "MMACs",
          "accuracy": "acc", "min_snr_db": "SNR dB", "fps": "FPS@p50", "e2e_ms": "e2e ms", "p50_ms": "p50 ms", "p90_ms": "p90 ms", "p99_ms": "p99 ms",
          "instructions": "instructions", "predicted_ms": "pred. ms",
          "predicted_err_pct": "pred. ±%"}


def rich_table(doc: dict[str, Any]):
    """A rich Table of the document for the terminal; columns empty in every row are left out."""
    from rich.table import Table

    rows = [flatten(r) for r in doc.get("results", [])]
    cols = [c for c in COLUMNS if c not in ("mode", "metric") and any(r[c] not in (None, "-") for r in rows)]
    mode = ", ".join(sorted({str(r["mode"]) for r in rows})) or "-"
    table = Table(title=f"edgecnn bench: target {doc.get('target')} ({mode})")
    cells = [[f"{r['metric']} {r[c]:.3f}" if c == "accuracy" and r[c] is not None else _cell(r[c]) for c in cols]
             for r in rows]
    for i, c in enumerate(cols):
        if c in ("model", "backend", "precision", "pruning"):  # a name folds on a terminal too narrow for the table
            longest = max([len(row[i]) for row in cells] + [len(_SHORT.get(c, c))])
            table.add_column(_SHORT.get(c, c), overflow="fold", min_width=min(longest, MIN_NAME))
        else:  # numbers never wrap: a split "map50_9 5 0.484" misreads
            table.add_column(_SHORT.get(c, c), justify="right", no_wrap=True)
    for row in cells:
        table.add_row(*row)
    return table


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points (latency, accuracy) that no other point beats on both (lower latency, higher accuracy)."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for l2, a2 in points)
        if not dominated:
            front.append(i)
    return front


def plot(doc: dict[str, Any], path: str | Path) -> Path:
    """Accuracy vs latency per variant, one panel per metric, the Pareto front marked. Writes a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DataError("--plot needs matplotlib: pip install matplotlib") from None
    by_metric: dict[str, list[tuple[float, float, str]]] = {}
    for row in doc.get("results", []):
        metric, acc = accuracy_value(row)
        lat = latency_value(row)
        if acc is None or lat is None:
            continue
        label = f"{row['model']} {row['backend']} {row['precision']}" + \
                (f" {_pruning(row)}" if row.get("pruning") else "")
        by_metric.setdefault(metric, []).append((lat, acc, label))
    if not by_metric:
        raise DataError("nothing to plot: no row has both an accuracy and a (measured or predicted) latency")
    fig, axes = plt.subplots(1, len(by_metric), figsize=(6.5 * len(by_metric), 4.8), squeeze=False)
    predicted = any((r.get("latency_ms") or {}).get("p50") is None for r in doc.get("results", []))
    for ax, (metric, pts) in zip(axes[0], sorted(by_metric.items())):
        front = set(pareto_front([(p[0], p[1]) for p in pts]))
        for i, (lat, acc, label) in enumerate(pts):
            ax.scatter(lat, acc, marker="*" if i in front else "o", s=120 if i in front else 40,
                       color="tab:red" if i in front else "tab:blue", zorder=3)
            ax.annotate(label, (lat, acc), fontsize=7, xytext=(4, 4), textcoords="offset points")
        fp = sorted((pts[i][0], pts[i][1]) for i in front)
        ax.plot([p[0] for p in fp], [p[1] for p in fp], "--", color="tab:red", lw=1, label="Pareto front")
        ax.set_xlabel("latency p50 (ms)" + (", predicted where emulated" if predicted else ""))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"edgecnn bench, target {doc.get('target')}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
