"""Detector post-processing in numpy only: YOLOv2 region decode and NMS.

This runs on the board (the runner never imports TensorFlow), so it sticks to
numpy. Head layout (see edgecnn.zoo.yolo_lite): raw tensor (S, S, A*(5+C)),
per anchor [tx, ty, tw, th, objectness logit, class logits...]; anchors are
(w, h) in grid-cell units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgecnn.errors import ModelError


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (N, 4) float32 xyxy, in model-input pixels
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.scores)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free form of 1 / (1 + exp(-x))


def decode_yolo(raw: np.ndarray, anchors: np.ndarray, num_classes: int, input_size: tuple[int, int],
                conf_threshold: float = 0.005) -> Detections:
    """Turn one image's raw head output into candidate boxes (before NMS).

    Score = sigmoid(objectness) * softmax(class logits); one candidate per
    (cell, anchor), with its best class, kept when the score reaches the threshold.
    """
    anchors = np.asarray(anchors, np.float32)
    rows, cols = raw.shape[:2]
    a = len(anchors)
    if raw.shape[-1] != a * (5 + num_classes):
        raise ValueError(f"head has {raw.shape[-1]} channels, expected {a} x (5 + {num_classes})")
    p = raw.reshape(rows, cols, a, 5 + num_classes).astype(np.float32)
    gy, gx = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
    cx = (_sigmoid(p[..., 0]) + gx[..., None]) / cols
    cy = (_sigmoid(p[..., 1]) + gy[..., None]) / rows
    w = anchors[:, 0] * np.exp(np.minimum(p[..., 2], 8.0)) / cols
    h = anchors[:, 1] * np.exp(np.minimum(p[..., 3], 8.0)) / rows
    logits = p[..., 5:]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    labels = probs.argmax(-1)
    scores = _sigmoid(p[..., 4]) * probs.max(-1)
    keep = scores >= conf_threshold
    ih, iw = input_size
    boxes = np.stack([(cx - w / 2) * iw, (cy - h / 2) * ih, (cx + w / 2) * iw, (cy + h / 2) * ih], -1)
    boxes = np.clip(boxes[keep], 0, [iw, ih, iw, ih])
    return Detections(boxes.astype(np.float32), scores[keep].astype(np.float32), labels[keep].astype(np.int64))


def nms(dets: Detections, iou_threshold: float = 0.45, max_detections: int = 100) -> Detections:
    """Greedy per-class non-maximum suppression, best scores first."""
    if len(dets) == 0:
        return dets
    # Offsetting each class into its own region makes one pass per-class.
    offset = dets.labels[:, None].astype(np.float32) * (dets.boxes.max() + 1.0)
    boxes = dets.boxes + offset
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-dets.scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_detections:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    idx = np.array(keep, np.int64)
    return Detections(dets.boxes[idx], dets.scores[idx], dets.labels[idx])


def postprocess_yolo(raw: np.ndarray, anchors, num_classes: int, input_size: tuple[int, int],
                     conf_threshold: float = 0.005, iou_threshold: float = 0.45,
                     max_detections: int = 100) -> Detections:
    """decode_yolo then nms: the detector's whole post-processing for one image."""
    return nms(decode_yolo(raw, anchors, num_classes, input_size, conf_threshold), iou_threshold, max_detections)


def decoder(metadata: dict, what: str = "metadata") -> Callable[[np.ndarray], Detections]:
    """The decode of one image's raw head output that a model's data contract describes.

    `metadata` has the manifest's shape (a bundle's manifest dict, or a source
    model's sidecar): "task", "head" (anchors), "classes", "preprocessing" (its
    "size" is the model-input size boxes are scaled to) and, optionally,
    "postprocess" ({"kind": "yolo_region", conf/iou thresholds, max_detections}).
    Without class names the class count is read off the head's channels.
    `what` names the metadata in error messages.
    """
    task = metadata.get("task") or "detection"
    if task != "detection":
        raise ModelError(f"{what}: task {task!r} has no detector decode")
    anchors = (metadata.get("head") or {}).get("anchors")
    if not anchors:
        raise ModelError(f"{what}: a detector needs head.anchors to decode its output")
    post = dict(metadata.get("postprocess") or {})
    kind = post.pop("kind", "yolo_region")
    if kind != "yolo_region":
        raise ModelError(f"{what}: postprocess kind {kind!r} is not supported (yolo_region)")
    size = tuple(metadata["preprocessing"]["size"])
    classes = metadata.get("classes")
    num_classes = len(classes) if classes else None

    def decode(raw: np.ndarray) -> Detections:
        count = num_classes or raw.shape[-1] // len(anchors) - 5
        return postprocess_yolo(raw, anchors, count, size, **post)

    return decode
