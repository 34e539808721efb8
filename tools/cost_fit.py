#!/usr/bin/env python3
"""Fit each board's cost model on tools/cost_points.json, check it leave-one-network-out, write it down.

For every board with measured points (tools/cost_points.py) that have a published benchncnn figure
(../shared/reference/benchncnn.md): the weights (edgecnn.emulate.cost.fit, on every point) go into the
[cost] table of targets/<board>.toml with the leave-one-out median and worst error as its band, and
tools/cost_fit.md gets the table of every point: published, predicted by a fit that never saw the
network, error.

    python3 tools/cost_fit.py            # fit, write the TOMLs and tools/cost_fit.md
    python3 tools/cost_fit.py --check    # print only
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgecnn.emulate import cost  # noqa: E402

MIN_NETWORKS = 4  # fewer and a left-out network is predicted by a fit on two or three: no check at all


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="print, write nothing")
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
                   "", "| network | precision | threads | published ms | predicted ms | error |",
                   "|---|---|---:|---:|---:|---:|"]
        report += [f"| {r['network']} | {r['precision']} | {r['threads']} | {r['published']:.2f} | "
                   f"{r['predicted']:.2f} | {r['error']:+.1%} |" for r in rows]
        report.append("")
        if not args.check:
            write_toml(board, cost_table(weights, summary, networks, board, fitted["method"]))
    text = "\n".join(report) + "\n"
    print(text)
    if not args.check:
        (REPO / "tools" / "cost_fit.md").write_text(text)


if __name__ == "__main__":
    main()
