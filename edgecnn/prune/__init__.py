"""Pruning that makes models faster: structured channel pruning, or magnitude sparsity, plus fine-tuning.

    from edgecnn.prune import prune
    result = prune("mobilenet_v2", "channel", 0.3, output_dir="build/")
    result.macs, result.latency["speedup"], result.accuracy["drop_points"]

"channel" removes whole channels (edgecnn.prune.channel) and rebuilds a smaller
dense network: fewer MACs, faster on every runtime. "magnitude" zeroes the
smallest weights (edgecnn.prune.magnitude): same shapes, smaller compressed file,
faster only where a runtime exploits sparsity. Both fine-tune on a training set
(the demo train split for demo-weight zoo models) and are measured before and
after: params, MACs, file size, accuracy on held-out data and fp32 TFLite latency
side by side. Writes <name>-pruned.keras and a <name>-pruned.json sidecar with
the model's data contract, so quantize and compile take it like any model file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

from edgecnn.errors import AccuracyError, DataError, EdgecnnError, EdgecnnWarning, ModelError
from edgecnn.kinds import PruneImportance as Importance, PruneMethod as Method, PruneScope as Scope

__all__ = ["Importance", "Method", "PruneResult", "Scope", "prune"]

FINETUNE_LR = 5e-4  # a quarter of the demo models' training rate: recover, do not retrain
RECIPE = 1  # bump when fine-tuning changes, so a resumed run never mixes two recipes


@dataclass
class PruneResult:
    """What prune() did and measured; to_dict() is what `--format json` prints."""

    model: str  # output stem, e.g. "mobilenet_v2-pruned"
    source: str
    task: str
    method: str
    ratio: float
    importance: str
    scope: str
    output: Path
    report: Path
    params: dict  # {"before", "after", "ratio"}
    macs: dict  # {"before", "after", "reduction"}
    size_bytes: dict  # keras/tflite (raw and gzip) before and after; magnitude: the sparse-encoded flatbuffer
    accuracy: dict | None  # {"metric", "dataset", "before", "after", "drop_points"}
    latency: dict  # side-by-side TFLite fp32: before/after stats, speedup, fps (magnitude: sparse-encoded after)
    finetune: dict
    channels: dict | None = None  # channel: prunable/removed counts and per-group sizes
    sparsity: dict | None = None  # magnitude: target, achieved, TFLite encoding and gzip sizes
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output"], d["report"] = str(self.output), str(self.report)
        return d


_KIND_WORDS = {"onnx": "ONNX", "tflite": "a TFLite flatbuffer"}


def _choice(enum: type[Enum], value: str, what: str) -> str:
    try:
        return enum(value).value
    except ValueError:
        raise EdgecnnError(f"{what} must be one of {', '.join(e.value for e in enum)}, got {value!r}") from None


def _dataset(path, source, split: str):
    """A labelled set for `split`: `path`, or the demo split for demo-weight zoo models, else None."""
    if path is None or str(path) == "demo":
        if not source.demo:
            if path is not None:
                raise DataError(f"the demo data fits only zoo models with demo weights, not {source.name}")
            return None
        from edgecnn.data.demo import demo_dataset

        return demo_dataset(source.task, split)
    from edgecnn.data.formats import load_dataset

    ds = load_dataset(path)
    if ds.task != source.task:
        raise DataError(f"data set {path} is for {ds.task}, but {source.name} is a {source.task} model")
    if source.classes and list(ds.classes) != list(source.classes):
        raise DataError(f"data set {path} has classes {list(ds.classes)}, {source.name} predicts {source.classes}")
    return ds


def _weights_digest(keras_model) -> str:
    h = hashlib.sha256()
    for w in keras_model.get_weights():
        h.update(w.tobytes())
    return h.hexdigest()


def prune(model: str | Path, method: str, ratio: float, *, importance: str = "l1", scope: str = "global",
          finetune_epochs: int = 3, data: str | Path | None = None, val: str | Path | None = None,
          weights: str | Path = "demo", output_dir: str | Path, learning_rate: float = FINETUNE_LR,
          max_drop: float | None = None, threads: int = 1, runs: int = 200,
          contract: dict | None = None, log: Callable[[str], None] | None = None) -> PruneResult:
    """Prune `model` (zoo reference or .keras/.h5 file with its <model>.json sidecar), fine-tune, measure, write.

    method "channel": ratio = share of the prunable channels removed (rounded so every
    layer keeps a multiple of 8). method "magnitude": ratio = target sparsity of the
    pruned kernels. importance: l1/l2 filter norms or bn |gamma| (channel only). scope:
    one global ranking or the same ratio per layer. data/val: labelled training / held-out
    sets (default: the demo splits for demo-weight zoo models). Fine-tuning resumes from
    its checkpoint in cache_dir("prune") when interrupted. max_drop: allowed accuracy loss in
    points; past it AccuracyError and nothing is written. threads: LiteRT threads for latency.
    """
    from edgecnn.paths import cache_dir, check_cache_root, check_output
    from edgecnn.prune import measure
    from edgecnn.runner.metrics import accuracy_drop
    from edgecnn.source import load_source
    from edgecnn.zoo.stats import count_macs, count_params

    t0 = time.time()
    say = log or (lambda _msg: None)
    method = _choice(Method, method, "method")
    importance = _choice(Importance, importance, "importance")
    scope = _choice(Scope, scope, "scope")
    if not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise EdgecnnError(f"--ratio must be between 0 and 1 (exclusive), got {ratio}")
    if method == Method.MAGNITUDE and importance == Importance.BN:
        raise EdgecnnError("importance 'bn' ranks channels; magnitude pruning ranks single weights by |w| (use l1)")
    # Each check names the one option that is wrong, as the CLI spells it (runs= has no flag).
    for flag, value, least in (("--finetune-epochs", finetune_epochs, 0), ("--threads", threads, 1),
                               ("runs", runs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise EdgecnnError(f"{flag} must be an integer of at least {least}, got {value!r}")
    if max_drop is not None and not max_drop >= 0:
        raise EdgecnnError(f"--max-drop must be a number of points >= 0, got {max_drop}")
    check_output(output_dir, "dir", "--output")
    check_cache_root()
    # The data paths are decided by the arguments alone: refused before the model is loaded.
    from edgecnn.data.formats import dataset_layout

    for flag, path in (("--data", data if finetune_epochs else None), ("--val", val)):
        if path is not None and str(path) != "demo":
            try:
                dataset_layout(path)
            except DataError as e:
                raise DataError(f"{flag}: {e}") from None

    source = load_source(model, weights=weights, contract=contract)
    if source.keras_model is None:
        raise ModelError(f"pruning needs a Keras model; {source.ref} is {_KIND_WORDS[source.kind]} (prune its Keras source)")
    original = source.keras_model
    meta = source.metadata()
    head = dict(source.head) if source.head else None
    if head is not None:
        head.setdefault("grid", int(original.output_shape[1]))
    val_ds = _dataset(val, source, "val")
    train_ds = _dataset(data, source, "train") if finetune_epochs else None
    if finetune_epochs and train_ds is None:
        raise DataError(f"fine-tuning {source.name} needs labelled training data: pass data= (--data), "
                        "or finetune_epochs=0")
    notes: list[str] = []
    if val_ds is None:
        notes.append("no labelled validation data: accuracy not measured (pass val=/--val)")
        warnings.warn(notes[-1], EdgecnnWarning, stacklevel=2)  # shown now: a later failure must not hide it

    channels = sparsity = None
    if method == Method.CHANNEL:
        from edgecnn.prune.channel import prune_channels

        say(f"channel pruning: ratio {ratio:g}, importance {importance}, scope {scope}")
        pruned, plan = prune_channels(original, ratio, importance, scope)
        channels = {"prunable": plan.prunable_channels, "removed": plan.removed_channels,
                    "removed_share": round(plan.removed_channels / plan.prunable_channels, 4),
                    "groups": plan.summary}
        callbacks, targets = [], []
    else:
        from edgecnn.prune import magnitude as mag

        pruned = measure.clean_copy(original)
        targets = mag.target_layers(pruned)
        if not targets:
            raise ModelError(f"{source.name} has no conv/dense kernels to sparsify")
        callbacks = []

    say(f"measuring {source.name} before pruning")  # after planning: an unsupported layer fails fast
    acc_before = measure.accuracy(original, meta, val_ds)
    finetune = {"epochs": finetune_epochs, "learning_rate": learning_rate, "seconds": 0.0,
                "data": getattr(train_ds, "name", None), "images": len(train_ds) if train_ds else 0}
    if finetune_epochs:
        from edgecnn.train.fit import fit, load_arrays

        size = tuple(meta["preprocessing"]["size"])
        say(f"fine-tuning {finetune_epochs} epoch(s) on {len(train_ds)} images of {finetune['data']}")
        arrays = load_arrays(train_ds, size)
        key = json.dumps([RECIPE, _weights_digest(original), method, ratio, importance, scope, finetune_epochs,
                          learning_rate, finetune["data"], len(train_ds)])
        state = cache_dir("prune", hashlib.sha256(key.encode()).hexdigest()[:20])
        if method == Method.MAGNITUDE:
            steps = finetune_epochs * (len(arrays.images) // 32)  # fit()'s batch size
            callbacks = [mag.sparsity_callback(targets, ratio, steps, scope)]
        t1 = time.time()
        history = fit(pruned, arrays, epochs=finetune_epochs, state_dir=state, preprocessing=meta["preprocessing"],
                      head=head, learning_rate=learning_rate, verbose=0, callbacks=callbacks)
        losses = history.history.get("loss") or [None]
        finetune.update(seconds=round(time.time() - t1, 1), final_loss=losses[-1])
    if method == Method.MAGNITUDE:
        mag.apply_sparsity(targets, ratio, scope)  # exactly the target, whatever the schedule reached
        sparsity = {"target": ratio, "achieved": round(mag.measured_sparsity(targets), 4),
                    "layers": len(targets), "scope": scope}

    say("measuring the pruned model")
    acc_after = measure.accuracy(pruned, meta, val_ds)
    tfl_before = _export(original)
    if method == Method.MAGNITUDE:
        enc = mag.tflite_sparsity(pruned)
        # The sparse-encoded flatbuffer is what a sparsity-aware runtime gets, so that is what is timed.
        enc.pop("_plain")
        tfl_after = enc.pop("_sparse")
        sparsity["tflite"] = enc
    else:
        tfl_after = _export(pruned)
    say(f"timing fp32 TFLite before/after side by side ({runs} runs each, {threads} thread(s))")
    latency = measure.latency_side_by_side(tfl_before, tfl_after, threads=threads, runs=runs)
    keras_after = measure.keras_bytes(pruned)
    drop = accuracy_drop(acc_before, acc_after)
    accuracy = None if acc_before is None else {"metric": acc_before["metric"], "dataset": val_ds.name,
                                                "before": acc_before, "after": acc_after, "drop_points": drop}
    if max_drop is not None and drop is not None and drop > max_drop:
        raise AccuracyError(f"{source.name} {method} pruning at ratio {ratio:g} drops {drop:.2f} points, past "
                            f"max_drop {max_drop:g}: lower the ratio or fine-tune longer")

    out_dir = Path(output_dir)
    stem = f"{source.name}-pruned"
    params = (count_params(original), count_params(pruned))
    macs = (count_macs(original), count_macs(pruned))
    result = PruneResult(
        model=stem, source=source.ref, task=source.task, method=method, ratio=ratio, importance=importance,
        scope=scope, output=out_dir / f"{stem}.keras", report=out_dir / f"{stem}.json",
        params={"before": params[0], "after": params[1], "ratio": round(params[1] / params[0], 4)},
        macs={"before": macs[0], "after": macs[1], "reduction": round(1 - macs[1] / macs[0], 4)},
        size_bytes={"keras_before": len(measure.keras_bytes(original)), "keras_after": len(keras_after),
                    "tflite_before": len(tfl_before), "tflite_after": len(tfl_after),
                    "tflite_gzip_before": len(gzip.compress(tfl_before, 9)),
                    "tflite_gzip_after": len(gzip.compress(tfl_after, 9))},
        accuracy=accuracy, latency=latency, finetune=finetune, channels=channels, sparsity=sparsity,
        seconds=round(time.time() - t0, 1), warnings=notes)
    from edgecnn.paths import atomic_write_bytes

    sidecar = {**meta, "model": stem, "head": head,
               "pruning": {"method": method, "ratio": ratio, "importance": importance, "scope": scope},
               "report": result.to_dict()}
    atomic_write_bytes(result.output, keras_after)
    atomic_write_bytes(result.report, (json.dumps(sidecar, indent=1, default=str) + "\n").encode())
    return result


def _export(keras_model) -> bytes:
    from edgecnn.frameworks.tf import tflite_float as export_float

    return export_float(keras_model)

