"""Scoring, below every stage: accuracy (top-k, COCO mAP), its drop, and output agreement.

quantize, prune, compile verification, the runner and bench all score models;
this module is the one place that says how, so a figure means the same thing
in every report. It lives in the runner because the board scores too: numpy
and the data set types only, nothing that drives a stage.

mAP comes from faster-coco-eval (a maintained, C++-backed COCOeval), imported
only when mAP is computed: the board may not have it, and then sends COCO
results (coco_results) for the PC to score.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgecnn.data.dataset import ClassificationDataset, DetectionDataset
from edgecnn.kinds import Task
from edgecnn.paths import PathError, atomic_write_bytes, check_output
from edgecnn.runner.postprocess import Detections, decoder


def topk_accuracy(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """top-1 and top-5 from (N, C) scores; top-5 is None unless there are more than 5 classes (with 5 or
    fewer it is 1.0 by construction, a figure that says nothing)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("no samples to score")
    order = np.argsort(-scores, axis=1)
    top1 = float(np.mean(order[:, 0] == labels))
    top5 = float(np.mean((order[:, :5] == labels[:, None]).any(axis=1))) if scores.shape[1] > 5 else None
    return {"metric": "top1", "top1": top1, "top5": top5}


def coco_results(dataset: DetectionDataset, detections: Iterable[Detections]) -> list[dict]:
    """COCO result dicts (the sample's image_id, the data set's category_id of each label, xywh bbox,
    score), so any COCO tool scores them against the data set's own file; detections in
    original-image pixels, one per sample. JSON-ready: the board sends these when it cannot score."""
    results = []
    for sample, det in zip(dataset.samples, detections, strict=True):
        for box, score, label in zip(det.boxes, det.scores, det.labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({"image_id": int(sample.image_id), "category_id": dataset.category_id(label),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return results


def save_coco_results(path: str | Path, results: list[dict]) -> Path:
    """Write COCO result dicts (see coco_results) as one JSON list, through a temporary name and a
    rename, so an interrupted run never leaves half a file; returns the path."""
    path = check_output(path, "file", "predictions file")
    try:
        atomic_write_bytes(path, json.dumps(results).encode())
    except OSError as e:
        raise PathError(f"predictions file {path}: cannot write ({e.strerror or e})") from None
    return path


def coco_map_from_results(dataset: DetectionDataset, results: list[dict]) -> dict[str, float]:
    """COCO mAP@0.5:0.95 and mAP@0.5 of COCO result dicts (see coco_results) against the data set;
    detections on its ignore regions count neither way, as COCO's crowd regions."""
    from faster_coco_eval import COCO, COCOeval_faster

    if not results:
        return {"metric": "map50_95", "map50_95": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its summary table
        gt = COCO(dataset.to_coco())
        # loadRes adds fields (area, segmentation, id) to the dicts it gets: give it copies.
        dt = gt.loadRes([{**r, "bbox": list(r["bbox"])} for r in results])
        ev = COCOeval_faster(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"metric": "map50_95", "map50_95": float(ev.stats[0]), "map50": float(ev.stats[1])}


def coco_map(dataset: DetectionDataset, detections: Iterable[Detections]) -> dict[str, float]:
    """COCO mAP@0.5:0.95 and mAP@0.5; detections in original-image pixels, one per sample."""
    return coco_map_from_results(dataset, coco_results(dataset, detections))


def evaluate_classifier(predict: Callable[[np.ndarray], np.ndarray], dataset: ClassificationDataset,
                        preprocess, batch_size: int = 32) -> dict[str, float]:
    """Run `predict` (batch -> (N, C) scores) over a class-folder data set."""
    scores, labels = [], []
    for start in range(0, len(dataset), batch_size):
        chunk = dataset.samples[start:start + batch_size]
        batch = np.concatenate([preprocess(s.path)[0] for s in chunk])
        scores.append(np.asarray(predict(batch)))
        labels.extend(s.label for s in chunk)
    return topk_accuracy(np.array(labels), np.concatenate(scores))


def class_map(model_classes: list[str] | None, data_classes: list[str], data: str) -> np.ndarray | None:
    """Model class index -> data set class index (-1: a class the data set lacks); None when identical.

    A data set may label a subset of the model's classes (faces only, of a detector of 18 classes); a class
    the model does not know is an error, never a silent zero.
    """
    from edgecnn.errors import DataError

    if not model_classes or list(model_classes) == list(data_classes):
        return None
    unknown = [c for c in data_classes if c not in model_classes]
    if unknown:
        raise DataError(f"{data}: class(es) {', '.join(unknown)} are not among the model's {list(model_classes)}")
    return np.array([data_classes.index(c) if c in data_classes else -1 for c in model_classes], np.int64)


def _mapped(det: Detections, mapping: np.ndarray | None) -> Detections:
    """Detections with the model's labels turned into the data set's, those of classes it lacks dropped."""
    if mapping is None:
        return det
    labels = mapping[det.labels]
    keep = labels >= 0
    return Detections(det.boxes[keep], det.scores[keep], labels[keep])


def evaluate_detector(predict: Callable[[np.ndarray], np.ndarray | list], dataset: DetectionDataset, preprocess,
                      postprocess: Callable[[list], Detections], batch_size: int = 32,
                      model_classes: list[str] | None = None) -> dict[str, float]:
    """Run `predict` (batch -> the raw output, or the list of outputs) and `postprocess` (one image's outputs ->
    Detections) over a data set; with `model_classes`, labels are mapped to the data set's classes by name."""
    mapping = class_map(model_classes, dataset.classes, dataset.name or "data set")
    all_dets: list[Detections] = []
    for start in range(0, len(dataset), batch_size):
        chunk = dataset.samples[start:start + batch_size]
        prepared = [preprocess(s.path) for s in chunk]
        outs = predict(np.concatenate([b for b, _ in prepared]))
        outs = [np.asarray(o) for o in outs] if isinstance(outs, (list, tuple)) else [np.asarray(outs)]
        for i, (_, transform) in enumerate(prepared):
            det = _mapped(postprocess([o[i] for o in outs]), mapping)
            boxes = transform.boxes_to_original(det.boxes) if len(det) else det.boxes
            all_dets.append(Detections(np.asarray(boxes, np.float32), det.scores, det.labels))
    return coco_map(dataset, all_dets)


def evaluate(predict: Callable[[np.ndarray], np.ndarray], metadata: dict,
             dataset: ClassificationDataset | DetectionDataset, batch_size: int = 32) -> dict[str, float]:
    """Accuracy of any runnable model on a data set, given its data contract.

    `metadata` carries what deployment carries too: "preprocessing" (a
    Preprocessing dict), "classes", and for detectors "head" (anchors, grid);
    see edgecnn.runner.postprocess.decoder.
    """
    from edgecnn.data.preprocess import Preprocessing  # opencv: only once images are read

    prep = Preprocessing.from_dict(metadata["preprocessing"])
    if isinstance(dataset, ClassificationDataset):
        return evaluate_classifier(predict, dataset, prep, batch_size)
    return evaluate_detector(predict, dataset, prep, decoder(metadata), batch_size, metadata.get("classes"))


def primary_metric(task: str) -> str | None:
    """The accuracy figure that gates and ranks models of a task: top-1, COCO mAP@0.5:0.95, or None (generic)."""
    return {Task.CLASSIFICATION: "top1", Task.DETECTION: "map50_95"}.get(Task(task))


def accuracy_drop(before: dict | None, after: dict | None) -> float | None:
    """Loss of the primary metric in percentage points (positive = `after` is worse); None unless both
    were measured. The metric is the one the accuracy dicts name ("metric"), so the task need not be given."""
    if not before or not after:
        return None
    key = before["metric"]
    return round((before[key] - after[key]) * 100, 3)


def describe_accuracy(task: str, acc: dict | None) -> str:
    """'top-1 93.20%' or 'mAP@0.5:0.95 41.0, mAP@0.5 66.1' (points) for messages and tables."""
    if acc is None:
        return "not measured" if primary_metric(task) else "no accuracy metric (generic model)"
    if task == Task.CLASSIFICATION:
        return f"top-1 {acc['top1'] * 100:.2f}%"
    return f"mAP@0.5:0.95 {acc['map50_95'] * 100:.2f}, mAP@0.5 {acc['map50'] * 100:.2f}"


@dataclass(frozen=True)
class Agreement:
    """How closely one output of a model follows the same output of its reference, over a set of images."""

    max_abs_diff: float  # largest |reference - output| over every element
    scale: float  # max(1, max |reference|): what relative limits are multiplied by
    cosine: float  # per-image cosine similarity, averaged over images
    snr_db: float  # reference power over error power, all images together; inf when identical

    @property
    def relative_diff(self) -> float:
        """max_abs_diff relative to the reference's magnitude (at least 1, so near-zero outputs are not blown up)."""
        return self.max_abs_diff / self.scale


def _per_image(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a.reshape(len(a), -1) if a.ndim else a.reshape(1, 1)


def output_agreement(reference, output) -> Agreement:
    """Agreement figures of one output; the first axis of both arrays is the image.

    Pass/fail limits are the caller's: compile verification, bench's emulated check
    and quantize's fidelity report each judge these numbers by their own rule.
    """
    ref, out = _per_image(reference), _per_image(output)
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape[1:]} differs from the reference's {ref.shape[1:]}")
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref ** 2))
    snr = float("inf") if noise == 0 else float(10 * np.log10(max(signal, 1e-30) / noise))
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    dots = np.sum(ref * out, axis=1)
    # Two all-zero vectors agree perfectly; an all-zero vector against a non-zero one does not.
    cos = np.where(norms > 0, dots / np.maximum(norms, 1e-30), np.where(np.any(ref != out, axis=1), 0.0, 1.0))
    return Agreement(max_abs_diff=float(np.max(np.abs(ref - out))), scale=max(1.0, float(np.max(np.abs(ref)))),
                     cosine=float(np.mean(cos)), snr_db=snr)
