"""YOLOv2-style region targets, loss and anchors for the YOLO-Lite family.

Anchors and boxes are measured in grid cells. Targets are laid out per cell and
anchor as [tx, ty, tw, th, objectness, class, area, ignore]: tx/ty the centre
offset inside the cell, tw/th the log ratio to the anchor, area the box's share
of the image (small boxes weigh more in the coordinate loss, as in YOLOv2), and
ignore = 1 for anchors that are not responsible for an object but whose prior
box overlaps one well (YOLOv2's ignore threshold, taken on the priors so it can
be precomputed): they are not pushed towards "no object".
"""

from __future__ import annotations

import numpy as np

TARGET_CHANNELS = 8
IGNORE_IOU = 0.5


def kmeans_anchors(wh: np.ndarray, k: int, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """YOLOv2's anchor clustering: k-means on box (w, h) with 1 - IoU as the distance."""
    if len(wh) < k:
        raise ValueError(f"need at least {k} boxes to cluster {k} anchors, got {len(wh)}")
    rng = np.random.default_rng(seed)
    centers = wh[rng.choice(len(wh), k, replace=False)].copy()
    for _ in range(iterations):
        assign = _wh_iou(wh, centers).argmax(1)
        new = np.array([wh[assign == i].mean(0) if np.any(assign == i) else centers[i] for i in range(k)])
        if np.allclose(new, centers):
            break
        centers = new
    return centers[np.argsort(centers.prod(1))].astype(np.float32)


def _wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of boxes and anchors sharing one centre: (N, 2) x (A, 2) -> (N, A)."""
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = wh[:, None].prod(-1) + anchors[None].prod(-1) - inter
    return inter / union


def encode_targets(boxes: np.ndarray, labels: np.ndarray, anchors: np.ndarray, grid: tuple[int, int],
                   input_size: tuple[int, int]) -> np.ndarray:
    """One image's boxes (xyxy, input pixels) -> target (S, S, A, 8)."""
    rows, cols = grid
    ih, iw = input_size
    target = np.zeros((rows, cols, len(anchors), TARGET_CHANNELS), np.float32)
    if len(boxes) == 0:
        return target
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 / iw * cols
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 / ih * rows
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1) / iw * cols
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1) / ih * rows
    best = _wh_iou(np.stack([w, h], 1), anchors).argmax(1)
    for k in range(len(boxes)):
        j = min(int(cx[k]), cols - 1)
        i = min(int(cy[k]), rows - 1)
        a = best[k]
        target[i, j, a] = [cx[k] - j, cy[k] - i, np.log(w[k] / anchors[a, 0]), np.log(h[k] / anchors[a, 1]),
                           1.0, labels[k], w[k] * h[k] / (rows * cols), 0.0]
    # IoU of every anchor prior (centred in its cell) with every box, all in grid units.
    gy, gx = np.meshgrid(np.arange(rows) + 0.5, np.arange(cols) + 0.5, indexing="ij")
    px1 = gx[..., None] - anchors[:, 0] / 2
    py1 = gy[..., None] - anchors[:, 1] / 2
    px2, py2 = px1 + anchors[:, 0], py1 + anchors[:, 1]
    bx1, by1, bx2, by2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    iw_ = np.clip(np.minimum(px2[..., None], bx2) - np.maximum(px1[..., None], bx1), 0, None)
    ih_ = np.clip(np.minimum(py2[..., None], by2) - np.maximum(py1[..., None], by1), 0, None)
    inter = iw_ * ih_
    iou = inter / ((anchors[:, 0] * anchors[:, 1])[:, None] + w * h - inter)
    target[..., 7] = (iou.max(-1) > IGNORE_IOU) & (target[..., 4] == 0)
    return target


def make_yolo_loss(num_anchors: int, num_classes: int, noobj_weight: float = 0.5, coord_weight: float = 2.0):
    """A Keras loss(y_true (B,S,S,A,8), y_pred (B,S,S,A*(5+C))) summed per image, averaged over the batch."""
    import tensorflow as tf

    def yolo_loss(y_true, y_pred):
        shape = tf.shape(y_pred)
        p = tf.reshape(y_pred, [shape[0], shape[1], shape[2], num_anchors, 5 + num_classes])
        y_true = tf.reshape(y_true, [shape[0], shape[1], shape[2], num_anchors, TARGET_CHANNELS])
        obj = y_true[..., 4]
        size_w = 2.0 - y_true[..., 6]
        xy = tf.reduce_sum(tf.square(tf.sigmoid(p[..., 0:2]) - y_true[..., 0:2]), -1)
        wh = tf.reduce_sum(tf.square(p[..., 2:4] - y_true[..., 2:4]), -1)
        coord = coord_weight * tf.reduce_sum(obj * size_w * (xy + wh), [1, 2, 3])
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=obj, logits=p[..., 4])
        noobj = (1.0 - obj) * (1.0 - y_true[..., 7])
        objectness = tf.reduce_sum(obj * bce + noobj_weight * noobj * bce, [1, 2, 3])
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y_true[..., 5], tf.int32),
                                                            logits=p[..., 5:])
        cls = tf.reduce_sum(obj * ce, [1, 2, 3])
        return coord + objectness + cls

    return yolo_loss
