"""Tuned TVM vs TFLite/XNNPACK on this machine, side by side in one run.

    python tools/tune_ratio.py [--model mobilenet_v2] [--weights demo] [--trials 400] [--threads N] [--runs 200]

    e.g. the full-size model: --model "mobilenet_v2:alpha=1.0,size=224,classes=10" --weights random

Compiles three host bundles through edgecnn.compile (TFLite fp32, TVM untuned,
TVM tuned with MetaSchedule; the tuning database is reused across runs), then
times each bundle's inference in this process with the same thread count,
interleaving the three so background load hits them alike, and prints the
median latencies and the ratio tuned-TVM / TFLite (below 1.0: TVM is faster),
with the load average before and after (other users' work on a shared machine
slows tuning and timing alike, so figures from a loaded run are not comparable).

The tuning is the long job, so its result is committed: tools/tuning/<database key>.tar.gz holds the
MetaSchedule database of a finished run (the key covers the model's kernels, the completed TVM target
with this CPU's -mcpu, and the TVM version), and a machine with no database of that key gets it back
before tuning (restore_databases), so it resumes instead of starting over. After a run, save it with
`--save-database`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


ARCHIVES = Path(__file__).resolve().parent / "tuning"


def restore_databases(log=print) -> list[str]:
    """Unpack each committed database whose folder the tuning cache lacks; the keys restored."""
    import tarfile

    from edgecnn.paths import cache_dir

    restored = []
    for archive in sorted(ARCHIVES.glob("*.tar.gz")):
        key = archive.name[:-len(".tar.gz")]
        folder = cache_dir("tuning") / key
        if (folder / "database_tuning_record.json").is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        restored.append(key)
        log(f"restored the tuning database {key} from {archive.name}")
    return restored


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--weights", default="demo", help="demo, random, imagenet or a .weights.h5 file (compile_model's)")
    p.add_argument("--trials", type=int, default=400)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--runs", type=int, default=200, help="timed inferences per bundle (in rounds of 20)")
    p.add_argument("--save-database", action="store_true", help="write the tuned database to tools/tuning/")
    args = p.parse_args()
    # TVM's thread pool reads this once, at first use.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import numpy as np

    from edgecnn.compile import compile_model
    from edgecnn.errors import EdgecnnError

    log = lambda msg: print(f"  {msg}", file=sys.stderr)  # noqa: E731
    restore_databases(log)
    load_before = os.getloadavg()
    bundles, not_tuned = {}, None
    for label, kw in (("tflite", {"backend": "tflite"}), ("tvm untuned", {"backend": "tvm"}),
                      ("tvm tuned", {"backend": "tvm", "tune": True, "trials": args.trials})):
        t0 = time.perf_counter()
        try:
            r = compile_model(args.model, "host", weights=args.weights, log=log, **kw)
        except EdgecnnError as e:  # tuning can be refused (e.g. MetaSchedule broken here): measure the rest
            not_tuned = f"{label}: {e}"
            print(f"{label}: not built: {e}", file=sys.stderr)
            continue
        bundles[label] = r.bundle
        print(f"{label}: {r.bundle.path} ({'cached' if r.cached else 'built'} in {time.perf_counter() - t0:.0f} s)",
              file=sys.stderr)
    tuning = bundles["tvm tuned"].manifest.build.get("tuning", {}) if "tvm tuned" in bundles else {}
    if args.save_database and tuning.get("database"):
        import tarfile

        folder = Path(tuning["database"])
        ARCHIVES.mkdir(exist_ok=True)
        with tarfile.open(ARCHIVES / f"{folder.name}.tar.gz", "w:gz") as tar:
            for name in ("database_tuning_record.json", "database_workload.json"):
                tar.add(folder / name, arcname=name)

    shape = bundles["tflite"].manifest.inputs[0].shape
    x = np.random.default_rng(0).random([1, *shape[1:]], dtype=np.float32)
    runners = {label: _runner(b, x, args.threads) for label, b in bundles.items()}
    times = {label: [] for label in runners}
    for run in runners.values():  # warm-up
        for _ in range(10):
            run()
    for _ in range(max(1, args.runs // 20)):
        for label, run in runners.items():
            for _ in range(20):
                t = time.perf_counter()
                run()
                times[label].append((time.perf_counter() - t) * 1000)
    med = {label: statistics.median(v) for label, v in times.items()}
    load_after = os.getloadavg()
    print(f"\n{args.model} on host, {args.threads} threads, median of {len(times['tflite'])} runs each; load average "
          f"(1/5/15 min) {'/'.join(f'{x:.2f}' for x in load_before)} at start, "
          f"{'/'.join(f'{x:.2f}' for x in load_after)} at the end ({os.cpu_count()} cores)")
    for label in runners:
        print(f"  {label:12s} {med[label]:8.3f} ms   ({med[label] / med['tflite']:.2f}x TFLite)")
    if not_tuned:
        print(f"  no tuned bundle: {not_tuned}")
        print(f"ratio untuned TVM / TFLite-XNNPACK = {med['tvm untuned'] / med['tflite']:.2f}x (tuned: not measured)")
        return
    new = (tuning.get("records") or 0) - (tuning.get("records_before") or 0)
    per_trial = f", {tuning['tuning_seconds'] / new:.2f} s per new trial" if new > 0 else ""
    print(f"  tuning: {tuning.get('records')} records for --trials {args.trials} over {tuning.get('tasks')} tasks "
          f"({tuning.get('tuning_seconds')} s tuning this run for {new} new{per_trial}), "
          f"database {tuning.get('database')}")
    if tuning.get("rejected_schedules"):
        print(f"  kept untuned (tuned schedule computed wrong results): {', '.join(tuning['rejected_schedules'])}")
    print(f"ratio tuned TVM / TFLite-XNNPACK = {med['tvm tuned'] / med['tflite']:.2f}x "
          f"(untuned {med['tvm untuned'] / med['tflite']:.2f}x)")


def _runner(bundle, x, threads):
    if bundle.manifest.backend == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(bundle.file()), num_threads=threads)
        it.allocate_tensors()
        index = it.get_input_details()[0]["index"]

        def run():
            it.set_tensor(index, x)
            it.invoke()

        return run
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(bundle.file())), tvm.cpu())
    data = tvm.runtime.tensor(x)
    return lambda: vm["main"](data)


if __name__ == "__main__":
    main()
