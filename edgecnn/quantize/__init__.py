"""int8 post-training quantization with calibration and accuracy validation (TFLite and ONNX).

    from edgecnn.quantize import quantize
    result = quantize("mobilenet_v2", "demo-classification", "build/")
    result.accuracy, result.outputs, result.output

Every quantization is validated on a held-out set that shares no image with the
calibration set: accuracy of fp32 and int8 through the same metrics as bench
(top-1, or COCO mAP@0.5:0.95 and @0.5), and per-output SNR and cosine
similarity. `max_drop` (percentage points of top-1, or of mAP@0.5:0.95) turns
that into a gate raising AccuracyError; with `fallback` the most sensitive
layers stay in float until the drop is inside it. Outputs are written only
after the gate passed, each through a temporary name, so a failed run writes
nothing.
"""

from __future__ import annotations

import json
import sys
import time
import types
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from edgecnn.errors import AccuracyError, DataError, EdgecnnError, EdgecnnWarning, ModelError
from edgecnn.kinds import Arch, Task
from edgecnn.quantize.backends import Backend, IOType, Method, check_options, open_backend

__all__ = ["Backend", "IOType", "Method", "QuantizeResult", "quantize"]

# Without labelled validation data, this share of the calibration images is held out for output fidelity.
HOLDOUT_SHARE = 0.1


@dataclass
class QuantizeResult:
    """What quantize() produced and measured; to_dict() is what `--format json` prints."""

    model: str
    task: str
    backend: str
    settings: dict
    output: Path  # the int8 artifact
    float_output: Path  # the fp32 artifact of the same backend (the reference)
    report: Path  # JSON sidecar: preprocessing, classes, head, settings and these figures
    calibration: dict  # {"name", "images"}
    validation: dict  # {"name", "images", "labelled"}
    accuracy: dict  # {"metric", "fp32", "int8", "drop_points"}
    outputs: list[dict]  # per output: name, snr_db, cosine
    sensitivity: list[dict]  # most sensitive layers first: layer, snr_db
    float_layers: list[str]  # layers kept in float by --fallback (short names)
    size_bytes: dict  # {"fp32", "int8", "ratio"}
    seconds: float
    warnings: list[str] = field(default_factory=list)
    fallback_steps: list[str] = field(default_factory=list)  # what --fallback tried, in order

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("output", "float_output", "report"):
            d[key] = str(d[key])
        return d


def quantize(model: str | Path, calib: str | Path, output_dir: str | Path, *, backend: str = "tflite",
             per_channel: bool = True, method: str = "minmax", io: str | None = None,
             max_drop: float | None = None, fallback: bool = False, weights: str | Path = "demo",
             preprocessing=None, val: str | Path | None = None, val_limit: int | None = None,
             sensitivity_samples: int = 32, top_layers: int = 10, contract: dict | None = None,
             arch: str | None = None, log: Callable[[str], None] | None = None) -> QuantizeResult:
    """Quantize a model to int8, validate it against its fp32 form, write both plus a JSON report.

    model: zoo reference (with `weights`, default its demo weights) or a .keras/.h5/.onnx file
    (preprocessing from a `<model>.json` sidecar or `preprocessing=`). calib: a named set under
    calibration/ or a folder of images. val: labelled held-out data (class folders, COCO JSON, VOC,
    YOLO txt); zoo models with demo weights default to the demo val split. io: "int8" or "float"
    model inputs/outputs (default: int8 for tflite, float for onnx). max_drop: allowed drop in
    percentage points of the primary metric; past it AccuracyError, unless `fallback` finds layers
    to keep in float that bring it inside. arch: the CPU architecture the int8 model is for ("aarch64",
    "x86_64"; default this machine's): the onnx backend picks its activation/weight types by it and
    warns about ops onnxruntime would leave in float there.
    """
    from edgecnn.data.calibration import load_calibration_set
    from edgecnn.paths import atomic_write_bytes, check_cache_root, check_output, work_dir
    from edgecnn.quantize import sensitivity as sens
    from edgecnn.quantize import validate as v
    from edgecnn.quantize.calibration import build_calibration, check_disjoint
    from edgecnn.runner.metrics import accuracy_drop, describe_accuracy, primary_metric
    from edgecnn.source import load_source

    t0 = time.time()
    say = log or (lambda _msg: None)
    io = check_options(backend, method, io)
    if max_drop is not None and not max_drop >= 0:
        raise EdgecnnError(f"--max-drop must be a number of points >= 0, got {max_drop}")
    if fallback and max_drop is None:
        raise EdgecnnError("--fallback needs --max-drop: it keeps layers in float until the drop is inside it")
    if val_limit is not None and val_limit < 1:
        raise EdgecnnError(f"--val-limit must be 1 or more, got {val_limit}")
    if arch is not None and arch not in Arch.values():
        raise EdgecnnError(f"unknown architecture {arch!r}; known: {', '.join(Arch.values())}")
    check_output(output_dir, "dir", "--output")
    check_cache_root()
    notes: list[str] = []

    def note(msg: str) -> None:  # warned at once (the CLI prints it then), so a later error does not swallow it
        notes.append(msg)
        warnings.warn(msg, EdgecnnWarning, stacklevel=3)

    # What the paths alone decide, before the model is loaded (seconds for a large Keras model).
    cset = load_calibration_set(calib)
    if val is not None:
        from edgecnn.data.formats import dataset_layout

        try:
            dataset_layout(val)
        except DataError as e:
            raise DataError(f"--val: {e}") from None
    source = load_source(model, weights=weights, preprocessing=preprocessing, contract=contract)
    if source.kind == "tflite" and source.precision == "int8":
        raise ModelError(f"{Path(source.ref).name} is already an int8 TFLite model: there is nothing to quantize")
    if cset.task and cset.task != source.task:
        raise DataError(f"calibration set '{cset.name}' is for {cset.task}, but {source.name} is a "
                        f"{source.task} model")
    if source.task == Task.GENERIC and max_drop is not None:
        raise DataError(f"--max-drop gates an accuracy drop, and {source.name} is a generic model with no accuracy "
                        "metric: its int8 fidelity (SNR, cosine per output) is reported instead")
    dataset = _validation_set(source, val, val_limit)
    if dataset is None and max_drop is not None:
        raise DataError(f"--max-drop needs labelled validation data for {source.name}: pass --val "
                        "(class folders, COCO JSON, VOC or YOLO txt)")
    say(f"calibration: decoding {len(cset.images)} images of '{cset.name}'")
    data = build_calibration(cset, source.preprocessing, "input")
    holdout = None
    if dataset is None:
        keep = len(data) - max(1, round(len(data) * HOLDOUT_SHARE))
        if keep < 1:
            raise DataError(f"calibration set '{cset.name}' has {len(data)} image(s): too few to hold any out "
                            "for validation; pass --val")
        holdout = data.images[keep:]
        data = type(data)(data.name, data.input_name, data.images[:keep], data.paths[:keep])
        note(f"no labelled validation data: accuracy not measured; output fidelity on the last "
             f"{len(holdout)} calibration images, held out of calibration")
    else:
        check_disjoint(data, [s.path for s in dataset.samples])
    if data.too_small:
        note(f"calibrating on {len(data)} images; at least 200 are recommended (int8 ranges from a "
             "handful of images are fragile)")

    with work_dir("quantize") as work:
        session = open_backend(backend, source, data, Path(work), per_channel, method, io, arch=arch)
        say(f"{backend}: exporting fp32")
        fp32_model = session.export_float()
        say(f"{backend}: calibrating on {len(data)} images and quantizing")
        int8_model = session.speed_check(session.quantize(), say)
        names = session.output_names(fp32_model)
        held_out = len(dataset) if dataset is not None else len(holdout)
        say(f"validating fp32 and int8 on {held_out} held-out images")
        ref = v.evaluate(session.predictor(fp32_model), source, dataset, holdout)
        q = v.evaluate(session.predictor(int8_model), source, dataset, holdout)
        drop = accuracy_drop(ref.accuracy, q.accuracy)
        say("measuring per-layer sensitivity")
        ranked = sens.rank(session.sensitivity(int8_model, sensitivity_samples), session.short_name)
        kept: list[str] = []
        fallback_steps: list[str] = []
        percentile = getattr(session, "percentile", None) if method == Method.PERCENTILE.value else None

        def describe(acc, d) -> str:
            before, after = describe_accuracy(source.task, ref.accuracy), describe_accuracy(source.task, acc)
            return f"{source.name} {backend} int8 drops {d:.2f} points: fp32 {before} -> int8 {after}"

        if max_drop is not None and drop > max_drop:
            if not fallback:
                worst = (f"; most sensitive layer {ranked[0].short} ({ranked[0].snr_db:.1f} dB)" if ranked else "")
                raise AccuracyError(f"{describe(q.accuracy, drop)}, past --max-drop {max_drop:g}{worst}: "
                                    "try --fallback")
            from edgecnn.quantize.fallback import Candidate, search

            found = search(session, Candidate(drop, int8_model, q), ranked, max_drop, method,
                           lambda model: v.evaluate(session.predictor(model), source, dataset, None),
                           lambda ev: accuracy_drop(ref.accuracy, ev.accuracy), describe,
                           sensitivity_samples, say)
            drop, int8_model, q = found.chosen.drop, found.chosen.model, found.chosen.evaluation
            method, kept, fallback_steps, ranked = found.method, found.float_layers, found.steps, found.ranked
            if found.percentile is not None:
                percentile = found.percentile
        outputs = v.fidelity(ref.outputs, q.outputs, names)
        for msg in session.runtime_warnings(int8_model):
            note(msg)
        backend_settings = session.settings()

    out_dir = Path(output_dir)
    stem = f"{source.name}-int8"
    paths = (out_dir / f"{stem}{session.suffix}", out_dir / f"{source.name}-fp32{session.suffix}",
             out_dir / f"{stem}.json")
    result = QuantizeResult(
        model=source.name, task=source.task, backend=backend,
        settings={"per_channel": per_channel, "method": method, "percentile": percentile, "io": io,
                  "max_drop": max_drop,
                  "fallback": fallback, "weights": str(weights) if source.keras_model is not None else None,
                  **backend_settings},
        output=paths[0], float_output=paths[1], report=paths[2],
        calibration={"name": cset.name, "images": len(data)},
        validation={"name": getattr(dataset, "name", None) or "held-out calibration images",
                    "images": held_out, "labelled": dataset is not None},
        accuracy={"metric": primary_metric(source.task), "fp32": ref.accuracy, "int8": q.accuracy,
                  "drop_points": drop},
        outputs=outputs,
        sensitivity=[{"layer": r.short, "snr_db": r.snr_db} for r in ranked[:top_layers]],
        float_layers=kept,
        size_bytes={"fp32": len(fp32_model), "int8": len(int8_model),
                    "ratio": round(len(int8_model) / len(fp32_model), 4)},
        seconds=round(time.time() - t0, 1), warnings=notes, fallback_steps=fallback_steps)
    report = {**source.metadata(), "quantization": result.to_dict()}
    atomic_write_bytes(paths[1], fp32_model)
    atomic_write_bytes(paths[0], int8_model)
    atomic_write_bytes(paths[2], (json.dumps(report, indent=1, default=str) + "\n").encode())
    return result


def _validation_set(source, val, val_limit):
    """The labelled held-out set: `val` if given, the demo val split for demo-weight zoo models, else None."""
    if source.task == Task.GENERIC:
        return None  # fidelity only, on held-out calibration images
    if val is not None:
        from edgecnn.data.formats import load_dataset

        dataset = load_dataset(val)
        if dataset.task != source.task:
            raise DataError(f"validation data {val} is for {dataset.task}, but {source.name} is a {source.task} model")
    elif source.demo:
        from edgecnn.data.demo import demo_dataset

        dataset = demo_dataset(source.task, "val")
    else:
        return None
    if source.task == Task.DETECTION:  # a data set may label some of a detector's classes, by name
        from edgecnn.runner.metrics import class_map

        class_map(source.classes, dataset.classes, str(val or dataset.name))
    elif source.classes and len(dataset.classes) != len(source.classes):
        raise DataError(f"validation data has {len(dataset.classes)} classes, {source.name} predicts "
                        f"{len(source.classes)}")
    if source.task == Task.CLASSIFICATION and source.classes and dataset.classes != source.classes:
        raise DataError(f"validation classes {dataset.classes} differ from the model's {source.classes}")
    if val_limit is None or val_limit >= len(dataset):
        return dataset
    # Evenly spaced, not the first N: class-folder data sets are sorted by class.
    import dataclasses

    import numpy as np

    picks = np.unique(np.linspace(0, len(dataset) - 1, val_limit).round().astype(int))
    return dataclasses.replace(dataset, samples=[dataset.samples[i] for i in picks])


class _CallableModule(types.ModuleType):
    """Importing this subpackage rebinds `edgecnn.quantize` to it; keep `edgecnn.quantize(...)` callable."""

    def __call__(self, *args, **kwargs) -> QuantizeResult:
        return quantize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
