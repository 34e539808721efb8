"""Time several bundles side by side: interleaved rounds in one process, so they share the machine's state.

    python -m edgecnn.runner.interleave BUNDLE [BUNDLE ...] --runs 50 --warmup 5 --rounds 5 [--threads N]
        [--image PATH] [--cpu-time]

Timing variants one after another lets the machine's load drift between them (a loaded window on a
2-core PC pre-empts long invokes, and the variant that ran then looks slow). Here every bundle is loaded
and warmed up first, then `rounds` rounds each give every bundle `runs / rounds` timed invokes, the
order rotated from round to round. Each bundle's figures: latency over all its samples, the p50 of each
round and the spread of those p50s ((max - min) / median), so a run whose conditions changed says so.
`--cpu-time` times the process's CPU time per invoke (all threads together) instead of wall time: a
figure that a busy machine disturbs less, but which counts a second thread's work twice.

Prints one JSON list (one object per bundle, in the order given). numpy + the bundles' runtimes only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.artifacts import load_bundle
from edgecnn.runner import amx
from edgecnn.runner.sessions import open_session
from edgecnn.runner.stats import fps, latency_stats

DEFAULT_ROUNDS = 5


def _inputs(bundle, image: str | None) -> list[np.ndarray]:
    if image is None:
        from edgecnn.runner.run import synthetic_input

        return synthetic_input(bundle)
    from edgecnn.data.preprocess import Preprocessing

    return [Preprocessing.from_dict(bundle.manifest.preprocessing)(Path(image))[0]]


def time_interleaved(bundles: list[str | Path], *, runs: int, warmup: int, rounds: int = DEFAULT_ROUNDS,
                     threads: int | None = None, image: str | None = None,
                     cpu_time: bool = False) -> list[dict[str, Any]]:
    """Per bundle: {"latency_ms", "fps", "fps_mean", "round_p50_ms", "round_spread", "runs", "rounds",
    "clock", "threads"}; `runs` timed invokes each, spread over `rounds` interleaved rounds."""
    if runs < 1 or warmup < 0 or rounds < 1:
        raise ValueError("runs and rounds must be >= 1, warmup >= 0")
    rounds = min(rounds, runs)
    clock = time.process_time_ns if cpu_time else time.perf_counter_ns
    sessions = []
    for path in bundles:
        b = load_bundle(path)
        session = open_session(b, threads)
        session.feed(*_inputs(b, image))
        for _ in range(warmup + 1):  # + 1: the first invoke allocates, it is never timed
            session.invoke()
        sessions.append(session)
    per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    samples: list[list[list[float]]] = [[[] for _ in range(rounds)] for _ in sessions]
    for r, count in enumerate(per_round):
        order = list(range(len(sessions)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            session = sessions[i]
            session.invoke()  # one untimed invoke after the others ran: its caches are this model's again
            for _ in range(count):
                start = clock()
                session.invoke()
                samples[i][r].append((clock() - start) / 1e6)
    results = []
    for session, rows in zip(sessions, samples):
        flat = [x for row in rows for x in row]
        stats = latency_stats(flat)
        medians = [float(np.median(row)) for row in rows if row]
        middle = float(np.median(medians))
        results.append({
            "latency_ms": stats, "fps": fps(stats["p50"]), "fps_mean": fps(stats["mean"]),
            "round_p50_ms": [round(m, 6) for m in medians],
            "round_spread": round((max(medians) - min(medians)) / middle, 4) if middle > 0 else None,
            "runs": len(flat), "rounds": len(medians), "clock": "cpu" if cpu_time else "wall",
            "threads": session.threads, "amx": amx.state(),
        })
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgecnn.runner.interleave",
                                description="Time bundles side by side in interleaved rounds; JSON on stdout.")
    p.add_argument("bundles", nargs="+")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--image", default=None, help="time on this image (preprocessed per bundle), else a random one")
    p.add_argument("--cpu-time", action="store_true")
    args = p.parse_args(argv)
    from edgecnn.errors import EdgecnnError, one_line
    from edgecnn.logfilter import native_logs
    from edgecnn.paths import Terminated, process_scope
    from edgecnn.runner.amx import apply_policy

    try:
        with process_scope(sweep=False), native_logs():
            apply_policy()  # EDGECNN_AMX=off: before any runtime loads (edgecnn.runner.amx)
            result = time_interleaved(args.bundles, runs=args.runs, warmup=args.warmup, rounds=args.rounds,
                                      threads=args.threads, image=args.image, cpu_time=args.cpu_time)
    except (EdgecnnError, ValueError) as e:
        print(f"Error: {one_line(e)}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    except KeyboardInterrupt as e:
        print("Error: terminated" if isinstance(e, Terminated) else "Error: interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    json.dump(result, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
