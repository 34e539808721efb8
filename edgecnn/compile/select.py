"""The last steps of `--tune`: the record each kernel gets (measured with its weights and output out of cache)
and a check of what the applied kernels compute.

MetaSchedule times a candidate by calling it again and again on the same buffers, so its weights and output
stay in the CPU's caches between calls. In the model they do not: every kernel reads weights nothing touched
since the last inference and writes an output the size of a layer's activations. For small and medium kernels
that changes little, but for the large early layers it reorders the candidates. Measured on a Sapphire Rapids
Xeon (1 thread, full-size MobileNetV2, 4,461 records), the 112x112 16->96 expand convolution's best record ran
in 387 us warm and 1,276 us with its weights and output flushed (the third best: 420 / 496 us), and about 1 ms
inside the model. So the TOP_K best records of each workload by MetaSchedule's figures are measured again with
TVM's CPU cache flush before every call (all arguments but the first, the input the previous kernel just
wrote). Neither figure is the model's (there the weights are often still in the last-level cache from the
previous inference), so the build applies the record with the best geometric mean of the two.

The choice is kept beside the tuning database, in selected-<method>-<database state>/ (a MetaSchedule JSON
database of one record per workload, plus selection.json with what changed), so it is measured once per
database. reject_wrong_schedules then checks each applied kernel's results against its untuned self.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Callable

TOP_K = 8  # records re-measured per workload (building and timing one takes about 0.3 s)
REPEATS = 15  # cold calls per candidate; the median is its figure
SUMMARY = "selection.json"
METHOD = "geomean2"  # how candidates are ranked (part of the folder's name: another method, another choice)
_FAILED = 1e9  # MetaSchedule records a failed run as 1e10 s


def selected_database(folder: Path, state: str, database: tuple[Path, Path], build: Callable,
                      log: Callable[[str], None] = lambda msg: None) -> tuple[Path, dict]:
    """(folder of the chosen records' database, {"remeasured", "workloads", "changed", ...}), made on first use.

    `folder`: the tuning folder, `state`: its database's hash (compile.tune.database_state), `database`: its
    (workload, record) files, `build`: compile.tune.build_candidate. Called with the host's tensor intrinsics
    registered (compile.tune.host_intrinsics), as a schedule's trace may name them.
    """
    from edgecnn.paths import atomic_dir

    out = folder / f"selected-{METHOD}-{state}"
    if (out / SUMMARY).is_file():
        return out, json.loads((out / SUMMARY).read_text())
    log(f"tvm: measuring the {TOP_K} best records of each tuned kernel again with the caches flushed")
    with atomic_dir(out) as tmp:
        summary = _select(database, tmp, build)
        (tmp / SUMMARY).write_text(json.dumps(summary, sort_keys=True))
    for old in folder.glob("selected-*"):  # a choice made from an earlier state of the database
        if old != out and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    log(f"tvm: {summary['changed']} of {summary['workloads']} kernels got another record measured cold")
    return out, summary


def _select(database: tuple[Path, Path], out: Path, build: Callable) -> dict:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    workload_file, record_file = database
    source = ms.database.JSONDatabase(path_workload=str(workload_file), path_tuning_record=str(record_file),
                                      allow_missing=False)
    chosen = ms.database.JSONDatabase(work_dir=str(out))
    workloads = []
    for record in source.get_all_tuning_records():
        if not any(record.workload.same_as(w) for w in workloads):
            workloads.append(record.workload)
    remeasured = changed = 0
    for workload in workloads:
        best = [r for r in source.get_top_k(workload, TOP_K) if r.run_secs and _mean(r) < _FAILED]
        if not best:
            continue
        timed = [(t, r) for r in best if (t := _cold_seconds(workload, r, build)) is not None]
        remeasured += len(timed)
        if not timed:
            continue
        seconds, record = min(((math.sqrt(cold * _mean(r)), r) for cold, r in timed), key=lambda pair: pair[0])
        changed += record is not best[0]
        target = record.target if record.target is not None else tvm.target.Target.current()
        chosen.commit_tuning_record(ms.database.TuningRecord(record.trace, chosen.commit_workload(workload.mod),
                                                             [seconds], target, record.args_info))
    return {"remeasured": remeasured, "workloads": len(workloads), "changed": changed, "top_k": TOP_K,
            "measure": "geometric mean of MetaSchedule's figure and the median of cold calls (weights and output "
                       "flushed from the caches)"}


def _mean(record) -> float:
    return statistics.fmean(float(s) for s in record.run_secs)


def _cold_seconds(workload, record, build: Callable) -> float | None:
    """Median seconds of REPEATS calls of the record's schedule, caches flushed before each; None if it fails."""
    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms

    try:
        sch = tvm.s_tir.Schedule(workload.mod)
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        path = build(sch.mod, record.target)
    except Exception:  # noqa: BLE001 - a record that no longer applies or builds is not chosen
        return None
    try:
        lib = tvm.runtime.load_module(path)
        dev = tvm.cpu()
        rng = np.random.default_rng(0)
        args = [tvm.runtime.tensor(np.asarray(rng.random([int(d) for d in a.shape]), dtype=str(a.dtype)), dev)
                for a in ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)]
        timer = lib.time_evaluator(getattr(lib, "entry_name", None) or "main", dev, number=1, repeat=REPEATS,
                                   min_repeat_ms=0, f_preproc="cache_flush_cpu_non_first_arg")
        return float(np.median(timer(*args).results))
    except Exception:  # noqa: BLE001 - as above: a candidate that cannot run here is not chosen
        return None
    finally:
        shutil.rmtree(Path(path).parent, ignore_errors=True)


def reject_wrong_schedules(lowered, tuned, target) -> list[str]:
    """Put back the untuned PrimFunc wherever the tuned one computes something else; the names put back.

    MetaSchedule measures speed, not results, and 0.27 can pick a schedule that skips part of the
    output: for MobileNetV2's conv+relu6+pad kernels the best record left the padded border
    unwritten (garbage in the bundle, cosine 0.9996). Each tuned kernel runs once against its
    default-schedule self on the same random inputs, outputs pre-filled with NaN.
    """
    import numpy as np
    import tvm
    import tvm_ffi
    from tvm import relax

    calls = _call_tir_shapes(lowered)
    rng = np.random.default_rng(0)
    rejected = []
    for gv, func in lowered.functions.items():
        name = gv.name_hint
        if isinstance(func, relax.Function) or name not in calls:
            continue
        new = tuned[name]
        if tvm_ffi.structural_equal(func, new):
            continue
        ins, outs = calls[name]
        inputs = [rng.standard_normal(shape).astype(dtype) for shape, dtype in ins]
        results = []
        for f in (func, new):
            lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target)
            args = [tvm.runtime.tensor(a) for a in inputs]
            args += [tvm.runtime.tensor(np.full(shape, np.nan, dtype)) for shape, dtype in outs]
            lib["main"](*args)
            results.append([a.numpy() for a in args[len(inputs):]])
        if not all(np.allclose(a, b, rtol=1e-4, atol=1e-4, equal_nan=True) and not np.isnan(b).any()
                   for a, b in zip(*results)):
            tuned.update_func(tuned.get_global_var(name), func)
            rejected.append(name)
    return rejected


def _call_tir_shapes(mod) -> dict:
    """PrimFunc name -> ([(shape, dtype) of inputs], [(shape, dtype) of outputs]) from the Relax call_tir sites."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    found: dict = {}

    def spec(sinfo):
        if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
            return None
        return [int(d) for d in sinfo.shape.values], str(sinfo.dtype)

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir) and len(expr.args) == 2:
            out = expr.ty  # 0.27's name for struct_info
            outs = list(out.fields) if isinstance(out, relax.TupleType) else [out]
            ins = [spec(a.ty) for a in expr.args[1].fields]
            outs = [spec(o) for o in outs]
            if all(s is not None for s in ins + outs):
                found[expr.args[0].name_hint] = (ins, outs)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return found
