"""The demo data set: deterministic, varied, loadable through the ordinary loaders."""

import json

import numpy as np
import pytest

from edgecnn.data import demo
from edgecnn.data.calibration import load_calibration_set
from edgecnn.data.dataset import Task
from edgecnn.data.formats import load_class_folders, load_coco_json
from edgecnn.errors import DataError


def test_scene_is_deterministic_and_boxes_are_inside():
    a_img, a_boxes, a_labels = demo.render_scene(Task.DETECTION, "val", 3)
    b_img, b_boxes, b_labels = demo.render_scene(Task.DETECTION, "val", 3)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_boxes, b_boxes) and np.array_equal(a_labels, b_labels)
    assert a_img.shape == (224, 224, 3) and a_img.dtype == np.uint8
    assert (a_boxes >= 0).all() and (a_boxes <= 224).all() and (a_boxes[:, 2:] > a_boxes[:, :2]).all()


def test_splits_and_indices_differ():
    img_val, _, _ = demo.render_scene(Task.DETECTION, "val", 0)
    img_cal, _, _ = demo.render_scene(Task.DETECTION, "calibration", 0)
    img_val1, _, _ = demo.render_scene(Task.DETECTION, "val", 1)
    assert not np.array_equal(img_val, img_cal) and not np.array_equal(img_val, img_val1)


def test_variety_over_many_scenes():
    sizes, counts, labels = [], [], []
    for i in range(60):
        _, boxes, lab = demo.render_scene(Task.DETECTION, "train", i)
        sizes.extend(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
        counts.append(len(boxes))
        labels.extend(lab)
    assert set(labels) == set(range(len(demo.CLASSES)))
    assert min(sizes) < 45 and max(sizes) > 90  # small and large objects
    assert min(counts) == 1 and max(counts) >= 3


def test_generate_same_bytes_twice_and_loads(tmp_path):
    a = demo.generate(Task.DETECTION, "val", tmp_path / "a", count=6)
    b = demo.generate(Task.DETECTION, "val", tmp_path / "b", count=6)
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    assert ma["sha256"] == mb["sha256"]
    ds = load_coco_json(a / "annotations.json")
    assert len(ds) == 6 and ds.classes == demo.CLASSES
    _, boxes, labels = demo.render_scene(Task.DETECTION, "val", 0)
    assert np.allclose(ds.samples[0].boxes, boxes, atol=0.01) and np.array_equal(ds.samples[0].labels, labels)


def test_classification_split_as_class_folders(tmp_path):
    root = demo.generate(Task.CLASSIFICATION, "val", tmp_path / "c", count=40)
    ds = load_class_folders(root)
    assert ds.classes == sorted(demo.CLASSES) or set(ds.classes) == set(demo.CLASSES)
    assert len(ds) == 40


def test_unknown_split_or_task(tmp_path):
    with pytest.raises(DataError, match="unknown demo split"):
        demo.generate(Task.DETECTION, "test", tmp_path / "x")
    with pytest.raises(DataError, match="unknown demo task"):
        demo.generate("segmentation", "val", tmp_path / "y")


def test_named_calibration_set_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "CONFIGS", {**demo.CONFIGS, Task.CLASSIFICATION: demo.TaskConfig(
        128, {"train": 10, "val": 10, "calibration": 250}, 56, 116, 1)})
    cal = load_calibration_set("demo-classification")
    assert len(cal.images) == 250 and not cal.too_small and cal.task == "classification"
    folder = tmp_path / "few"
    folder.mkdir()
    for p in cal.images[:4]:
        (folder / p.name).write_bytes(p.read_bytes())
    small = load_calibration_set(folder)
    assert len(small.images) == 4 and small.too_small


def test_calibration_errors(tmp_path):
    with pytest.raises(DataError, match="unknown calibration set 'nope'"):
        load_calibration_set("nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_calibration_set(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.toml").write_text('name = "bad"\nsource = "images"\ncount = "many"\n')
    with pytest.raises(DataError, match="'count' must be an integer"):
        load_calibration_set(bad)


def test_calibration_path_that_is_a_file_says_so(tmp_path):
    image = tmp_path / "one.png"
    image.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"calibration set .*one.png is a file, not a folder of images") as e:
        load_calibration_set(image)
    assert "not found" not in str(e.value)


# ---------------------------------------------------------------------------- val-shift: the second style


def _edge_energy(img: np.ndarray) -> float:
    """Mean gradient magnitude after a blur that removes sensor noise: how busy the scene's structure is."""
    import cv2

    g = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.5)
    return float(np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)).mean())


def test_shift_split_is_deterministic_and_has_its_own_seeds():
    a = demo.render_scene(Task.DETECTION, "val-shift", 4)
    b = demo.render_scene(Task.DETECTION, "val-shift", 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    img, boxes, labels = a
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8 and len(boxes) == len(labels) >= 1
    assert (boxes >= 0).all() and (boxes <= 224).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    assert not np.array_equal(img, demo.render_scene(Task.DETECTION, "val", 4)[0])
    # The trained splits keep their seeds: renumbering them would redraw what the demo models and CI know.
    assert [demo._SPLIT_IDS[s] for s in ("train", "val", "calibration")] == [0, 1, 2]


def test_shift_split_differs_in_style_from_val():
    val = [demo.render_scene(Task.DETECTION, "val", i) for i in range(30)]
    shift = [demo.render_scene(Task.DETECTION, "val-shift", i) for i in range(30)]
    # Stripes, checks, mosaics, scribbles and textured fills: far more structure than val's soft scenes.
    assert np.mean([_edge_energy(s[0]) for s in shift]) > 1.4 * np.mean([_edge_energy(v[0]) for v in val])
    sizes = np.concatenate([np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) for _, b, _ in shift])
    assert sizes.min() < demo.CONFIGS[Task.DETECTION].min_object  # smaller than anything in val
    assert sizes.max() > demo.CONFIGS[Task.DETECTION].max_object  # and larger
    assert max(len(lab) for _, _, lab in shift) > demo.CONFIGS[Task.DETECTION].max_objects


def test_shift_aspects_restyle_only_their_part():
    plain_img, plain_boxes, plain_labels = demo.render_scene(Task.DETECTION, "val-shift", 7, aspects=[])
    fill_img, fill_boxes, fill_labels = demo.render_scene(Task.DETECTION, "val-shift", 7, aspects=["fill"])
    assert np.array_equal(plain_labels, fill_labels)  # same objects, same places
    assert np.allclose(plain_boxes, fill_boxes, atol=3)  # an outline's stroke may widen a box a little
    changed = np.abs(plain_img.astype(int) - fill_img.astype(int)).max(2) > 0
    inside = np.zeros(changed.shape, bool)
    for x1, y1, x2, y2 in fill_boxes:
        inside[max(0, int(y1) - 4):int(y2) + 5, max(0, int(x1) - 4):int(x2) + 5] = True  # blur reaches a few px
    assert changed[inside].any() and not changed[~inside].any()
    bg_img, _, bg_labels = demo.render_scene(Task.DETECTION, "val-shift", 7, aspects=["background"])
    assert np.array_equal(bg_labels, plain_labels) and (bg_img != plain_img).any(2)[~inside].mean() > 0.5


def test_shift_aspects_are_checked():
    with pytest.raises(DataError, match="unknown demo shift aspect"):
        demo.render_scene(Task.DETECTION, "val-shift", 0, aspects=["lighting"])
    with pytest.raises(DataError, match="has one style"):
        demo.render_scene(Task.DETECTION, "val", 0, aspects=["fill"])


def test_shift_split_loads_like_val(tmp_path):
    from edgecnn.data.formats import load_dataset

    shift = load_dataset(demo.generate(Task.DETECTION, "val-shift", tmp_path / "shift", count=5))
    val = load_dataset(demo.generate(Task.DETECTION, "val", tmp_path / "val", count=2))
    assert shift.task == val.task == Task.DETECTION and shift.classes == val.classes == demo.CLASSES
    assert len(shift) == 5
    _, boxes, labels = demo.render_scene(Task.DETECTION, "val-shift", 3)
    assert np.allclose(shift.samples[3].boxes, boxes, atol=0.01) and np.array_equal(shift.samples[3].labels, labels)
    again = demo.generate(Task.DETECTION, "val-shift", tmp_path / "again", count=5)
    assert json.loads((again / "manifest.json").read_text())["sha256"] == \
        json.loads((tmp_path / "shift" / "manifest.json").read_text())["sha256"]


def test_shift_split_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "CONFIGS", {**demo.CONFIGS, Task.DETECTION: demo.TaskConfig(
        224, {"train": 1, "val": 1, "calibration": 1, "val-shift": 3}, 28, 120, 4)})
    ds = demo.demo_dataset(Task.DETECTION, "val-shift")
    assert len(ds) == 3 and ds.classes == demo.CLASSES and ds.name == "demo-detection-val-shift"
    assert demo.demo_path(Task.DETECTION, "val-shift").name == "val-shift"
