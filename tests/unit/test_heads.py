"""Detection heads as data: anchor-free YOLO and SSD anchors decode to the boxes that made them."""

import numpy as np
import pytest

from edgecnn.errors import ModelError
from edgecnn.runner.heads import head_spec, ssd_anchors
from edgecnn.runner.postprocess import decoder

SIZE = (64, 96)  # H, W: not square, so x/y or w/h mix-ups show
BOXES = np.array([[10, 8, 40, 30], [50, 20, 90, 60]], np.float32)  # xyxy, model-input pixels
LABELS = np.array([2, 0])
BLAZEFACE = {"type": "ssd", "strides": [8, 16, 16, 16], "fixed_anchor_size": True, "num_coords": 16,
             "box_scale": 128}


def _meta(head: dict, classes: int | None = 3, size=SIZE) -> dict:
    return {"task": "detection", "head": head, "preprocessing": {"size": list(size)},
            "classes": [f"c{i}" for i in range(classes)] if classes else None}


def _v8_output(n: int = 50, classes: int = 3, xyxy: bool = False) -> np.ndarray:
    """[4 + C, N] like a YOLOv8 export: two real boxes among low-score noise."""
    rng = np.random.default_rng(0)
    rows = np.zeros((n, 4 + classes), np.float32)
    rows[:, :4] = rng.uniform(0, 60, (n, 4))
    rows[:, 4:] = rng.uniform(0, 0.003, (n, classes))
    for i, (box, label) in enumerate(zip(BOXES, LABELS)):
        k = 7 + 20 * i
        rows[k, :4] = box if xyxy else [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]]
        rows[k, 4 + label] = 0.9 - 0.1 * i
    return rows.T


def _check(dets) -> None:
    assert len(dets) == 2
    assert np.allclose(dets.boxes, BOXES, atol=1e-4) and dets.labels.tolist() == LABELS.tolist()
    assert dets.scores == pytest.approx([0.9, 0.8])


def test_anchor_free_channels_first_and_channels_last():
    raw = _v8_output()
    _check(decoder(_meta({"type": "yolo"}))([raw]))
    _check(decoder(_meta({"type": "ultralytics"}))([raw.T]))  # [N, 4 + C]: read off the shape with the classes
    _check(decoder(_meta({"type": "yolo"}, classes=None))([raw]))  # no names: the long axis holds the boxes


def test_anchor_free_xyxy_normalized_and_objectness():
    raw = _v8_output(xyxy=True)
    _check(decoder(_meta({"type": "yolo", "box": "xyxy"}))([raw]))
    scaled = raw.copy()
    scaled[:4] /= np.array([SIZE[1], SIZE[0], SIZE[1], SIZE[0]], np.float32)[:, None]
    _check(decoder(_meta({"type": "yolo", "box": "xyxy", "normalized": True}))([scaled]))
    v5 = np.concatenate([raw[:4], np.ones((1, raw.shape[1]), np.float32), raw[4:]]).T  # [N, 5 + C]
    v5[7, 4], v5[7, 5 + 2] = 0.5, 1.8  # objectness x class score = 0.9
    v5[27, 5 + 0] = 0.8
    _check(decoder(_meta({"type": "yolov5", "box": "xyxy"}))([v5]))


def test_anchor_free_shape_errors_are_one_line():
    with pytest.raises(ModelError, match=r"has 7 values per box, but the output is \[9, 50\]"):
        decoder(_meta({"type": "yolo"}))([np.zeros((9, 50), np.float32)])
    with pytest.raises(ModelError, match="square"):
        decoder(_meta({"type": "yolo"}, classes=3))([np.zeros((7, 7), np.float32)])


def test_ssd_anchor_counts_match_mediapipe_models():
    """BlazeFace short range (128x128) has 896 anchors, palm detection lite (192x192) 2016: the two models'
    output lengths, so a wrong generator would fail here and in the decode below."""
    face = ssd_anchors(head_spec(BLAZEFACE), (128, 128))
    assert face.shape == (896, 4) and np.all(face[:, 2:] == 1.0)
    assert face[0, :2] == pytest.approx([0.5 / 16, 0.5 / 16]) and face[512, :2] == pytest.approx([0.5 / 8, 0.5 / 8])
    palm = ssd_anchors(head_spec({**BLAZEFACE, "num_coords": 18}), (192, 192))
    assert palm.shape == (2016, 4)
    sized = ssd_anchors(head_spec({"type": "ssd", "strides": [8, 16], "aspect_ratios": [1.0, 2.0]}), (32, 32))
    # stride 8: 4x4 cells x (2 ratios + 1 interpolated); stride 16: 2x2 x 3
    assert sized.shape == (4 * 4 * 3 + 2 * 2 * 3, 4)
    w, h = sized[1, 2], sized[1, 3]
    assert w / h == pytest.approx(2.0) and sized[0, 2] == pytest.approx(0.1484375)


def test_ssd_decodes_boxes_encoded_against_their_anchors():
    spec = head_spec({**BLAZEFACE, "num_coords": 16})
    anchors = ssd_anchors(spec, (128, 128))
    regress = np.zeros((896, 16), np.float32)
    scores = np.full((896, 1), -20.0, np.float32)
    box = np.array([30, 40, 70, 96], np.float32)  # xyxy pixels of the 128x128 input
    k = 300
    cx, cy = (box[0] + box[2]) / 2 / 128, (box[1] + box[3]) / 2 / 128
    regress[k, :4] = [(cx - anchors[k, 0]) * 128, (cy - anchors[k, 1]) * 128, box[2] - box[0], box[3] - box[1]]
    scores[k] = 3.0
    meta = _meta(BLAZEFACE, classes=1, size=(128, 128))
    dets = decoder(meta)([regress, scores])
    assert len(dets) == 1 and np.allclose(dets.boxes[0], box, atol=1e-3)
    assert dets.scores[0] == pytest.approx(1 / (1 + np.exp(-3.0)), rel=1e-5)
    swapped = decoder(meta)([scores, regress])  # outputs in the other order: told apart by their widths
    assert np.allclose(swapped.boxes, dets.boxes)
    with pytest.raises(ModelError, match=r"two outputs over 640 anchors .* got \[\[896, 16\], \[896, 1\]\]"):
        decoder(_meta({**BLAZEFACE, "strides": [8, 16]}, classes=1, size=(128, 128)))([regress, scores])


@pytest.mark.parametrize("head, message", [
    ({"type": "retina"}, "head type 'retina' is not known"),
    ({}, "the head has no type"),
    ({"type": "ssd"}, "an ssd head needs strides"),
    ({"type": "ssd", "strides": [8], "num_layers": 2}, "num_layers 2 but 1 strides"),
    ({"type": "yolo", "box": "cxcy"}, "head.box must be xywh or xyxy"),
    ({"type": "yolo", "objectness": "yes"}, "head.objectness must be true or false"),
    ({"type": "yolo_region"}, "needs anchors"),
])
def test_bad_heads_are_refused(head, message):
    with pytest.raises(ModelError, match=message):
        head_spec(head, "m.onnx head")


def test_head_option_forms(tmp_path):
    from edgecnn.contract import from_options, parse_head
    from edgecnn.errors import DataError

    assert parse_head("yolo") == {"type": "yolo"}
    assert parse_head("yolo:box=xyxy,normalized=true") == {"type": "yolo", "box": "xyxy", "normalized": True}
    assert parse_head('{"type": "ssd", "strides": [8]}') == {"type": "ssd", "strides": [8]}
    (tmp_path / "h.json").write_text('{"head": {"type": "ssd", "strides": [8, 16]}}')  # a sidecar holding one
    assert parse_head(str(tmp_path / "h.json")) == {"type": "ssd", "strides": [8, 16]}
    assert from_options({"head": "yolo"}) == {"head": {"type": "yolo"}, "task": "detection"}
    with pytest.raises(DataError, match="expected TYPE"):
        parse_head("yolo:box")
    with pytest.raises(DataError, match="cannot read it"):
        parse_head(str(tmp_path / "missing.json"))
