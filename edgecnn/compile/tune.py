"""MetaSchedule tuning for the tvm backend, with a persistent, resumable database.

The database (MetaSchedule's JSON workload and tuning-record files) lives in
cache_dir("tuning", key), keyed by the model's content hash, the completed TVM
target and the TVM version, so a second `--tune` of the same model reuses every
record. Records are appended as candidates are measured: an interrupted run
keeps what it measured, and the next run tunes only the trials still missing
(`--trials` is the total budget for the database, not per call).

Candidates are measured where the code will run. On the host that is this
machine (MetaSchedule's local builder and runner); a board would need TVM's RPC
runner and a device connection, which compile does not have, so tuning for a
board is refused with that reason rather than tuned on the wrong CPU.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

from edgecnn.errors import EdgecnnError, ToolError
from edgecnn.paths import cache_dir

RECORDS = "database_tuning_record.json"
WORKLOADS = "database_workload.json"
DEFAULT_TRIALS = 2000
TRIALS_PER_ITER = 64
TUNING_SEED = 0  # the same candidates for the same model on every run (measurements still vary)
BUILD_TIMEOUT_S = 180.0  # per candidate build; MetaSchedule's default 30 s fails them all under load


def check_tunable(target) -> None:
    """ToolError for targets whose candidates cannot be measured from here."""
    for module, dist in (("psutil", "psutil"), ("xgboost", "xgboost-cpu")):
        try:
            __import__(module)
        except ImportError:
            raise ToolError(f"MetaSchedule tuning needs {module} (its search and cost model): pip install {dist}") \
                from None
    if not target.is_host:
        raise ToolError(f"tuning for {target.name} needs the board: MetaSchedule measures every candidate on the "
                        "device (TVM RPC), and compile has no device connection; build untuned (drop --tune), or "
                        "tune with --target host")
    problem = _probe_meta_schedule()
    if problem:
        import tvm

        raise ToolError(f"{problem} in apache-tvm {tvm.__version__} on this machine; build untuned (drop --tune)")


# Creating a TuneContext is where apache-tvm 0.27.0.post1 crashed on this project's x86 machine (SIGSEGV,
# any llvm target, TensorFlow not loaded): probed in a child process so the user gets a message, not a crash.
_PROBE = """
import tvm
from tvm import te
from tvm.s_tir import meta_schedule as ms
A = te.placeholder((8, 8), name="A")
B = te.compute((8, 8), lambda i, j: A[i, j] * 2.0, name="B")
ms.TuneContext(mod=tvm.IRModule({"main": te.create_prim_func([A, B])}), target=tvm.target.Target(
    {"kind": "llvm", "num-cores": 1}), space_generator="post-order-apply", search_strategy="evolutionary",
    task_name="probe").clone()
"""


@lru_cache(maxsize=1)
def _probe_meta_schedule() -> str | None:
    """None when MetaSchedule can set up a tuning task here, else what went wrong."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "setting up a tuning task did not finish in 300 s"
    if done.returncode == 0:
        return None
    if done.returncode < 0 or "Segfault" in done.stderr:
        return f"MetaSchedule crashes (signal {-done.returncode}) creating a tuning task"
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    return f"MetaSchedule fails creating a tuning task: {(lines or ['no message'])[-1][:200]}"


def tuning_dir(source_sha256: str, tvm_target: dict) -> Path:
    """The database folder for a model on a completed TVM target."""
    import tvm

    text = json.dumps({"model": source_sha256, "target": tvm_target, "tvm": tvm.__version__}, sort_keys=True)
    return cache_dir("tuning", hashlib.sha256(text.encode()).hexdigest()[:24])


def record_count(folder: Path) -> int:
    """Tuning records measured so far (one JSON line each)."""
    path = folder / RECORDS
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def database_state(folder: Path) -> str:
    """Hash of the database files: part of a tuned bundle's cache key."""
    h = hashlib.sha256()
    for name in (WORKLOADS, RECORDS):
        path = folder / name
        h.update(path.read_bytes() if path.is_file() else b"-")
    return h.hexdigest()[:16]


def tuned_build(job, mod, target, target_dict: dict):
    """Tune what the database still lacks, then build with it; (executable, tuning facts for the manifest).

    `target_dict` is the completed TVM target in dict form (compile.tvm), which keys the database.

    The steps of 0.27's static-shape flow (relax.get_pipeline("static_shape_tuning")), with
    MetaSchedule called directly so that its builder gets BUILD_TIMEOUT_S: the default 30 s
    fails every candidate on a busy 2-core machine ("Build errors" and nothing measured).
    Functions the database does not cover keep TVM's default schedule.
    """
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    if job.trials < 1:
        raise EdgecnnError(f"--trials must be at least 1, got {job.trials}")
    folder = tuning_dir(job.source.sha256, target_dict)
    before = record_count(folder)
    remaining = max(0, job.trials - before)
    lower = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                      relax.transform.CanonicalizeBindings(), relax.get_pipeline("zero")])
    with target:
        lowered = lower(mod)
    tasks = ms.relax_integration.extract_tasks(lowered, target)
    # Spread the budget over every task: with only a global limit, MetaSchedule may leave tasks untuned.
    per_task = max(1, -(-remaining // max(1, len(tasks))))
    started = time.perf_counter()
    if remaining:
        job.log(f"tvm: tuning {remaining} trials over {len(tasks)} tasks with MetaSchedule "
                f"({before} records reused) in {folder}")
        ms.relax_integration.tune_relax(
            lowered, params={}, target=target, work_dir=str(folder), max_trials_global=remaining,
            max_trials_per_task=per_task, num_trials_per_iter=min(TRIALS_PER_ITER, per_task),
            builder=ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S), seed=TUNING_SEED)
    else:
        job.log(f"tvm: database already holds {before} records (>= {job.trials} trials): no new tuning")
    tune_seconds = time.perf_counter() - started
    with target:
        tuned = relax.transform.MetaScheduleApplyDatabase(str(folder))(lowered)
    rejected = reject_wrong_schedules(lowered, tuned, target)
    if rejected:
        job.log(f"tvm: {len(rejected)} tuned kernel(s) computed wrong results, kept TVM's default schedule: "
                + ", ".join(rejected))
    executable = tvm.compile(tuned, target)
    facts = {"trials": job.trials, "tasks": len(tasks), "records_before": before, "records": record_count(folder),
             "tuning_seconds": round(tune_seconds, 1), "database": str(folder), "rejected_schedules": rejected}
    return executable, facts


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
