"""Check a quantized model against its float reference on held-out images.

Accuracy goes through the same evaluate_* functions as every other stage
(top-1 for classifiers, COCO mAP for detectors); output fidelity is per-output
SNR and cosine similarity between the raw float and int8 outputs on the same
images. One pass per model produces both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgecnn.bench.accuracy import evaluate_classifier, evaluate_detector
from edgecnn.data.dataset import Task

Predict = Callable[[np.ndarray], list[np.ndarray]]


@dataclass
class Evaluation:
    """What one model did on the validation images: accuracy (None without labels) and raw outputs."""

    accuracy: dict | None
    outputs: list[np.ndarray]


def primary_metric(task: str) -> str:
    return "top1" if task == Task.CLASSIFICATION else "map50_95"


def evaluate(predict: Predict, source, dataset=None, images: np.ndarray | None = None,
             batch_size: int = 32) -> Evaluation:
    """Run `predict` over a labelled data set (accuracy + outputs) or bare preprocessed images (outputs)."""
    recorded: list[list[np.ndarray]] = []

    def first_output(batch: np.ndarray) -> np.ndarray:
        outs = predict(batch)
        recorded.append(outs)
        return outs[0]

    accuracy = None
    if dataset is not None:
        prep = source.preprocessing
        if source.task == Task.CLASSIFICATION:
            accuracy = evaluate_classifier(first_output, dataset, prep, batch_size)
        else:
            accuracy = evaluate_detector(first_output, dataset, prep, _decoder(source), batch_size)
    else:
        for start in range(0, len(images), batch_size):
            first_output(images[start:start + batch_size])
    outputs = [np.concatenate([r[k] for r in recorded]) for k in range(len(recorded[0]))]
    return Evaluation(accuracy, outputs)


def _decoder(source):
    from edgecnn.runner.postprocess import postprocess_yolo

    anchors = source.head["anchors"]
    size = tuple(source.preprocessing.size)

    def decode(raw: np.ndarray):
        classes = source.num_classes or raw.shape[-1] // len(anchors) - 5
        return postprocess_yolo(raw, anchors, classes, size)

    return decode


def fidelity(reference: list[np.ndarray], quantized: list[np.ndarray], names: list[str]) -> list[dict]:
    """Per output: SNR in dB over all images, and the mean per-image cosine similarity."""
    result = []
    for name, ref, q in zip(names, reference, quantized, strict=True):
        ref = ref.reshape(len(ref), -1).astype(np.float64)
        q = q.reshape(len(q), -1).astype(np.float64)
        noise = float(np.sum((ref - q) ** 2))
        signal = float(np.sum(ref ** 2))
        snr = float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(q, axis=1)
        dots = np.sum(ref * q, axis=1)
        # Two all-zero vectors agree perfectly; one all-zero vector against another does not.
        cos = np.where(norms > 0, dots / np.maximum(norms, 1e-30), np.where(np.any(ref != q, axis=1), 0.0, 1.0))
        result.append({"name": name, "snr_db": round(snr, 2), "cosine": round(float(np.mean(cos)), 5)})
    return result


def accuracy_drop(task: str, fp32: dict | None, int8: dict | None) -> float | None:
    """Drop of the primary metric in percentage points (positive = int8 is worse)."""
    if fp32 is None or int8 is None:
        return None
    key = primary_metric(task)
    return round((fp32[key] - int8[key]) * 100, 3)


def describe_accuracy(task: str, acc: dict | None) -> str:
    """'top-1 93.20%' or 'mAP@0.5:0.95 41.0, mAP@0.5 66.1' (points) for messages and tables."""
    if acc is None:
        return "not measured"
    if task == Task.CLASSIFICATION:
        return f"top-1 {acc['top1'] * 100:.2f}%"
    return f"mAP@0.5:0.95 {acc['map50_95'] * 100:.2f}, mAP@0.5 {acc['map50'] * 100:.2f}"
