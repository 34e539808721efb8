#!/usr/bin/env python3
"""The speed ratios edgecnn is judged by, each from one interleaved bench run (issue 16).

For the demo models (one bench: yolo_lite, mobilenet_v2, mobilenet_v1) and MobileNetV2 1.0/224 with random
weights (a second bench, calibrated on the demo images), on this machine with the bench's side-by-side
timing: LiteRT int8/fp32 p50, ONNX Runtime int8/fp32 p50, TVM (untuned unless tuning records exist) /
LiteRT fp32 p50 (tuned for MobileNetV2 1.0/224 with --tune-trials: MetaSchedule's database for it, kept across
runs, tuned up to that many trials first), and end-to-end time per image (decode .. NMS) over the invoke p50. Ratios, not absolute
times: the variants of a run share the machine's state, so their ratio is what transfers to another idle
machine. The load average before and after each run is printed; run it on an idle machine.

    python tools/perf_report.py                    # writes tools/perf_report-<cpu>.md and prints it
    python tools/perf_report.py --runs 300 --threads 1 --backends tflite,onnx,tvm --tune-trials 3000 --twice

--twice runs each bench a second time and gives the largest difference between the two runs' p50 of the
same variant (the repeatability a figure in a report can claim).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = ("yolo_lite", "mobilenet_v2", "mobilenet_v1")
FULL = "mobilenet_v2:alpha=1.0,size=224,classes=10"  # random weights: 1000 near-equal softmax outputs would round to 0 in int8


def bench(models: list[str], backends: str, runs: int, threads: int, extra: list[str]) -> tuple[list[str], dict]:
    cmd = [sys.executable, "-m", "edgecnn", "bench", "--target", "host", "--backend", backends,
           "--precision", "fp32,int8", "--runs", str(runs), "--threads", str(threads), "--format", "json"]
    for m in models:
        cmd += ["--model", m]
    cmd += extra
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return cmd, json.loads(done.stdout)


def p50(rows: list[dict], model: str, backend: str, precision: str) -> float | None:
    for r in rows:
        if r["model"] == model and r["backend"] == backend and r["precision"] == precision and r["latency_ms"]:
            return r["latency_ms"]["p50"]
    return None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def agreement(first: dict, second: dict) -> tuple[float, str]:
    """Largest relative difference between two runs' p50 of the same variant, and which variant."""
    worst, which = 0.0, "-"
    for a in first["results"]:
        b = next((r for r in second["results"] if all(r[k] == a[k] for k in ("model", "backend", "precision"))), None)
        if b and a["latency_ms"] and b["latency_ms"]:
            x, y = a["latency_ms"]["p50"], b["latency_ms"]["p50"]
            d = abs(x - y) / min(x, y)
            if d > worst:
                worst, which = d, f"{a['model']} {a['backend']} {a['precision']} ({x:.3f} vs {y:.3f} ms)"
    return worst, which


def tvm_label(rows: list[dict], model: str) -> str:
    tuning = next((r.get("tuning") for r in rows if r["model"] == model and r["backend"] == "tvm"), None)
    return f" (tuned, {tuning['records']} records)" if tuning else ""


def table(doc: dict, models: list[str]) -> list[str]:
    rows = doc["results"]
    lines = ["| model | tflite fp32 p50 ms | tflite int8/fp32 | onnx int8/fp32 | tvm fp32 / tflite fp32 | "
             "end-to-end / invoke (tflite int8) |", "|---|---:|---:|---:|---:|---:|"]
    for m in models:
        e2e = next((r.get("end_to_end") for r in rows if r["model"] == m and r["backend"] == "tflite"
                    and r["precision"] == "int8"), None)
        t_int8 = p50(rows, m, "tflite", "int8")
        base = p50(rows, m, "tflite", "fp32")
        lines.append(f"| {m} | {f'{base:.3f}' if base else '-'} | "
                     f"{ratio(t_int8, p50(rows, m, 'tflite', 'fp32'))} | "
                     f"{ratio(p50(rows, m, 'onnx', 'int8'), p50(rows, m, 'onnx', 'fp32'))} | "
                     f"{ratio(p50(rows, m, 'tvm', 'fp32'), p50(rows, m, 'tflite', 'fp32'))}{tvm_label(rows, m)} | "
                     f"{ratio(e2e['total_ms'], t_int8) if e2e else '-'} |")
    return lines


def cpu_name() -> str:
    """LLVM's name for this CPU (the -mcpu in TVM's target and in a tuning database's key), or 'cpu unknown'."""
    try:
        from tvm.target import codegen

        return f"-mcpu={codegen.llvm_get_system_cpu()}"
    except Exception:  # noqa: BLE001 - no TVM here: the report still stands, without the name
        return "cpu unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backends", default="tflite,onnx")
    p.add_argument("--tune-trials", type=int, default=None,
                   help="tvm for MobileNetV2 1.0/224 tuned (bench --tune --trials N); the demo models stay untuned")
    p.add_argument("--twice", action="store_true", help="run each bench twice and report how far the p50s differ")
    p.add_argument("--cpu-time", action="store_true",
                   help="bench --cpu-time: latency as CPU time per invoke (steadier where a hypervisor steals time)")
    p.add_argument("--no-amx", action="store_true",
                   help="bench --no-amx: on an x86 CPU with AMX, the runtimes may not use it (edgecnn.runner.amx)")
    p.add_argument("--sets", default="demo,full", help="demo (the demo models), full (MobileNetV2 1.0/224) or both")
    p.add_argument("--output", type=Path, default=None,
                   help="default tools/perf_report-<cpu>.md: figures from one CPU are not those of another")
    a = p.parse_args(argv)
    cpu = cpu_name()
    suffix = "-noamx" if a.no_amx else ""
    output = a.output or REPO / "tools" / f"perf_report-{cpu.removeprefix('-mcpu=').replace(' ', '-')}{suffix}.md"
    clock = (["--cpu-time"] if a.cpu_time else []) + (["--no-amx"] if a.no_amx else [])
    tune = ["--tune", "--trials", str(a.tune_trials)] if a.tune_trials and "tvm" in a.backends.split(",") else []
    if tune:  # the committed database of tools/tune_ratio.py's run, where this machine has none of its key
        sys.path.insert(0, str(REPO / "tools"))
        from tune_ratio import restore_databases

        restore_databases(lambda msg: print(msg, file=sys.stderr))
    out = [f"# Speed ratios (tools/perf_report.py, {a.runs} runs, {a.threads} thread(s), host {os.uname().machine}, "
           f"{cpu}{', CPU time' if a.cpu_time else ''}{', AMX denied' if a.no_amx else ''})", ""]
    sets = {"demo": (list(DEMO), clock), "full": ([FULL], ["--weights", "random", "--calib", "demo-classification",
                                                            *tune, *clock])}
    unknown = set(a.sets.split(",")) - set(sets)
    if unknown:
        p.error(f"unknown --sets {', '.join(sorted(unknown))}: demo, full")
    for models, extra in (sets[name] for name in a.sets.split(",")):
        cmd, doc = bench(models, a.backends, a.runs, a.threads, extra)
        loads = (doc["results"][0].get("timing") or {}).get("load_average") or [None, None]
        out += ["    python3 " + " ".join(cmd[1:]), "",
                "load average before/after timing: " + " / ".join(f"{x:.2f}" if x is not None else "-" for x in loads),
                ""] + table(doc, models) + [""]
        out += [f"Note: {n}" for n in doc.get("notes", [])] + [""]
        if a.twice:
            worst, which = agreement(doc, bench(models, a.backends, a.runs, a.threads, extra)[1])
            out += [f"Second run of the same bench: the p50s differ by at most {worst:.1%} ({which})", ""]
    text = "\n".join(out)
    output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
