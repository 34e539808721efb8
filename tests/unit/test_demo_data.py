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
