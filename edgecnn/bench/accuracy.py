"""Accuracy metrics: top-k for classifiers, COCO mAP for detectors.

mAP comes from faster-coco-eval (a maintained, C++-backed COCOeval); edgecnn
only converts its detections into COCO results.
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable, Iterable

import numpy as np

from edgecnn.data.dataset import ClassificationDataset, DetectionDataset
from edgecnn.runner.postprocess import Detections


def topk_accuracy(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """top-1 and top-5 (top-k capped at the number of classes) from (N, C) scores."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("no samples to score")
    order = np.argsort(-scores, axis=1)
    top1 = float(np.mean(order[:, 0] == labels))
    k = min(5, scores.shape[1])
    top5 = float(np.mean((order[:, :k] == labels[:, None]).any(axis=1)))
    return {"metric": "top1", "top1": top1, "top5": top5}


def coco_results(dataset: DetectionDataset, detections: Iterable[Detections]) -> list[dict]:
    """COCO result dicts (image_id, category_id = label + 1, xywh bbox, score); detections in
    original-image pixels, one per sample. JSON-ready: the board sends these when it cannot score."""
    results = []
    for sample, det in zip(dataset.samples, detections, strict=True):
        for box, score, label in zip(det.boxes, det.scores, det.labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({"image_id": sample.image_id, "category_id": int(label) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return results


def coco_map_from_results(dataset: DetectionDataset, results: list[dict]) -> dict[str, float]:
    """COCO mAP@0.5:0.95 and mAP@0.5 of COCO result dicts (see coco_results) against the data set."""
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


def evaluate_detector(predict: Callable[[np.ndarray], np.ndarray], dataset: DetectionDataset, preprocess,
                      postprocess: Callable[[np.ndarray], Detections], batch_size: int = 32) -> dict[str, float]:
    """Run `predict` (batch -> raw head outputs) and `postprocess` (one raw -> Detections) over a data set."""
    all_dets: list[Detections] = []
    for start in range(0, len(dataset), batch_size):
        chunk = dataset.samples[start:start + batch_size]
        prepared = [preprocess(s.path) for s in chunk]
        raw = np.asarray(predict(np.concatenate([b for b, _ in prepared])))
        for (_, transform), out in zip(prepared, raw):
            det = postprocess(out)
            boxes = transform.boxes_to_original(det.boxes) if len(det) else det.boxes
            all_dets.append(Detections(np.asarray(boxes, np.float32), det.scores, det.labels))
    return coco_map(dataset, all_dets)


def evaluate(predict: Callable[[np.ndarray], np.ndarray], metadata: dict,
             dataset: ClassificationDataset | DetectionDataset, batch_size: int = 32) -> dict[str, float]:
    """Accuracy of any runnable model on a data set, given its data contract.

    `metadata` carries what deployment carries too: "preprocessing" (a
    Preprocessing dict), "classes", and for detectors "head" (anchors, grid).
    """
    from edgecnn.data.preprocess import Preprocessing

    prep = Preprocessing.from_dict(metadata["preprocessing"])
    if isinstance(dataset, ClassificationDataset):
        return evaluate_classifier(predict, dataset, prep, batch_size)
    from edgecnn.runner.postprocess import postprocess_yolo

    anchors, num_classes = metadata["head"]["anchors"], len(metadata["classes"])
    size = tuple(metadata["preprocessing"]["size"])
    return evaluate_detector(predict, dataset, prep, lambda raw: postprocess_yolo(raw, anchors, num_classes, size),
                             batch_size)
