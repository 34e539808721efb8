"""What `edgecnn bench` will do: the variants (models x pruning x backends x precisions), the mode, and every
refusal of a bad request, decided before any model is loaded (edgecnn.bench.pipeline runs the plan)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgecnn.errors import DataError, TargetError
from edgecnn.kinds import BenchMode as Mode, Precision
from edgecnn.targets import Target, get_target, host_arch

DEMO_MODELS = ("yolo_lite", "mobilenet_v2", "mobilenet_v1")


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
    no_amx: bool = False  # native runs: the runner processes deny Intel AMX to their runtimes (edgecnn.runner.amx)


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
              save_predictions: str | None = None, cpu_time: bool = False, tune: int | None = None,
              no_amx: bool = False) -> BenchPlan:
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
    if no_amx and mode is not Mode.NATIVE:
        raise DataError("--no-amx applies to native runs (here, on an x86 CPU with AMX); a board has no AMX")
    if no_amx:
        from edgecnn.runner.amx import cpu_has_amx

        if not cpu_has_amx():
            notes.append("--no-amx: this CPU has no AMX, so nothing was denied; the figures are this CPU's usual ones")
    if mode is Mode.NATIVE:
        from edgecnn.bench.timing import default_threads

        threads, why = default_threads(threads)
        notes += [why] if why else []
    return BenchPlan(t, mode, variants, data, device, limit, runs, warmup, threads, weights, notes,
                     tuple(ssh_options), remote_python, calib, contract, save_predictions, cpu_time, tune, no_amx)


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
