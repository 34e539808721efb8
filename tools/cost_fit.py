#!/usr/bin/env python3
"""Fit each board's cost model on tools/cost_points.json, check it leave-one-network-out, write it down.

For every board with measured points (tools/cost_points.py) that have a published benchncnn figure
(../shared/reference/benchncnn.md): the weights (edgecnn.emulate.cost.fit, on every point) go into the
[cost] table of targets/<board>.toml with the leave-one-out median and worst error as its band, and
tools/cost_fit.md gets the table of every point: published, predicted by a fit that never saw the
network, error.

    python3 tools/cost_fit.py            # fit, write the TOMLs and tools/cost_fit.md
    python3 tools/cost_fit.py --check    # print only
    python3 tools/cost_fit.py --nested   # also the nested check of the feature choice (about 5 minutes)

The model's features (edgecnn.emulate.cost.FEATURES) were chosen among CANDIDATES by the Pi 4's
leave-one-network-out error; that error is then optimistic, because the choice saw every network.
`--nested` makes the choice again inside each fold, without the network it then predicts, and reports
that error too: what a feature set chosen this way can be expected to do on a network it never saw.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgecnn.emulate import cost  # noqa: E402

MIN_NETWORKS = 4  # fewer and a left-out network is predicted by a fit on two or three: no check at all
# The profile's quantities the feature choice looked at (cost.features computes the first nine).
CANDIDATES = ("vec_fmul", "vec_imul", "other", "l1_miss", "l1_miss_all", "traffic", "dram", "l2_miss", "futex",
              "mul_mix", "insn", "mem_ops", "vec_mem")
SUBSET_SIZES = (3, 4, 5)


def candidate_features(per_thread: list[dict]) -> dict[str, float]:
    """cost.features plus the other quantities the choice of features considered."""
    f = cost.features(per_thread)
    busiest = max(per_thread, key=lambda s: s["insn"])
    f["mul_mix"] = 0.5 * f["vec_fmul"] + f["vec_imul"]  # an A72 issues 2 FMLA but 1 SMLAL per cycle
    f["insn"] = float(busiest["insn"])
    f["mem_ops"] = float(busiest["loads"] + busiest["stores"])
    f["vec_mem"] = float(busiest["vec_load"] + busiest["vec_store"])
    return f


def _subsets():
    for k in SUBSET_SIZES:
        for names in itertools.combinations(CANDIDATES, k):
            if "mul_mix" in names and ("vec_fmul" in names or "vec_imul" in names):
                continue
            if "insn" in names and "other" in names:
                continue
            yield names


def int8_pairs(rows: list[dict]):
    """(int8 row, its fp32 row at the same thread count) for each network with both."""
    by = {(r["network"], r["threads"]): r for r in rows}
    for (net, threads), r in sorted(by.items()):
        base = by.get((net.removesuffix("_int8"), threads))
        if net.endswith("_int8") and base:
            yield r, base


def table_lines(rows: list[dict]) -> list[str]:
    """Published against predicted, one line per point."""
    return (["| network | precision | threads | published ms | predicted ms | error |", "|---|---|---:|---:|---:|---:|"]
            + [f"| {r['network']} | {r['precision']} | {r['threads']} | {r['published']:.2f} | "
               f"{r['predicted']:.2f} | {r['error']:+.1%} |" for r in rows])


def _rank(points: list[dict], measured: dict, names: tuple) -> tuple:
    """How a feature set does left-one-out: (any int8/fp32 ratio the wrong way, worst |error| at a thread
    count, median |error|); lower is better."""
    rows = cost.leave_one_out(points, measured, lambda p, m: cost.fit(p, m, names))
    wrong = any((r["predicted"] < base["predicted"]) != (r["published"] < base["published"])
                for r, base in int8_pairs(rows))
    threads = sorted({r["threads"] for r in rows})
    summaries = [cost.error_summary([r for r in rows if r["threads"] == t]) for t in threads]
    return wrong, max(s["worst"] for s in summaries), max(s["median"] for s in summaries)


def choose_features(points: list[dict], measured: dict) -> tuple:
    return min(_subsets(), key=lambda names: _rank(points, measured, names))


def nested_check(points: list[dict], measured: dict) -> list[dict]:
    """Leave-one-network-out with the feature choice inside each fold: rows like cost.leave_one_out's."""
    points = [{**p, "features": candidate_features(p["per_thread"])} for p in points]
    rows = []
    for name in sorted({cost._network(p) for p in points}):
        rest = [p for p in points if cost._network(p) != name]
        names = choose_features(rest, measured)
        w = cost.fit(rest, measured, names)
        for p in points:
            if cost._network(p) == name:
                pred, pub = cost.predict_ms(w, p["features"]), measured[p["key"]]
                rows.append({"key": p["key"], "network": p["network"], "threads": p["threads"],
                             "precision": p["precision"], "published": pub, "predicted": round(pred, 3),
                             "error": pred / pub - 1, "features": names})
    return rows


def cost_table(weights: dict, summary: dict, networks: list[str], board: str, method: str) -> str:
    lines = ["# Predicted latency of emulated runs (edgecnn.emulate.cost): the guest profile's features x these",
             "# weights (ns each), fitted by tools/cost_fit.py on published benchncnn figures of this board",
             f"# ({summary['points']} points: {', '.join(networks)}, 1 and/or 4 threads; fit: {method}); the",
             "# errors are leave-one-network-out (tools/cost_fit.md).",
             "[cost]", 'runtime = "ncnn"',
             f"median_error = {summary['median']:.3f}", f"worst_error = {summary['worst']:.3f}",
             f'reference = "ncnn benchncnn on the {board} board ({summary["points"]} published figures, '
             f'{len(networks)} networks)"', "", "[cost.weights_ns]"]
    lines += [f"{k} = {weights[k]:.6g}" for k in cost.FEATURES if k in weights]
    return "\n".join(lines) + "\n"


def write_toml(board: str, text: str) -> None:
    path = REPO / "targets" / f"{board}.toml"
    old = path.read_text()
    # The [cost] block is last in the file: comments above it, [cost] and [cost.weights_ns].
    cut = re.search(r"(?m)^# Predicted latency of emulated runs", old) or re.search(r"(?m)^\[cost\]", old)
    head = old[:cut.start()] if cut else old
    path.write_text(head.rstrip("\n") + "\n\n" + text)


def ratio_lines(rows: list[dict]) -> list[str]:
    """int8/fp32, predicted left-one-out against published, for each network with both."""
    out = [f"{base['network']} at {r['threads']} thread(s) {r['predicted'] / base['predicted']:.2f} "
           f"(published {r['published'] / base['published']:.2f})" for r, base in int8_pairs(rows)]
    return ["", "int8/fp32, predicted left-one-out: " + "; ".join(out) + "."] if out else []


def nested_lines(points: list[dict], measured: dict) -> list[str]:
    rows = nested_check(points, measured)
    by_threads = {t: cost.error_summary([r for r in rows if r["threads"] == t]) for t in sorted({r["threads"] for r in rows})}
    chosen = sorted({r["features"] for r in rows})
    lines = ["", "Nested check (the features chosen again in each fold, without the network predicted): "
             + "; ".join(f"{t} thread(s): median {s['median']:.1%}, worst {s['worst']:.1%}" for t, s in by_threads.items())
             + ". Feature sets chosen: " + "; ".join(", ".join(c) for c in chosen) + ".", ""]
    return lines + table_lines(rows) + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="print, write nothing")
    ap.add_argument("--nested", action="store_true", help="also check the feature choice itself (slow)")
    args = ap.parse_args()
    doc = json.loads((REPO / cost.POINTS_FILE).read_text())
    table = cost.published()
    report = ["# Board cost model: leave-one-network-out check", "",
              "`python3 tools/cost_fit.py` on tools/cost_points.json (measured by tools/cost_points.py) and",
              "../shared/reference/benchncnn.md. *predicted* comes from a fit on every other network of the",
              "same board (the network's fp32 and int8 rows are left out together).", ""]
    for board in cost.BOARDS:
        fitted = cost.fit_board(doc, board, table)
        networks, rows, weights = fitted["networks"], fitted["rows"], fitted["weights"]
        if len(networks) < MIN_NETWORKS:
            print(f"{board}: {len(networks)} network(s) measured, {MIN_NETWORKS} needed to fit and check")
            continue
        summary = cost.error_summary(rows)
        by_threads = {t: cost.error_summary([r for r in rows if r["threads"] == t])
                      for t in sorted({r["threads"] for r in rows})}
        print(f"{board}: {summary['points']} points, LOO median {summary['median']:.1%}, worst "
              f"{summary['worst']:.1%}; weights {({k: round(v, 4) for k, v in weights.items()})}")
        report += [f"## {board}", "", f"Fit: {fitted['method']}. Weights (ns): "
                   + ", ".join(f"{k} {v:.4g}" for k, v in weights.items()),
                   "", f"Leave-one-out |error|: median {summary['median']:.1%}, worst {summary['worst']:.1%} "
                   f"({summary['points']} points); " + "; ".join(
                       f"{t} thread(s): median {s['median']:.1%}, worst {s['worst']:.1%}" for t, s in by_threads.items()),
                   ""] + table_lines(rows)
        report += ratio_lines(rows) + [""]
        if args.nested and board == cost.BASE_BOARD:
            report += nested_lines(*cost.board_points(doc, board, table))
        if not args.check:
            write_toml(board, cost_table(weights, summary, networks, board, fitted["method"]))
    text = "\n".join(report) + "\n"
    print(text)
    if not args.check:
        (REPO / "tools" / "cost_fit.md").write_text(text)


if __name__ == "__main__":
    main()
