"""Detector post-processing in numpy only: a head's decode (edgecnn.runner.heads), then per-class NMS.

This runs on the board (the runner never imports TensorFlow), so it sticks to
numpy. The demo YOLO-Lite's head (edgecnn.zoo.yolo_lite) is a yolo_region head:
raw tensor (S, S, A*(5+C)), per anchor [tx, ty, tw, th, objectness logit, class
logits...]; anchors are (w, h) in grid-cell units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edgecnn.errors import ModelError
from edgecnn.runner.heads import candidates, head_spec


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (N, 4) float32 xyxy, in model-input pixels
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.scores)


def decode_yolo(raw: np.ndarray, anchors: np.ndarray, num_classes: int, input_size: tuple[int, int],
                conf_threshold: float = 0.005) -> Detections:
    """Candidate boxes (before NMS) of one image's YOLOv2-region output (S, S, A*(5+C)).

    Score = sigmoid(objectness) * softmax(class logits); one candidate per
    (cell, anchor), with its best class, kept when the score reaches the threshold.
    """
    spec = {"type": "yolo_region", "anchors": np.asarray(anchors, np.float32).tolist()}
    try:
        return Detections(*candidates([raw], spec, num_classes, input_size, conf_threshold))
    except ModelError as e:
        raise ValueError(str(e)) from None


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


def decoder(metadata: dict, what: str = "metadata") -> Callable[[Sequence[np.ndarray] | np.ndarray], Detections]:
    """The decode of one image's raw outputs that a model's data contract describes (edgecnn.runner.heads).

    `metadata` has the manifest's shape (a bundle's manifest dict, or a source
    model's sidecar): "task", "head" (its "type" and options), "classes",
    "preprocessing" (its "size" is the model-input size boxes are scaled to) and,
    optionally, "postprocess" ({conf_threshold, iou_threshold, max_detections}).
    Without class names the class count is read off the outputs. The returned
    function takes the image's outputs (a list, batch axis removed; or one array
    for a single-output model) and gives boxes in model-input pixels after NMS.
    `what` names the metadata in error messages.
    """
    task = metadata.get("task") or "detection"
    if task != "detection":
        raise ModelError(f"{what}: task {task!r} has no detector decode")
    if not metadata.get("head"):
        raise ModelError(f"{what}: a detector needs a head (README, 'Detection heads') to decode its output")
    spec = head_spec(metadata["head"], what)
    post = dict(metadata.get("postprocess") or {})
    post.pop("kind", None)  # older manifests: {"kind": "yolo_region", ...}; the head says it now
    unknown = set(post) - {"conf_threshold", "iou_threshold", "max_detections"}
    if unknown:
        raise ModelError(f"{what}: unknown postprocess option(s) {sorted(unknown)}")
    conf = post.pop("conf_threshold", 0.005)
    size = tuple(metadata["preprocessing"]["size"])
    classes = metadata.get("classes")
    num_classes = len(classes) if classes else None

    def decode(outputs) -> Detections:
        outputs = [outputs] if isinstance(outputs, np.ndarray) else list(outputs)
        return nms(Detections(*candidates(outputs, spec, num_classes, size, conf)), **post)

    return decode
