"""Check a quantized model against its float reference on held-out images.

Accuracy goes through the same evaluate_* functions as every other stage
(top-1 for classifiers, COCO mAP for detectors; edgecnn.runner.metrics); output
fidelity is per-output SNR and cosine similarity between the raw float and int8
outputs on the same images. One pass per model produces both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgecnn.kinds import Task
from edgecnn.runner.metrics import evaluate_classifier, evaluate_detector, output_agreement
from edgecnn.runner.postprocess import decoder

Predict = Callable[[np.ndarray], list[np.ndarray]]


@dataclass
class Evaluation:
    """What one model did on the validation images: accuracy (None without labels) and raw outputs."""

    accuracy: dict | None
    outputs: list[np.ndarray]


def evaluate(predict: Predict, source, dataset=None, images: np.ndarray | None = None,
             batch_size: int = 32) -> Evaluation:
    """Run `predict` over a labelled data set (accuracy + outputs) or bare preprocessed images (outputs)."""
    recorded: list[list[np.ndarray]] = []

    def all_outputs(batch: np.ndarray) -> list[np.ndarray]:
        outs = predict(batch)
        recorded.append(outs)
        return outs

    def first_output(batch: np.ndarray) -> np.ndarray:
        return all_outputs(batch)[0]

    accuracy = None
    if dataset is not None:
        prep = source.preprocessing
        if source.task == Task.CLASSIFICATION:
            accuracy = evaluate_classifier(first_output, dataset, prep, batch_size)
        else:
            accuracy = evaluate_detector(all_outputs, dataset, prep, decoder(source.metadata(), source.ref),
                                         batch_size, source.classes)
    else:
        for start in range(0, len(images), batch_size):
            first_output(images[start:start + batch_size])
    outputs = [np.concatenate([r[k] for r in recorded]) for k in range(len(recorded[0]))]
    return Evaluation(accuracy, outputs)


def fidelity(reference: list[np.ndarray], quantized: list[np.ndarray], names: list[str]) -> list[dict]:
    """Per output: SNR in dB over all images, and the mean per-image cosine similarity."""
    result = []
    for name, ref, q in zip(names, reference, quantized, strict=True):
        fig = output_agreement(ref, q)
        result.append({"name": name, "snr_db": round(fig.snr_db, 2), "cosine": round(fig.cosine, 5)})
    return result
