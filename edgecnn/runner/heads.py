"""Detection heads as data: what a detector's raw outputs mean, and their decode in numpy.

A head is a JSON object (the sidecar's or manifest's "head", or `--head`); its "type" says how to
read the outputs:

- "yolo_region": YOLOv2 anchors (edgecnn's demo YOLO-Lite). One output (S, S, A*(5+C)); "anchors"
  [[w, h], ...] in grid cells. A head with anchors and no type is this one.
- "yolo": anchor-free YOLOv5/v8-style outputs, the format most YOLO ONNX exports have. One output
  [4+C, N] (v8, channels first) or [N, 4(+1)+C] (v5); "box": "xywh" (centre, size; default) or
  "xyxy"; "objectness": true for v5's extra score column (default: false, v8); "normalized": true when
  boxes are in 0..1 of the input (default: model-input pixels). Class scores are probabilities.
  The orientation is read off the shape with the class count; a square ambiguity is an error.
- "ssd": SSD anchors as MediaPipe generates them (BlazeFace, palm detection). Two outputs: box
  regressors [N, num_coords] and scores [N, C]; anchors from the SSD anchor options ("num_layers",
  "strides", "min_scale", "max_scale", "aspect_ratios", "anchor_offset",
  "interpolated_scale_aspect_ratio", "reduce_boxes_in_lowest_layer", "fixed_anchor_size"), boxes
  decoded against them with "box_scale" (or "x_scale", "y_scale", "w_scale", "h_scale"; default the
  input size) in "box_order" "xywh" (MediaPipe's reverse_output_order) or "yxhw"; keypoints, the
  coordinates past the first four, are ignored; scores through a sigmoid unless "sigmoid_score" is false.

`head_spec` checks a head and fills its defaults (intake calls it, so a wrong head fails before any
work); `candidates` decodes one image's outputs into boxes before NMS. Which head a model has comes
from its metadata or the user, never from guessing at output shapes.
Numpy only: this runs on the board.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from edgecnn.errors import ModelError

HEAD_TYPES = ("yolo_region", "yolo", "ssd")
# Names other tools use for the same heads.
_ALIASES = {"ultralytics": "yolo", "yolov8": "yolo", "yolov5": "yolo", "anchor_free": "yolo",
            "blazeface": "ssd", "mediapipe": "ssd", "yolov2": "yolo_region", "region": "yolo_region"}
_SSD_DEFAULTS = {"min_scale": 0.1484375, "max_scale": 0.75, "aspect_ratios": [1.0], "anchor_offset": 0.5,
                 "interpolated_scale_aspect_ratio": 1.0, "reduce_boxes_in_lowest_layer": False,
                 "fixed_anchor_size": False, "box_order": "xywh", "sigmoid_score": True, "score_clip": 100.0}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free form of 1 / (1 + exp(-x))


def _flag(head: dict, key: str, default: bool, what: str) -> bool:
    value = head.get(key, default)
    if not isinstance(value, bool):
        raise ModelError(f"{what}: head.{key} must be true or false, got {value!r}")
    return value


def _number(head: dict, key: str, what: str, positive: bool = True) -> float:
    value = head[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0):
        raise ModelError(f"{what}: head.{key} must be a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


def head_spec(head: dict | None, what: str = "head") -> dict | None:
    """The head with its type made explicit and checked, defaults filled; ModelError naming `what` otherwise."""
    if head is None:
        return None
    if not isinstance(head, dict):
        raise ModelError(f"{what}: head must be an object, got {head!r}")
    given = str(head.get("type") or ("yolo_region" if head.get("anchors") else "")).lower()
    kind = _ALIASES.get(given, given)
    if kind not in HEAD_TYPES:
        raise ModelError(f"{what}: head type {head.get('type')!r} is not known; choose from "
                         f"{', '.join(HEAD_TYPES)} (README, 'Detection heads'), or bench it with --task generic "
                         "(latency and fidelity, no mAP)" if given else
                         f"{what}: the head has no type; give one of {', '.join(HEAD_TYPES)}")
    spec: dict[str, Any] = {**head, "type": kind}
    if kind == "yolo_region":
        anchors = head.get("anchors")
        if not (isinstance(anchors, list) and anchors and all(
                isinstance(a, list) and len(a) == 2 and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in a) for a in anchors)):
            raise ModelError(f"{what}: a yolo_region head needs anchors, a list of [w, h] pairs of positive numbers")
    elif kind == "yolo":
        if given == "yolov5":
            spec.setdefault("objectness", True)
        box = str(spec.setdefault("box", "xywh")).lower()
        if box not in ("xywh", "xyxy"):
            raise ModelError(f"{what}: head.box must be xywh or xyxy, got {head.get('box')!r}")
        spec["box"] = box
        for key in ("objectness", "normalized"):
            spec[key] = _flag(spec, key, False, what)
    else:
        spec = {**_SSD_DEFAULTS, **spec}
        strides = spec.get("strides")
        if not (isinstance(strides, list) and strides and all(isinstance(s, int) and s > 0 for s in strides)):
            raise ModelError(f"{what}: an ssd head needs strides, the feature-map stride of each anchor layer "
                             "(BlazeFace short range: [8, 16, 16, 16])")
        spec.setdefault("num_layers", len(strides))
        if spec["num_layers"] != len(strides):
            raise ModelError(f"{what}: head.num_layers {spec['num_layers']} but {len(strides)} strides")
        for key in ("min_scale", "max_scale", "anchor_offset", "interpolated_scale_aspect_ratio", "score_clip"):
            _number(spec, key, what, positive=key not in ("anchor_offset", "interpolated_scale_aspect_ratio"))
        ratios = spec["aspect_ratios"]
        if not (isinstance(ratios, list) and ratios and all(
                isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in ratios)):
            raise ModelError(f"{what}: head.aspect_ratios must be a list of positive numbers")
        for key in ("reduce_boxes_in_lowest_layer", "fixed_anchor_size", "sigmoid_score"):
            spec[key] = _flag(spec, key, bool(_SSD_DEFAULTS[key]), what)
        if str(spec["box_order"]).lower() not in ("xywh", "yxhw"):
            raise ModelError(f"{what}: head.box_order must be xywh or yxhw, got {spec['box_order']!r}")
        for key in ("box_scale", "x_scale", "y_scale", "w_scale", "h_scale"):
            if key in spec:
                _number(spec, key, what)
    return spec


def ssd_anchors(spec: dict, input_size: tuple[int, int]) -> np.ndarray:
    """(N, 4) anchors [x_centre, y_centre, w, h] in 0..1 of the input, in the order the model's outputs use.

    The SSD anchor generation of MediaPipe's SsdAnchorsCalculator: layers with the same stride share one
    feature map; each layer adds one anchor per aspect ratio at its scale, plus one at the geometric mean of
    its scale and the next layer's (interpolated_scale_aspect_ratio); scales run linearly from min_scale to
    max_scale over the layers.
    """
    layers, strides = int(spec["num_layers"]), spec["strides"]
    lo, hi = spec["min_scale"], spec["max_scale"]

    def scale(index: int) -> float:
        return (lo + hi) / 2 if layers == 1 else lo + (hi - lo) * index / (layers - 1)

    height, width = input_size
    out: list[np.ndarray] = []
    layer = 0
    while layer < layers:
        scales, ratios = [], []
        last = layer
        while last < layers and strides[last] == strides[layer]:
            s = scale(last)
            if last == 0 and spec["reduce_boxes_in_lowest_layer"]:
                scales += [0.1, s, s]
                ratios += [1.0, 2.0, 0.5]
            else:
                for r in spec["aspect_ratios"]:
                    scales.append(s)
                    ratios.append(float(r))
                if spec["interpolated_scale_aspect_ratio"] > 0:
                    following = 1.0 if last == layers - 1 else scale(last + 1)
                    scales.append(math.sqrt(s * following))
                    ratios.append(float(spec["interpolated_scale_aspect_ratio"]))
            last += 1
        sizes = np.array([[s * math.sqrt(r), s / math.sqrt(r)] for s, r in zip(scales, ratios)], np.float32)
        if spec["fixed_anchor_size"]:
            sizes[:] = 1.0
        rows, cols = math.ceil(height / strides[layer]), math.ceil(width / strides[layer])
        gy, gx = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
        offset = float(spec["anchor_offset"])
        centres = np.stack([(gx + offset) / cols, (gy + offset) / rows], -1).reshape(-1, 1, 2)
        cells = np.concatenate([np.broadcast_to(centres, (len(centres), len(sizes), 2)),
                                np.broadcast_to(sizes, (len(centres), len(sizes), 2))], -1)
        out.append(cells.reshape(-1, 4))
        layer = last
    return np.concatenate(out).astype(np.float32)


def _yolo_region(outputs: Sequence[np.ndarray], spec: dict, num_classes: int | None,
                 input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    anchors = np.asarray(spec["anchors"], np.float32)
    raw = np.asarray(outputs[0], np.float32)
    if raw.ndim != 3:
        raise ModelError(f"a yolo_region head takes one (S, S, A*(5+C)) output, got shape {raw.shape}")
    rows, cols = raw.shape[:2]
    a = len(anchors)
    count = num_classes if num_classes is not None else raw.shape[-1] // a - 5
    if raw.shape[-1] != a * (5 + count):
        raise ModelError(f"head has {raw.shape[-1]} channels, expected {a} x (5 + {count})")
    p = raw.reshape(rows, cols, a, 5 + count)
    gy, gx = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
    cx = (_sigmoid(p[..., 0]) + gx[..., None]) / cols
    cy = (_sigmoid(p[..., 1]) + gy[..., None]) / rows
    w = anchors[:, 0] * np.exp(np.minimum(p[..., 2], 8.0)) / cols
    h = anchors[:, 1] * np.exp(np.minimum(p[..., 3], 8.0)) / rows
    logits = p[..., 5:]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ih, iw = input_size
    boxes = np.stack([(cx - w / 2) * iw, (cy - h / 2) * ih, (cx + w / 2) * iw, (cy + h / 2) * ih], -1)
    return boxes.reshape(-1, 4), (_sigmoid(p[..., 4])[..., None] * probs).reshape(-1, count), np.zeros(0)


def _anchor_free(outputs: Sequence[np.ndarray], spec: dict, num_classes: int | None,
                 input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    raw = np.squeeze(np.asarray(outputs[0], np.float32))
    if raw.ndim != 2:
        raise ModelError(f"a yolo head takes one [4+C, N] or [N, 4+C] output, got shape {np.shape(outputs[0])}")
    extra = 5 if spec["objectness"] else 4
    if num_classes is not None:
        width = extra + num_classes
        fits = [axis for axis in (0, 1) if raw.shape[axis] == width]
        if not fits:
            raise ModelError(f"a yolo head with {num_classes} classes{' and objectness' if extra == 5 else ''} "
                             f"has {width} values per box, but the output is {list(raw.shape)}")
        if len(fits) == 2:
            raise ModelError(f"the output {list(raw.shape)} is square: cannot tell boxes from values")
        rows = raw.T if fits[0] == 0 else raw
    else:  # the box axis is the long one (thousands of boxes, a few values each)
        rows = raw.T if raw.shape[0] < raw.shape[1] else raw
        if rows.shape[1] <= extra:
            raise ModelError(f"a yolo head output {list(raw.shape)} has no class scores")
    coords = rows[:, :4]
    if spec["box"] == "xywh":
        coords = np.concatenate([coords[:, :2] - coords[:, 2:] / 2, coords[:, :2] + coords[:, 2:] / 2], 1)
    if spec["normalized"]:
        ih, iw = input_size
        coords = coords * np.array([iw, ih, iw, ih], np.float32)
    scores = rows[:, extra:]
    if extra == 5:
        scores = scores * rows[:, 4:5]
    return coords, scores, np.zeros(0)


def _ssd(outputs: Sequence[np.ndarray], spec: dict, num_classes: int | None,
         input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    anchors = ssd_anchors(spec, input_size)
    arrays = [np.asarray(o, np.float32).reshape(-1, np.shape(o)[-1]) for o in outputs]
    n = len(anchors)
    if len(arrays) != 2 or any(len(a) != n for a in arrays):
        shapes = [list(np.shape(o)) for o in outputs]
        raise ModelError(f"an ssd head takes two outputs over {n} anchors (box regressors [N, 4+], scores "
                         f"[N, C]), got {shapes}: check strides, num_layers and the input size")
    # The box output has at least 4 coordinates per anchor; the score output has one value per class.
    widths = [a.shape[1] for a in arrays]
    coords_width = spec.get("num_coords")
    if coords_width in widths and widths.count(coords_width) == 1:
        box_index = widths.index(coords_width)
    elif num_classes is not None and widths.count(num_classes) == 1 and max(widths) >= 4:
        box_index = 1 - widths.index(num_classes)
    else:
        box_index = int(np.argmax(widths))
        if widths[0] == widths[1]:
            raise ModelError(f"an ssd head's two outputs both have {widths[0]} values per anchor: set "
                             "head.num_coords to tell the box regressors from the scores")
    raw, logits = arrays[box_index], arrays[1 - box_index]
    ih, iw = input_size
    if str(spec["box_order"]).lower() == "xywh":
        x, y, w, h = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3]
    else:
        y, x, h, w = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3]
    base = spec.get("box_scale")
    sx = spec.get("x_scale", base or iw)
    sy = spec.get("y_scale", base or ih)
    sw = spec.get("w_scale", base or iw)
    sh = spec.get("h_scale", base or ih)
    cx = x / sx * anchors[:, 2] + anchors[:, 0]
    cy = y / sy * anchors[:, 3] + anchors[:, 1]
    bw = w / sw * anchors[:, 2]
    bh = h / sh * anchors[:, 3]
    boxes = np.stack([(cx - bw / 2) * iw, (cy - bh / 2) * ih, (cx + bw / 2) * iw, (cy + bh / 2) * ih], -1)
    if spec["sigmoid_score"]:
        clip = float(spec["score_clip"])
        logits = _sigmoid(np.clip(logits, -clip, clip))
    return boxes, logits, np.zeros(0)


_DECODERS = {"yolo_region": _yolo_region, "yolo": _anchor_free, "ssd": _ssd}


def candidates(outputs: Sequence[np.ndarray], spec: dict, num_classes: int | None, input_size: tuple[int, int],
               conf_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's outputs (batch axis removed) -> (boxes xyxy in model-input pixels, scores, labels), one
    candidate per box with its best class, kept when its score reaches the threshold; clipped to the input."""
    boxes, scores, _ = _DECODERS[spec["type"]](outputs, spec, num_classes, input_size)
    if num_classes is not None and scores.shape[1] != num_classes:
        raise ModelError(f"the {spec['type']} head gives {scores.shape[1]} class scores, but the model has "
                         f"{num_classes} classes")
    labels = scores.argmax(1)
    best = scores[np.arange(len(scores)), labels]
    keep = best >= conf_threshold
    ih, iw = input_size
    boxes = np.clip(boxes[keep], 0, [iw, ih, iw, ih]).astype(np.float32)
    return boxes, best[keep].astype(np.float32), labels[keep].astype(np.int64)
