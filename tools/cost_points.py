#!/usr/bin/env python3
"""Profile the benchncnn networks under qemu: the measurements the board cost model is fitted on (issue 17).

For each published row of ../shared/reference/benchncnn.md whose network the zoo can rebuild
(edgecnn.zoo.benchnets.BENCHNCNN_NETWORKS, random weights, as benchncnn runs them) and each board and
thread count, the ncnn bundle runs under qemu with the board's core and the counting plugin's profile:
every guest thread's instructions by class, memory traffic and futex calls, and the misses of a cache
model with the board's L1/L2 ([cache] in targets/<name>.toml). The second of two inferences is kept (the
first warms the caches, as benchncnn's loop does).

Resumable: each point is written to tools/cost_points.json as soon as it is measured, and points already
there are skipped (delete a point, or pass --redo, to measure it again).

    python3 tools/cost_points.py                          # every board, network, thread count
    python3 tools/cost_points.py --targets a72 --networks mobilenet,mobilenet_int8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgecnn.emulate.cost import BOARDS, POINTS_FILE, bundle_precision, published  # noqa: E402

POINTS = REPO / POINTS_FILE


def load_points() -> dict:
    return json.loads(POINTS.read_text()) if POINTS.is_file() else {"points": {}}


def save_points(doc: dict) -> None:
    tmp = POINTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    tmp.replace(POINTS)


def measure(target, row: str, ref: str, threads: int, log) -> dict:
    from edgecnn.bench.fidelity import inputs_for
    from edgecnn.compile import compile_model
    from edgecnn.emulate.bundle import run_bundle_emulated
    from edgecnn.emulate.plugin import profile_args

    from edgecnn.data.demo import demo_path
    from edgecnn.zoo import parse_model_ref

    precision = bundle_precision(row, target.name)
    calib = None
    if precision == "int8":  # random weights: any images give ranges; a folder without labels fits any task
        task = parse_model_ref(ref)[0].task
        calib = "demo-classification" if task == "classification" else str(demo_path("detection", "val") / "images")
    built = compile_model(ref, target, backend="ncnn", precision=precision, weights="random", verify=False,
                          calib=calib, log=log)
    inputs = inputs_for(built.bundle, None, 2)[1]
    cache = target.cache
    started = time.perf_counter()
    run = run_bundle_emulated(built.bundle, inputs, target, threads=threads,
                              plugin_args=profile_args(cache.l1, cache.l2))
    per_thread = sorted(run.profile[-1].values(), key=lambda s: -s["insn"])
    return {"target": target.name, "network": row, "model": ref, "precision": precision, "threads": threads,
            "qemu_cpu": target.qemu_cpu, "l1": list(cache.l1), "l2": list(cache.l2),
            "bundle": built.bundle.path.name,
            "guest_seconds": round(time.perf_counter() - started, 1), "per_thread": per_thread}


def main() -> None:
    from edgecnn.targets import get_target
    from edgecnn.zoo.benchnets import BENCHNCNN_NETWORKS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default=",".join(BOARDS))
    ap.add_argument("--networks", default="", help="benchncnn row names (default: every row the zoo rebuilds)")
    ap.add_argument("--threads", default="1,4")
    ap.add_argument("--redo", action="store_true")
    args = ap.parse_args()
    doc = load_points()
    table = published()
    wanted = [n for n in args.networks.split(",") if n]
    for name in args.targets.split(","):
        target = get_target(name)
        for row, by_threads in table[name].items():
            base = row.removesuffix("_int8")
            if (wanted and row not in wanted) or base not in BENCHNCNN_NETWORKS:
                continue
            for threads in map(int, args.threads.split(",")):
                if threads not in by_threads:
                    continue
                key = f"{name}/{row}/{threads}"
                if key in doc["points"] and not args.redo:
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] {key}", flush=True)
                try:
                    doc["points"][key] = measure(target, row, BENCHNCNN_NETWORKS[base], threads,
                                                 lambda m: None)
                except Exception as e:  # one network that fails to build must not stop the others
                    print(f"  failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}", flush=True)
                    continue
                top = doc["points"][key]["per_thread"][0]
                print(f"  {top['insn']:,} insn on the busiest thread, {doc['points'][key]['guest_seconds']} s",
                      flush=True)
                save_points(doc)


if __name__ == "__main__":
    main()
