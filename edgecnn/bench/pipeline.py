"""`edgecnn bench`: every requested variant through prune -> quantize -> compile -> run, one row each.

The one module that chains stages (docs/architecture.md). Variants are the product of
models x pruning x backends x precisions; quantize and compile are cached by
content hash, so a second bench only runs.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from edgecnn.errors import DataError, EdgecnnError, TargetError
from edgecnn.kinds import BenchMode as Mode, Precision
from edgecnn.targets import Target, get_target, host_arch

DEMO_MODELS = ("yolo_lite", "mobilenet_v2", "mobilenet_v1")
DEMO_CALIBRATION = {"detection": "demo-detection", "classification": "demo-classification"}


@dataclass(frozen=True)
class Variant:
    model: str
    backend: str
    precision: str
    prune: str | None = None  # "channel:0.3"

    def pruning(self) -> dict | None:
        if not self.prune:
            return None
        method, _, ratio = self.prune.partition(":")
        return {"method": method, "ratio": float(ratio)}


@dataclass
class BenchPlan:
    target: Target
    mode: Mode
    variants: list[Variant]
    data: str | None = None
    device: str | None = None
    limit: int | None = None
    runs: int = 50
    warmup: int = 5
    threads: int | None = None
    weights: str = "demo"
    notes: list[str] = field(default_factory=list)
    ssh_options: tuple[str, ...] = ()  # ssh mode: extra ssh arguments (-i key, -F config, -o ProxyJump=...)
    remote_python: str = "python3"  # ssh mode: the board's interpreter (a venv's python, say)
    calib: str | None = None  # calibration set for int8 of models that are not demo models
    contract: dict | None = None  # data-contract options for model files (edgecnn.contract)
    save_predictions: str | None = None  # write each variant's predictions (COCO results for detectors) here
    cpu_time: bool = False  # native latency from process CPU time instead of wall time (edgecnn.bench.timing)
    tune: int | None = None  # tvm variants built with MetaSchedule records, this many trials in all (host only)


def parse_prune(text: str) -> str | None:
    """'none' | 'channel:0.3' | 'magnitude:0.5' -> canonical spec or None; DataError otherwise."""
    text = text.strip().lower()
    if text in ("", "none", "0"):
        return None
    method, sep, ratio = text.partition(":")
    if method not in ("channel", "magnitude") or not sep:
        raise DataError(f"--prune {text!r}: expected channel:R or magnitude:R (R between 0 and 1), or none")
    try:
        r = float(ratio)
    except ValueError:
        raise DataError(f"--prune {text!r}: ratio {ratio!r} is not a number") from None
    if not 0 < r < 1:
        raise DataError(f"--prune {text!r}: ratio must be between 0 and 1")
    return f"{method}:{r:g}"


def choose_mode(target: Target, device: str | None, emulate: bool | None) -> Mode:
    """ssh with a device; else native where the host runs the target's code; else emulated."""
    if device and emulate:
        raise DataError("--device and --emulate exclude each other: bench on the board or under qemu, not both")
    if device:
        return Mode.SSH
    if emulate:
        target.require_emulation()
        return Mode.EMULATED
    if target.runs_natively:
        return Mode.NATIVE
    if target.can_emulate:
        return Mode.EMULATED
    raise TargetError(f"target {target.name} ({target.arch}) cannot run on this {host_arch()} machine and cannot "
                      f"be emulated ({target.emulation_problem()}); pass --device user@host to bench on the board")


def default_backends(target: Target, precision: str, kind: str = "keras") -> list[str]:
    """The target's most preferred backend that builds `precision` (as each backend declares it) and takes a
    `kind` file as it is (an .onnx goes to onnxruntime, not through a converter); else any that builds it."""
    from edgecnn.compile import compiler

    able = [b for b in target.backends if compiler(b).supports(precision)]
    for backend in able:
        if kind in compiler(backend).formats:
            return [backend]
    if able:
        return able[:1]
    raise DataError(f"target {target.name} has no backend for {precision}")


def _file_facts(model: str) -> tuple[str, str | None]:
    """(kind, own precision) of a model reference: ("keras", None) for zoo models, read from the file else."""
    from edgecnn.source import is_zoo_ref, onnx_precision, tflite_precision
    from edgecnn.zoo.files import model_format

    if is_zoo_ref(model):
        return "keras", None
    kind = model_format(model)
    if kind == "onnx":
        return kind, onnx_precision(Path(model))
    if kind == "tflite":
        return kind, tflite_precision(Path(model).read_bytes())
    return kind, Precision.FP32.value


def make_plan(target: str, *, models: list[str] | None = None, backends: list[str] | None = None,
              precisions: list[str] | None = None, prunes: list[str] | None = None, device: str | None = None,
              emulate: bool | None = None, data: str | None = None, limit: int | None = None, runs: int = 50,
              warmup: int = 5, threads: int | None = None, weights: str = "demo",
              ssh_options: tuple[str, ...] = (), remote_python: str = "python3",
              calib: str | None = None, contract: dict | None = None,
              save_predictions: str | None = None, cpu_time: bool = False, tune: int | None = None) -> BenchPlan:
    """Resolve the command line into the list of variants to run; raises on anything inconsistent.

    Everything the arguments alone decide (the --device syntax, the --data path and layout, model
    names) is refused here, before any model is loaded or built.
    """
    from edgecnn.paths import check_cache_root

    check_cache_root()
    t = get_target(target)
    if device is not None:
        _check_device(device)
    mode = choose_mode(t, device, emulate)
    requested = precisions
    precisions = precisions or ["fp32", "int8"]
    for p in precisions:
        if p not in Precision.values():
            raise DataError(f"unknown precision {p!r}; choose from {', '.join(Precision.values())}")
    for b in backends or []:
        if b not in t.backends:
            raise DataError(f"target {t.name} cannot use backend {b!r}; its backends: {', '.join(t.backends)}")
    prune_specs = [parse_prune(p) for p in (prunes or ["none"])]
    models = list(models or DEMO_MODELS)
    if limit is not None and limit < 1:
        raise DataError("--limit must be 1 or more")
    layout = None
    if data is not None:
        from edgecnn.data.formats import dataset_layout

        try:
            layout = dataset_layout(data, unlabelled=True)
        except DataError as e:
            raise DataError(f"--data: {e}") from None
    if save_predictions is not None:
        from edgecnn.paths import check_output

        if data is None and weights != "demo":
            raise DataError("--save-predictions needs --data: predictions are made on a data set's images")
        check_output(save_predictions, "file", "--save-predictions")
    if calib is not None and Precision.INT8.value in precisions:
        from edgecnn.data.calibration import load_calibration_set

        load_calibration_set(calib)  # lists the images only; int8 variants are built after the float ones
    from edgecnn.source import check_model_ref

    for m in models:
        check_model_ref(m)
    facts = {m: _file_facts(m) for m in models}
    # A model file is benched at its own precision unless --precision says otherwise (fp16/int8 files pass
    # through as they are); zoo models at fp32 and int8.
    per_model = {m: requested or (precisions if own is None else [own]) for m, (_, own) in facts.items()}
    _check_user_models(models, weights, per_model, facts, calib)
    from edgecnn.compile import compiler

    variants = []
    notes = _input_notes(models, weights, data, layout)
    wanted = [p for p in Precision.values() if any(p in ps for ps in per_model.values())]
    for b in backends or []:  # a combination the backend does not build is left out, never faked
        for prec in wanted:
            if not compiler(b).supports(prec):
                notes.append(f"{b} {prec} left out: {compiler(b).precision_advice.get(prec, 'not built by ' + b)}")
    for m in models:
        for pr in prune_specs:
            for prec in per_model[m]:
                for b in backends or default_backends(t, prec, facts[m][0]):
                    if compiler(b).supports(prec):
                        variants.append(Variant(m, b, prec, pr))
    if not variants:
        raise DataError("nothing to bench: every requested combination was excluded")
    if tune is not None:
        _check_tune(t, mode, variants, tune)
    if (ssh_options or remote_python != "python3") and mode is not Mode.SSH:
        raise DataError("--ssh-option and --remote-python apply only with --device")
    if cpu_time and mode is not Mode.NATIVE:
        raise DataError("--cpu-time applies to native runs (here); emulated runs count instructions, and over "
                        "ssh the board's wall time is the figure")
    if mode is Mode.NATIVE:
        from edgecnn.bench.timing import default_threads

        threads, why = default_threads(threads)
        notes += [why] if why else []
    return BenchPlan(t, mode, variants, data, device, limit, runs, warmup, threads, weights, notes,
                     tuple(ssh_options), remote_python, calib, contract, save_predictions, cpu_time, tune)


def _check_tune(target: Target, mode: Mode, variants: list[Variant], trials: int) -> None:
    """--tune: MetaSchedule measures candidates where the code runs, so only tvm variants on this machine."""
    if trials < 1:
        raise DataError(f"--trials must be at least 1, got {trials}")
    if not any(v.backend == "tvm" for v in variants):
        raise DataError("--tune applies to the tvm backend: add --backend tvm")
    if mode is not Mode.NATIVE or not target.is_host:
        raise DataError(f"--tune needs --target host: MetaSchedule measures every candidate on the CPU that runs "
                        f"it, and {target.name} is not this machine")


def _input_notes(models: list[str], weights: str, data: str | None, layout: str | None) -> list[str]:
    """What each model is timed and scored on, when it is not labelled data: said in the notes, not implied."""
    from edgecnn.source import is_zoo_ref

    if layout == "images":
        return [f"--data {data} is a folder of images without labels: latency and fidelity to the source model "
                "only; accuracy is null"]
    if data is not None:
        return []
    own = [m for m in models if not (is_zoo_ref(m) and weights == "demo")]
    if not own:
        return []
    return [f"{', '.join(Path(m).name for m in own)}: no --data, so timed on synthetic inputs (random pixels "
            "through the model's own normalisation); accuracy is null: pass --data for a labelled set or a "
            "folder of images"]


def _check_device(device: str) -> None:
    """DataError for a --device that is not user@host[:port] with a port in 1..65535."""
    from edgecnn.bench.remote import parse_device

    try:
        parse_device(device)
    except DataError:
        raise DataError(f"--device {device!r} is not user@host[:port] (a host name or address, "
                        "optionally a user and a port 1-65535)") from None


def _check_user_models(models: list[str], weights: str, precisions: dict[str, list[str]], facts: dict,
                       calib: str | None) -> None:
    """The demo calibration split belongs to the demo models only: any other model brings its own for int8
    (without --data it is timed on synthetic inputs, never scored on the demo val split).

    Decided from the arguments alone, before a model is loaded: a model is a demo
    model when it is a zoo name benched with the demo weights; a name that is neither
    a zoo model nor a file is an unknown model.
    """
    from edgecnn.source import check_model_ref, is_zoo_ref

    for m in models:
        check_model_ref(m)
        if is_zoo_ref(m) and weights == "demo":
            continue
        if "int8" in precisions[m] and facts[m][1] != "int8" and calib is None:
            raise DataError(f"int8 for {m} needs its own calibration images: pass --calib (a named set under "
                            "calibration/ or a folder of images); the demo set fits only the demo models")


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
