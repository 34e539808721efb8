"""`edgecnn bench`: every requested variant through prune -> quantize -> compile -> run, one row each.

The one module that chains stages (docs/architecture.md). The plan (variants, mode, refusals) is made by
edgecnn.bench.plan; quantize and compile are cached by content hash, so a second bench only runs.

Modes:
- native: the host is the target's architecture; bundles run here, timed for real.
- emulated: the bundle runs under qemu-aarch64 with the target's core on a few images;
  its outputs must match the same inputs run natively, and the guest instruction count
  per inference is the performance figure. latency_ms and fps are null: wall-clock
  under qemu says nothing about the board. Accuracy on the full split comes from the
  identical artifact run natively when the artifact is portable (.tflite, .onnx); a
  TVM library is built for the host from the same source for that.
- ssh: bundle and runner are copied to the board and run there (edgecnn.bench.remote).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

from edgecnn.bench.plan import BenchPlan, Mode, Variant
from edgecnn.errors import DataError, EdgecnnError
from edgecnn.targets import Target

DEMO_CALIBRATION = {"detection": "demo-detection", "classification": "demo-classification"}


def _data_for(source, plan: BenchPlan) -> str | None:
    """The data a variant runs on: --data, the demo val split for demo models only, else None (synthetic
    inputs: no user model is ever scored on the demo shapes)."""
    if plan.data:
        if not Path(plan.data).exists():
            raise DataError(f"data set not found: {plan.data}")
        return plan.data
    if not source.demo:
        return None
    from edgecnn.data import demo

    return str(demo.demo_path(source.task, "val"))


def load_variant_source(variant: Variant, plan: BenchPlan, log: Callable[[str], None] = lambda m: None):
    """The SourceModel compile starts from: the zoo model/file, or its pruned form (pruned once, cached)."""
    from edgecnn.source import load_source

    if not variant.prune:
        return load_source(variant.model, plan.weights, contract=plan.contract)
    from edgecnn.bench.cached import pruned_model

    return load_source(pruned_model(variant.model, variant.pruning(), plan.weights, log))


def _compile(source, variant: Variant, target: Target | str, plan: BenchPlan, log) -> Any:
    from edgecnn.compile import compile_model

    calib = plan.calib
    if calib is None and source.demo:
        calib = DEMO_CALIBRATION[source.task]
    tune = {"tune": True, "trials": plan.tune} if plan.tune is not None and variant.backend == "tvm" else {}
    return compile_model(source, target, backend=variant.backend, precision=variant.precision, calib=calib,
                         weights=plan.weights, log=log, **tune).bundle


def run_variant(variant: Variant, plan: BenchPlan, log: Callable[[str], None] = lambda m: None,
                source=None, bundle=None, guest=None) -> dict[str, Any]:
    """Build (cached) and measure one variant; the bench JSON row. `source`: its loaded SourceModel, if known;
    `bundle`: its compiled bundle, if built; `guest`: the future of its qemu run (bench.emulated.guest_run)."""
    source = source or load_variant_source(variant, plan, log)
    bundle = bundle or _compile(source, variant, plan.target, plan, log)
    man = bundle.manifest
    data = _data_for(source, plan)
    row: dict[str, Any] = {
        "model": variant.model, "weights": plan.weights, "backend": variant.backend, "precision": variant.precision,
        "pruning": variant.pruning(), "mode": plan.mode.value, "target": plan.target.name,
        "bundle": str(bundle.path), "size_bytes": bundle.size_bytes, "macs": man.macs, "params": man.params,
        "emulated_instructions": None, "predicted_latency_ms": None,
    }
    row["task"] = man.task
    if man.build.get("tuning"):  # a MetaSchedule-tuned tvm build: how much tuning it holds
        row["tuning"] = {k: man.build["tuning"].get(k) for k in ("records", "tasks", "rejected_schedules")}
    if plan.mode is Mode.NATIVE:
        log(f"{variant.model} {variant.backend} {variant.precision}: running on this machine")
        result = run_native(bundle.path, data=data, limit=plan.limit, runs=plan.runs, warmup=plan.warmup,
                            threads=plan.threads)
    elif plan.mode is Mode.SSH:
        from edgecnn.bench.remote import run_remote

        log(f"{variant.model} {variant.backend} {variant.precision}: running on {plan.device}")
        result = run_remote(bundle, plan.device, data=data, limit=plan.limit, runs=plan.runs, warmup=plan.warmup,
                            threads=plan.threads, ssh_options=plan.ssh_options, python=plan.remote_python)
        row["device"] = plan.device
    else:
        result = _emulated(bundle, source, variant, plan, data, log, guest)
    row.update(_measured(result))
    row["mode"] = plan.mode.value
    if "fidelity" not in row:
        row["fidelity"] = _fidelity_here(bundle, source, variant, plan, data, log)
    if plan.save_predictions and result.get("predictions") is not None:
        from edgecnn.runner.metrics import save_coco_results

        row["predictions_file"] = str(save_coco_results(_predictions_path(plan, variant), result["predictions"]))
    return row


@contextmanager
def _named(v: Variant) -> Iterator[None]:
    """An EdgecnnError from inside names the variant: one line still, but the user knows which."""
    try:
        yield
    except EdgecnnError as e:
        raise type(e)(f"{v.model} {v.backend} {v.precision}{' ' + v.prune if v.prune else ''}: {e}") from None


def _fidelity_here(bundle, source, variant: Variant, plan: BenchPlan, data: str | None, log) -> dict:
    """Per-output agreement with the source model, run on this machine (edgecnn.bench.fidelity)."""
    from edgecnn.bench import fidelity as f

    if f.runs_here(bundle):
        return f.fidelity(bundle, source, data)
    log(f"{variant.model} {variant.backend} {variant.precision}: fidelity from a host build of the same model")
    from edgecnn.targets import host_target

    return f.fidelity(_compile(source, variant, host_target(), plan, log), source, data, "host build")


def _predictions_path(plan: BenchPlan, variant: Variant) -> Path:
    """--save-predictions FILE for a one-variant bench; FILE-<model>-<backend>-<precision>[-<prune>].json else."""
    path = Path(plan.save_predictions)
    if len(plan.variants) == 1:
        return path
    parts = [Path(variant.model).stem, variant.backend, variant.precision]
    if variant.prune:
        parts.append(variant.prune.replace(":", ""))
    return path.with_name(f"{path.stem}-{'-'.join(parts)}{path.suffix or '.json'}")


def run_native(bundle: Path, *, data: str | None, limit: int | None, runs: int, warmup: int,
               threads: int | None, timeout: float = 3600) -> dict[str, Any]:
    """The runner in a fresh process, as on the board: its load time, memory and thread pool are its own,
    not those of this process (which holds TensorFlow)."""
    import sys

    from edgecnn.bench.timing import run_json

    cmd = [sys.executable, "-m", "edgecnn.runner", str(bundle), "--runs", str(runs), "--warmup", str(warmup)]
    for flag, value in (("--data", data), ("--limit", limit), ("--threads", threads)):
        if value is not None:
            cmd += [flag, str(value)]
    return run_json(cmd, "runner", timeout)


_MEASURED_KEYS = ("latency_ms", "fps", "load_ms", "first_inference_ms", "peak_rss_mb", "threads", "images",
                  "accuracy")
# Present when the run gave them (an older runner on a board may not).
_OPTIONAL_KEYS = ("fps_mean", "inputs", "machine", "end_to_end", "emulated_instructions", "predicted_latency_ms",
                  "prediction", "emulated_check", "fidelity")


def _measured(result: dict[str, Any]) -> dict[str, Any]:
    return {**{k: result.get(k) for k in _MEASURED_KEYS}, **{k: result[k] for k in _OPTIONAL_KEYS if k in result}}


def _emulated(bundle, source, variant: Variant, plan: BenchPlan, data: str | None, log, guest=None) -> dict[str, Any]:
    """The emulated row (edgecnn.bench.emulated); accuracy from the identical artifact natively where it is
    portable, else from a host build of the same source."""
    from edgecnn.bench.emulated import run_emulated
    from edgecnn.kinds import PORTABLE_BACKENDS
    from edgecnn.targets import host_target

    portable = bundle.manifest.backend in PORTABLE_BACKENDS
    reference = bundle if portable else _compile(source, variant, host_target(), plan, log)
    label = f"{variant.model} {variant.backend} {variant.precision}"
    return run_emulated(bundle, reference, portable, source, plan.target, data, plan.limit, plan.threads, label, log,
                        guest)


def bench(plan: BenchPlan, log: Callable[[str], None] = lambda m: None,
          on_row: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run every variant of the plan; the bench document of docs/architecture.md."""
    with _runner_amx(plan.no_amx):
        return _bench(plan, log, on_row)


@contextmanager
def _runner_amx(deny: bool) -> Iterator[None]:
    """Within, with `deny`: every runner process started here denies AMX to its runtimes (edgecnn.runner.amx)."""
    import os

    from edgecnn.runner.amx import ENV

    before = os.environ.get(ENV)
    if deny:
        os.environ[ENV] = "off"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def _bench(plan: BenchPlan, log: Callable[[str], None], on_row: Callable[[dict], None] | None) -> dict[str, Any]:
    from edgecnn import __version__

    from edgecnn.bench.emulated import guest_pool

    if plan.mode is Mode.EMULATED:
        from edgecnn.emulate.environment import require_environment

        require_environment(plan.target, need_plugin=True)
    # Native: each variant's own run measures load, memory and accuracy; latency comes from the side-by-side
    # timing after all of them (edgecnn.bench.timing), so those runs time one invoke only.
    single = replace(plan, runs=1, warmup=0) if plan.mode is Mode.NATIVE else plan
    sources: dict[tuple, Any] = {}  # each model (and pruned form) is loaded once, not once per variant
    results, staged = [], []
    with guest_pool(plan) as guests:
        for v in plan.variants:  # every bundle first: a build that fails does so before any measuring
            with _named(v):
                key = (v.model, v.prune)
                if key not in sources:
                    sources[key] = load_variant_source(v, plan, log)
                bundle = _compile(sources[key], v, plan.target, plan, log)
                staged.append((v, bundle, guests(v, bundle, _data_for(sources[key], plan)) if guests else None))
        for v, bundle, guest in staged:
            with _named(v):
                row = run_variant(v, single, log, sources[(v.model, v.prune)], bundle, guest)
            results.append(row)
            if on_row:
                on_row(row)
    notes = list(plan.notes)
    if plan.mode is Mode.NATIVE:
        from edgecnn.bench.timing import time_side_by_side

        log(f"timing {len(results)} variant(s) side by side: {plan.runs} runs each in interleaved rounds")
        notes += time_side_by_side(results, runs=plan.runs, warmup=plan.warmup, threads=plan.threads,
                                   cpu_time=plan.cpu_time)
    elif plan.mode is Mode.SSH and len(results) > 1:
        notes.append("ssh: variants were timed one after another on the board, not interleaved; compare them "
                     "on an idle board")
    generic = sorted({Path(r["model"]).name for r in results if r.get("task") == "generic"})
    if generic:
        notes.append(f"{', '.join(generic)}: generic (no task edgecnn scores): accuracy is null; fidelity gives "
                     "each output's max |diff|, cosine and SNR against the source model")
    if plan.mode is Mode.EMULATED:
        notes.append("emulated: latency_ms and fps are null (qemu wall-clock is not board time); "
                     "emulated_instructions is the calling thread's guest count of one inference")
        if plan.target.cost:
            from edgecnn.bench.emulated import prediction_note

            notes.append(prediction_note(plan.target.cost))
    return {"edgecnn": __version__, "target": plan.target.name, "mode": plan.mode.value,
            "notes": notes, "results": results}
