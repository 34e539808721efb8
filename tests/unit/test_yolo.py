"""YOLO targets, decode, NMS and COCO mAP agree with each other; augmentation moves boxes with pixels."""

import numpy as np
import pytest

from edgecnn.runner.metrics import coco_map, topk_accuracy
from edgecnn.data.dataset import DetectionDataset, DetectionSample
from edgecnn.runner.postprocess import Detections, decode_yolo, nms, postprocess_yolo
from edgecnn.train.fit import _augment
from edgecnn.train.yolo import encode_targets, kmeans_anchors

ANCHORS = np.array([[0.8, 0.9], [1.7, 2.2], [2.7, 4.4], [5.1, 2.6], [6.0, 5.4]], np.float32)
BOXES = np.array([[10, 20, 60, 90], [100, 100, 200, 150], [150, 10, 180, 40]], np.float32)
LABELS = np.array([0, 3, 1])


def raw_from_targets(target: np.ndarray, num_classes: int) -> np.ndarray:
    """The head output a perfect detector would produce for these targets."""
    rows, cols, a, _ = target.shape
    raw = np.zeros((rows, cols, a, 5 + num_classes), np.float32)
    t = np.clip(target[..., :2], 1e-4, 1 - 1e-4)
    raw[..., :2] = np.log(t / (1 - t))
    raw[..., 2:4] = target[..., 2:4]
    raw[..., 4] = np.where(target[..., 4] > 0, 12.0, -12.0)
    raw[..., 5:] = -12.0
    for i, j, k in zip(*np.nonzero(target[..., 4])):
        raw[i, j, k, 5 + int(target[i, j, k, 5])] = 12.0
    return raw.reshape(rows, cols, -1)


def test_encode_decode_roundtrip_recovers_boxes():
    target = encode_targets(BOXES, LABELS, ANCHORS, (7, 7), (224, 224))
    assert target[..., 4].sum() == 3
    dets = postprocess_yolo(raw_from_targets(target, 5), ANCHORS, 5, (224, 224), conf_threshold=0.5)
    order = np.argsort(dets.boxes[:, 0])
    assert np.allclose(dets.boxes[order], BOXES[np.argsort(BOXES[:, 0])], atol=0.05)
    assert sorted(dets.labels.tolist()) == sorted(LABELS.tolist())


def test_perfect_detections_score_map_one_and_wrong_class_zero(tmp_path):
    sample = DetectionSample(1, tmp_path / "a.jpg", 224, 224, BOXES, LABELS)
    ds = DetectionDataset(["a", "b", "c", "d", "e"], [sample])
    perfect = Detections(BOXES, np.array([0.9, 0.8, 0.7], np.float32), LABELS)
    result = coco_map(ds, [perfect])
    assert result["map50"] == pytest.approx(1.0) and result["map50_95"] == pytest.approx(1.0)
    wrong = Detections(BOXES, np.array([0.9, 0.8, 0.7], np.float32), (LABELS + 1) % 5)
    assert coco_map(ds, [wrong])["map50"] == pytest.approx(0.0)
    shifted = Detections(BOXES + 12, np.array([0.9, 0.8, 0.7], np.float32), LABELS)
    assert 0.0 < coco_map(ds, [shifted])["map50_95"] < 1.0


def test_nms_is_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]], np.float32)
    same = nms(Detections(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 0, 1])), 0.45)
    assert same.labels.tolist() == [0, 1] and same.scores.tolist() == pytest.approx([0.9, 0.7])


def test_decode_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="expected 5 x"):
        decode_yolo(np.zeros((7, 7, 49)), ANCHORS, 5, (224, 224))


def test_kmeans_anchors_recover_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 1.0], [3.0, 1.5], [4.0, 5.0]])
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (200, 2)) for c in centres])
    anchors = kmeans_anchors(wh, 3)
    assert np.allclose(anchors, centres, rtol=0.06)


@pytest.mark.parametrize("seed", range(6))
def test_augment_moves_boxes_with_pixels(seed):
    image = np.zeros((64, 64, 3), np.uint8)
    box = np.array([[8, 4, 20, 30]], np.float32)
    image[4:30, 8:20] = 255
    out, moved = _augment(image, box, np.random.default_rng(seed))
    ys, xs = np.nonzero(out.max(-1) > 0)
    assert np.allclose(moved[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_topk():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    result = topk_accuracy(np.array([1, 1, 0]), scores)
    # 3 classes: top-5 is 1.0 by construction, so it is not reported
    assert result["top1"] == pytest.approx(1 / 3) and result["top5"] is None
    wide = np.zeros((2, 7))
    wide[0, [6, 5, 4, 3, 2, 1]] = [6, 5, 4, 3, 2, 1]  # label 1 ranks 6th for the first sample
    wide[1, 1] = 1.0
    assert topk_accuracy(np.array([1, 1]), wide) == {"metric": "top1", "top1": 0.5, "top5": 0.5}


def test_ignore_marks_overlapping_priors_but_never_positives():
    big = np.array([[60, 60, 180, 190]], np.float32)
    target = encode_targets(big, np.array([3]), ANCHORS, (7, 7), (224, 224))
    ignore, obj = target[..., 7] > 0, target[..., 4] > 0
    assert obj.sum() == 1 and ignore.sum() >= 1 and not (ignore & obj).any()
    assert ignore[:, :, :2].sum() == 0  # small priors never overlap a 4x4-cell box by IoU > 0.5
    empty = encode_targets(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), ANCHORS, (7, 7), (224, 224))
    assert not empty.any()
