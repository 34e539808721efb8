"""Run a bundle where it is: latency, memory and (given a data set) accuracy, as one dict.

    from edgecnn.runner.run import run_bundle
    result = run_bundle("build/a72/mobilenet_v2-int8-tflite", data="val/", runs=50)

The dict uses the bench JSON names (docs/architecture.md): latency_ms {mean, p50,
p90, p99, std}, fps (1000 / p50) and fps_mean (1000 / mean), load_ms,
first_inference_ms, peak_rss_mb, size_bytes, threads, images, inputs, machine
(where it ran), accuracy. Timed runs invoke the model on the same input, already
fed: they measure the runtime, not image decoding or (de)quantization.

Accuracy of detectors: COCO mAP needs faster-coco-eval. When the board has it,
mAP is computed here; when not (it is not in the `runner` extra), the result
carries the detections as COCO results ("predictions") with accuracy null, and
the PC, which has the same data set, computes mAP (edgecnn.bench.remote does).

Imports: stdlib + numpy + the bundle's runtime; opencv and the data loaders only
when a data set is given.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.artifacts import Bundle, load_bundle
from edgecnn.errors import DataError, ModelError
from edgecnn.runner.sessions import RUNNER_HINT, Session, open_session
from edgecnn.runner.stats import fps, latency_stats

DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (runtime, model and Python), in MiB.

    Linux: VmHWM of /proc/self/status. getrusage's ru_maxrss survives exec, so a runner
    started from a big parent (the PC side holds TensorFlow) would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def synthetic_input(bundle: Bundle, seed: int = 0) -> list[np.ndarray]:
    """A random image per input, normalised like the real ones (without opencv): the latency input."""
    prep = bundle.manifest.preprocessing
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in bundle.manifest.inputs:
        shape = [1 if d == -1 else d for d in spec.shape]
        if spec.layout == "NCHW" and len(shape) == 4:
            shape = [shape[0], shape[2], shape[3], shape[1]]  # sessions take NHWC images
        u8 = rng.integers(0, 256, shape).astype(np.float32)
        scale, offset = np.asarray(prep.get("scale", 1 / 255), np.float32), np.asarray(prep.get("offset", 0.0),
                                                                                       np.float32)
        arrays.append((u8 * scale + offset).astype(np.float32))
    return arrays


def _check_counts(runs: int, warmup: int, limit: int | None) -> None:
    for name, value, least in (("runs", runs, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise DataError(f"{name} must be an integer >= {least}, got {value!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive integer, got {limit!r}")


def time_session(session: Session, inputs: list[np.ndarray], runs: int, warmup: int) -> dict[str, Any]:
    """first_inference_ms, then `warmup` untimed and `runs` timed invokes: latency_ms and fps."""
    session.feed(*inputs)
    start = time.perf_counter_ns()
    session.invoke()
    first = (time.perf_counter_ns() - start) / 1e6
    for _ in range(warmup):
        session.invoke()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        session.invoke()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    stats = latency_stats(samples)
    return {"first_inference_ms": first, "latency_ms": stats, "fps": fps(stats["p50"]),
            "fps_mean": fps(stats["mean"])}


def machine() -> dict[str, Any]:
    """The machine this runs on (not the target a bundle was built for): architecture, CPU model, cores."""
    import os
    import platform

    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    cpu = value.strip()
                    break
    except OSError:
        pass
    from edgecnn.runner import amx

    facts = {"arch": platform.machine(), "cpu": cpu or platform.processor() or None, "cores": os.cpu_count()}
    if amx.state() is not None:  # an x86 CPU with AMX: whether the runtimes here could use it (EDGECNN_AMX)
        facts["amx"] = amx.state()
    return facts


def run_bundle(bundle: str | Path | Bundle, *, data: str | Path | None = None, limit: int | None = None,
               runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP, threads: int | None = None) -> dict[str, Any]:
    """Load the bundle, time `runs` invokes after `warmup`, and score it on `data` when given.

    `data` is any layout edgecnn.data.formats reads (class folders, COCO JSON, VOC,
    YOLO txt) or a folder of unlabelled images (timed, not scored); `limit` keeps its
    first N images. Latency uses the first image of `data`, or a random image without it;
    "inputs" says which ("labelled", "unlabelled", "synthetic"). A generic model (no
    task edgecnn scores) gets accuracy null whatever the data.
    """
    _check_counts(runs, warmup, limit)
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    m = b.manifest
    dataset = _load_data(data, limit) if data is not None else None

    start = time.perf_counter_ns()
    session = open_session(b, threads)
    load_ms = (time.perf_counter_ns() - start) / 1e6
    inputs = synthetic_input(b) if dataset is None else [_prepare(m)(dataset.samples[0].path)[0]]
    timing = time_session(session, inputs, runs, warmup)

    result: dict[str, Any] = {
        # built_for: the target the bundle was compiled for; machine: where this run happened (not always one)
        "model": m.name, "built_for": m.target, "backend": m.backend, "precision": m.precision,
        "task": m.task, "pruning": m.pruning, "mode": "native", "threads": session.threads,
        "machine": machine(), "images": None, "size_bytes": b.size_bytes, "macs": m.macs,
        "latency_ms": timing["latency_ms"], "fps": timing["fps"], "fps_mean": timing["fps_mean"],
        "load_ms": load_ms, "first_inference_ms": timing["first_inference_ms"], "peak_rss_mb": None,
        "emulated_instructions": None, "runs": runs, "warmup": warmup, "accuracy": None,
        "inputs": "synthetic" if dataset is None else ("unlabelled" if dataset.task is None else "labelled"),
    }
    if dataset is not None:
        result.update(evaluate_bundle(session, dataset))
    result["peak_rss_mb"] = peak_rss_mb()  # after evaluation: the whole run's peak
    return result


def _load_data(data: str | Path, limit: int | None):
    try:
        from edgecnn.data.formats import load_dataset
    except ImportError as e:  # opencv: only needed to decode images
        package = "opencv-python-headless" if e.name in (None, "cv2") else e.name
        raise ModelError(f"reading a data set needs {package}: {RUNNER_HINT}") from None
    dataset = load_dataset(data, unlabelled=True).subset(limit)
    if len(dataset) == 0:
        raise DataError(f"{data}: the data set has no images")
    return dataset


def _prepare(manifest):
    from edgecnn.data.preprocess import Preprocessing

    return Preprocessing.from_dict(manifest.preprocessing)


STAGES = ("decode", "preprocess", "feed", "invoke", "fetch", "postprocess")


class Stages:
    """One image at a time through the whole pipeline a camera loop runs, each stage timed: image decode,
    resize + normalisation, feeding the input (int8 quantisation included), invoke, fetching the outputs
    (dequantisation), and the task's post-processing (detector decode + NMS, top-k)."""

    def __init__(self, session: Session, prep):
        self.session, self.prep = session, prep
        self.totals = dict.fromkeys(STAGES, 0)
        self.images = 0
        self.pixel_input = pixel_input(session.manifest)

    def run(self, path: Path, post=None):
        """(post(outputs, transform) or the outputs, transform) of one image file."""
        from edgecnn.data.preprocess import load_image

        clock = time.perf_counter_ns
        t0 = clock()
        image = load_image(path)
        t1 = clock()
        if self.pixel_input is not None:  # integer input: resize, then one table lookup (no float pass)
            pixels, transform = self.prep.pixels(image)
            batch = self.pixel_input(pixels)
        else:
            batch, transform = self.prep(image)
        t2 = clock()
        self.session.feed(batch)
        t3 = clock()
        self.session.invoke()
        t4 = clock()
        outputs = self.session.fetch()
        t5 = clock()
        result = post(outputs, transform) if post is not None else outputs
        t6 = clock()
        for stage, (a, b) in zip(STAGES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6))):
            self.totals[stage] += b - a
        self.images += 1
        return result, transform

    def summary(self) -> dict[str, Any] | None:
        """{"images", "mean_ms": {stage: ms}, "total_ms", "fps"}: the end-to-end figure a camera pipeline gets
        (one image at a time, measured during the accuracy pass), beside the invoke-only latency."""
        if not self.images:
            return None
        means = {k: round(v / self.images / 1e6, 4) for k, v in self.totals.items()}
        total = sum(v / self.images / 1e6 for v in self.totals.values())
        return {"images": self.images, "mean_ms": means, "total_ms": round(total, 4),
                "fps": round(1000 / total, 2) if total > 0 else None,
                "input_step": self.pixel_input.kind if self.pixel_input is not None else "float"}


def pixel_input(manifest):
    """The manifest's integer pixel-to-input step (edgecnn.runner.tensors.PixelInput), or None (float path)."""
    from edgecnn.runner.tensors import PixelInput, pixel_table

    step, spec = manifest.input_step, manifest.inputs[0] if len(manifest.inputs) == 1 else None
    if not step or spec is None or spec.scale is None:
        return None
    pre = manifest.preprocessing
    return PixelInput(pixel_table(pre.get("scale", 1 / 255), pre.get("offset", 0.0), np.dtype(spec.dtype),
                                  spec.scale, spec.zero_point or 0))


def evaluate_bundle(session: Session, dataset) -> dict[str, Any]:
    """{"images", "accuracy", "predictions", "end_to_end"} of a session on a loaded data set; accuracy None for
    unlabelled images and generic models (which are only run: their outputs have no metric edgecnn could
    trust). Images go through one at a time, each stage timed (Stages)."""
    m = session.manifest
    stages = Stages(session, _prepare(m))
    if dataset.task is None or m.task not in ("classification", "detection"):
        for s in dataset.samples:
            stages.run(s.path)
        return {"images": len(dataset), "accuracy": None, "predictions": None, "end_to_end": stages.summary()}
    if dataset.task != m.task:
        raise DataError(f"{dataset.name or 'the data set'} is a {dataset.task} data set, but {m.name} is a "
                        f"{m.task} model")
    from edgecnn.runner.metrics import class_map

    mapping = class_map(m.classes, dataset.classes, dataset.name or "data set")
    if m.task == "classification":
        def top(outputs, _):
            scores = np.asarray(outputs[0]).reshape(1, -1)
            return scores, np.argsort(-scores[0])[:5]

        ran = [stages.run(s.path, top)[0] for s in dataset.samples]
        scores = np.concatenate([r[0] for r in ran])
        expected = len(m.classes) if m.classes else len(dataset.classes)
        if scores.shape[1] != expected:
            raise DataError(f"{m.name} gives {scores.shape[1]} class scores, but its classes (or the data set's) "
                            f"number {expected}: a classifier's outputs must match its class names")
        labels = np.array([s.label for s in dataset.samples])
        if mapping is not None:  # the data set's labels in the model's class order
            labels = np.array([int(np.flatnonzero(mapping == label)[0]) for label in labels])
        from edgecnn.runner.metrics import topk_accuracy

        # top5: class indices in the manifest's class order
        predictions = [{"image": s.path.name, "top5": [int(v) for v in r[1]]} for s, r in zip(dataset.samples, ran)]
        return {"images": len(dataset), "accuracy": topk_accuracy(labels, scores), "predictions": predictions,
                "end_to_end": stages.summary()}
    detections = _detect(stages, dataset, mapping)
    from edgecnn.runner.metrics import coco_map_from_results, coco_results

    results = coco_results(dataset, detections)
    done = {"images": len(dataset), "accuracy": None, "predictions": results, "end_to_end": stages.summary()}
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return done
    return {**done, "accuracy": coco_map_from_results(dataset, results)}


def _detect(stages: Stages, dataset, mapping: np.ndarray | None) -> list:
    from edgecnn.runner.postprocess import Detections, decoder

    m = stages.session.manifest
    if not m.head or not m.classes:
        raise ModelError("manifest: a detection bundle needs a head and classes")
    decode = decoder(m.to_dict(), "manifest")

    def post(outputs, transform) -> Detections:
        det = decode([o[0] for o in outputs])
        boxes, scores, labels = transform.boxes_to_original(det.boxes), det.scores, det.labels
        if mapping is not None:
            labels = mapping[labels]
            keep = labels >= 0
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), scores, labels)

    return [stages.run(s.path, post)[0] for s in dataset.samples]
