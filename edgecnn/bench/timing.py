"""Timing discipline for native bench runs: every variant timed side by side, and notes when figures are shaky.

Each variant is still run once by itself in its own runner process (load time, first inference, peak memory,
accuracy: what only a fresh process measures honestly). Its latency comes from one more process that holds
every variant's bundle and times them in interleaved rounds (edgecnn.runner.interleave), so a change in the
machine's load hits all variants alike instead of whichever ran at that moment. The notes say when the
load average was above the core count, when round p50s spread past SPREAD_NOTE, and when p90 is far above
p50 with several threads (thread-pool wake-ups, not kernels, dominate small models then).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgecnn.errors import DataError, ToolError

SPREAD_NOTE = 0.10  # round p50s further apart than this (relative to their median) are not one condition
TAIL_NOTE = 1.5  # p90 / p50 past this with more than one thread: wake-up noise, not the model


def default_threads(requested: int | None) -> tuple[int | None, str | None]:
    """(threads, note): the user's choice; else 1 on a machine with 2 cores or fewer, where a second runtime
    thread competes with everything else and p90 runs to 4-5x p50; else the bundle's own (None)."""
    if requested is not None:
        return requested, None
    cores = os.cpu_count() or 1
    if cores <= 2:
        return 1, (f"threads 1: this machine has {cores} cores, and a second runtime thread makes p90 several "
                   "times p50 here; pass --threads to choose")
    return None, None


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def run_json(cmd: list[str], what: str, timeout: float) -> Any:
    """Run a runner-side command in a fresh process and return the JSON of its last stdout line; its `Error:`
    line becomes a DataError (exit 1: bad input) or ToolError (anything else) named after `what`."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{what} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("Error: ")]
        message = errors[-1][len("Error: "):] if errors else (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise (DataError if done.returncode == 1 else ToolError)(f"{what}: {message}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ToolError(f"{what} printed no JSON result: {done.stdout.strip()[-200:]!r}") from None


def time_side_by_side(rows: list[dict], *, runs: int, warmup: int, threads: int | None, cpu_time: bool = False,
                      rounds: int = 5, timeout: float = 3600) -> list[str]:
    """Replace each row's latency figures with interleaved ones (in place); the notes the run deserves."""
    if not rows:
        return []
    before = load_average()
    cmd = [sys.executable, "-m", "edgecnn.runner.interleave", *[r["bundle"] for r in rows], "--runs", str(runs),
           "--warmup", str(warmup), "--rounds", str(rounds)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if cpu_time:
        cmd.append("--cpu-time")
    timed = run_json(cmd, "interleaved timing", timeout)
    after = load_average()
    for row, t in zip(rows, timed, strict=True):
        row.update(latency_ms=t["latency_ms"], fps=t["fps"], fps_mean=t["fps_mean"], threads=t["threads"])
        row["timing"] = {"interleaved_with": len(rows) - 1, "rounds": t["rounds"], "runs": t["runs"],
                         "round_p50_ms": t["round_p50_ms"], "round_spread": t["round_spread"], "clock": t["clock"],
                         "load_average": [before, after]}
        if t.get("amx") is not None:  # an x86 CPU with AMX: whether the runtimes could use it
            row["timing"]["amx"] = t["amx"]
    return _notes(rows, before, after, cpu_time)


def _name(row: dict) -> str:
    return f"{Path(row['model']).name} {row['backend']} {row['precision']}"


def _notes(rows: list[dict], before: float | None, after: float | None, cpu_time: bool) -> list[str]:
    notes = [f"latency: {len(rows)} variant(s) timed side by side in interleaved rounds, "
             + ("process CPU time per invoke (--cpu-time; all threads summed)" if cpu_time else "wall time")
             + "; fps = 1000 / p50, fps_mean = 1000 / mean"
             + ("; Intel AMX denied to the runtimes (--no-amx)" if any(r["timing"].get("amx") == "off" for r in rows)
                else "")]
    cores = os.cpu_count() or 1
    loads = [x for x in (before, after) if x is not None]
    if loads and max(loads) > cores:
        notes.append(f"the load average was {max(loads):.2f} on {cores} cores during timing: other work shared the "
                     "machine, so latencies are pessimistic and noisy; rerun on an idle machine or with --cpu-time")
    wide = [f"{_name(r)} ({r['timing']['round_spread'] * 100:.0f}%)" for r in rows
            if (r["timing"].get("round_spread") or 0) > SPREAD_NOTE]
    if wide:
        notes.append(f"round p50s spread more than {SPREAD_NOTE:.0%} for {', '.join(wide)}: conditions changed "
                     "during the run; treat those latencies as rough")
    slower = _int8_not_faster(rows)
    if slower:
        from edgecnn.targets import host_int8_dot

        dot = host_int8_dot()
        notes.append(f"int8 was not faster than fp32 on this machine for {', '.join(slower)}: "
                     + (f"this CPU has 8-bit dot products ({dot}), so the int8 kernels themselves are slow here"
                        if dot else "this CPU has no 8-bit dot-product instructions (AVX-VNNI, AVX512-VNNI, Arm "
                        "dotprod), on which int8 kernels gain most")
                     + "; int8 speed is a property of the CPU: bench it on the board, or emulated for its counts"
                     + ("; XNNPACK ran int8 on this CPU's AMX tiles, slower than its VNNI kernels on small layers: "
                        "--no-amx times them without" if _amx_on(rows) else ""))
    tails = [f"{_name(r)} (p90 {r['latency_ms']['p90'] / r['latency_ms']['p50']:.1f}x p50)" for r in rows
             if r.get("threads", 1) > 1 and r["latency_ms"]["p50"] > 0
             and r["latency_ms"]["p90"] > TAIL_NOTE * r["latency_ms"]["p50"]]
    if tails:
        notes.append(f"long tails at {rows[0].get('threads')} threads: {', '.join(tails)}; thread-pool wake-ups "
                     "dominate small models, try --threads 1")
    return notes


def _amx_on(rows: list[dict]) -> bool:
    """A TFLite int8 row was timed with AMX allowed (the runner reports it on x86 CPUs that have AMX)."""
    return any(r["precision"] == "int8" and r["backend"] == "tflite" and r.get("timing", {}).get("amx") == "on"
               for r in rows)


def _int8_not_faster(rows: list[dict]) -> list[str]:
    """'mobilenet_v2 tflite (int8/fp32 1.48)' for each int8 row whose p50 is not below its fp32 twin's."""
    def key(r: dict) -> tuple:
        return r["model"], r["backend"], r.get("pruning"), r.get("weights")

    fp32 = {key(r): r["latency_ms"]["p50"] for r in rows if r["precision"] == "fp32" and r.get("latency_ms")}
    found = []
    for r in rows:
        base = fp32.get(key(r)) if r["precision"] == "int8" and r.get("latency_ms") else None
        if base and r["latency_ms"]["p50"] >= base:
            found.append(f"{Path(r['model']).name} {r['backend']} (int8/fp32 {r['latency_ms']['p50'] / base:.2f})")
    return found
