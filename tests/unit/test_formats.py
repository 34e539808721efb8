"""Data set loaders on tiny hand-made fixtures: boxes, labels, ids, detection and every error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecnn.data.dataset import ClassificationDataset, DetectionDataset
from edgecnn.data.formats import load_class_folders, load_coco_json, load_dataset, load_voc, load_yolo_txt
from edgecnn.errors import DataError


def write_image(path: Path, width: int, height: int, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))
    return path


def raises_naming(path: Path, *words: str):
    """DataError whose one-line message names `path` (and contains every word)."""
    pattern = "(?s)^" + "".join(f"(?=.*{re.escape(w)})" for w in (str(path), *words))
    return pytest.raises(DataError, match=pattern)


# ------------------------------------------------------------------ COCO

def coco_fixture(root: Path) -> Path:
    write_image(root / "images" / "b.png", 32, 24)
    write_image(root / "images" / "a.png", 64, 48)
    coco = {
        "images": [
            {"id": 42, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 7, "file_name": "b.png", "width": 32, "height": 24},
        ],
        # Non-contiguous ids, deliberately out of order.
        "categories": [{"id": 90, "name": "zebra"}, {"id": 3, "name": "car"}, {"id": 17, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 17, "bbox": [10, 5, 20, 8], "iscrowd": 0},
            {"id": 2, "image_id": 42, "category_id": 90, "bbox": [0.5, 1.5, 3, 4]},
            {"id": 3, "image_id": 42, "category_id": 3, "bbox": [1, 1, 30, 30], "iscrowd": 1},
        ],
    }
    path = root / "instances_val.json"
    path.write_text(json.dumps(coco))
    return path


def test_coco_boxes_labels_and_category_remapping(tmp_path):
    ds = load_coco_json(coco_fixture(tmp_path))
    assert ds.classes == ["car", "cat", "zebra"]  # category id order 3, 17, 90
    assert ds.category_ids == [3, 17, 90] and ds.category_id(2) == 90
    by_id = {s.image_id: s for s in ds.samples}
    assert sorted(by_id) == [7, 42]
    a = by_id[42]
    assert a.path == tmp_path / "images" / "a.png" and (a.width, a.height) == (64, 48)
    assert a.boxes.dtype == np.float32 and a.labels.dtype == np.int64
    np.testing.assert_allclose(a.boxes, [[10, 5, 30, 13], [0.5, 1.5, 3.5, 5.5]])
    assert a.labels.tolist() == [1, 2]
    np.testing.assert_allclose(a.ignore_boxes, [[1, 1, 31, 31]])  # the crowd annotation: an ignore region
    assert a.ignore_boxes.dtype == np.float32 and a.ignore_labels.tolist() == [0]
    b = by_id[7]
    assert b.boxes.shape == (0, 4) and b.labels.shape == (0,) and b.ignore_boxes.shape == (0, 4)


def test_coco_round_trips_through_to_coco(tmp_path):
    ds = load_coco_json(coco_fixture(tmp_path))
    coco = ds.to_coco()
    assert sorted(c["id"] for c in coco["categories"]) == [3, 17, 90]
    assert [(a["category_id"], a["iscrowd"]) for a in coco["annotations"] if a["image_id"] == 42] == \
        [(17, 0), (90, 0), (3, 1)]
    (tmp_path / "again.json").write_text(json.dumps(coco))
    again = load_coco_json(tmp_path / "again.json")
    assert again.classes == ds.classes and again.category_ids == ds.category_ids
    for s, t in zip(ds.samples, again.samples):
        assert s.image_id == t.image_id
        np.testing.assert_allclose(s.boxes, t.boxes)
        np.testing.assert_allclose(s.ignore_boxes, t.ignore_boxes)
        assert s.labels.tolist() == t.labels.tolist() and s.ignore_labels.tolist() == t.ignore_labels.tolist()


def test_coco_explicit_images_dir(tmp_path):
    json_path = coco_fixture(tmp_path / "ann")
    (tmp_path / "ann" / "images").rename(tmp_path / "pictures")
    with raises_naming(json_path, "'b.png' (id 7)", "ann/images"):
        load_coco_json(json_path)
    ds = load_coco_json(json_path, images_dir=tmp_path / "pictures")
    assert {s.path.parent for s in ds.samples} == {tmp_path / "pictures"}


def _break(data: dict, how: str) -> None:
    if how == "missing key":
        del data["categories"]
    elif how == "unknown image":
        data["annotations"][0]["image_id"] = 999
    elif how == "unknown category":
        data["annotations"][0]["category_id"] = 4
    elif how == "bad bbox":
        data["annotations"][0]["bbox"] = [1, 2, -3, 4]
    elif how == "image without file_name":
        del data["images"][0]["file_name"]


@pytest.mark.parametrize(
    "how, words",
    [
        ("missing key", ["categories"]),
        ("unknown image", ["unknown image id 999"]),
        ("unknown category", ["unknown category id 4"]),
        ("bad bbox", ["invalid bbox"]),
        ("image without file_name", ["file_name"]),
    ],
)
def test_coco_malformed_content(tmp_path, how, words):
    path = coco_fixture(tmp_path)
    data = json.loads(path.read_text())
    _break(data, how)
    path.write_text(json.dumps(data))
    with raises_naming(path, *words):
        load_coco_json(path)


def test_coco_missing_file_invalid_json_and_missing_image(tmp_path):
    with raises_naming(tmp_path / "nope.json", ""):
        load_coco_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with raises_naming(bad, "invalid JSON"):
        load_coco_json(bad)
    path = coco_fixture(tmp_path)
    (tmp_path / "images" / "b.png").unlink()
    with raises_naming(path, "b.png", "not found"):
        load_coco_json(path)


# ------------------------------------------------------------------ Pascal VOC

def voc_xml(filename: str, objects: list[tuple], size: tuple[int, int] | None = (64, 48)) -> str:
    objs = "".join(
        f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox>"
        f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for name, (x1, y1, x2, y2), difficult in objects
    )
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>{filename}</filename>{size_xml}{objs}</annotation>"


def voc_fixture(root: Path) -> Path:
    (root / "Annotations").mkdir(parents=True)
    write_image(root / "JPEGImages" / "000002.jpg", 64, 48)
    write_image(root / "JPEGImages" / "000001.jpg", 40, 30)
    (root / "Annotations" / "000002.xml").write_text(voc_xml("000002.jpg", [
        ("person", (1, 1, 10, 20), False),
        ("dog", (5, 6, 64, 48), True),
    ]))
    # No <size>: the loader must read it from the image.
    (root / "Annotations" / "000001.xml").write_text(voc_xml("000001.jpg", [("dog", (11, 21, 30, 25), False)], None))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "val.txt").write_text("000002\n")
    return root


def test_voc_one_based_conversion_difficult_and_ids(tmp_path):
    ds = load_voc(voc_fixture(tmp_path))
    assert ds.classes == ["dog", "person"]
    first, second = ds.samples
    assert (first.image_id, first.path.name, first.width, first.height) == (1, "000001.jpg", 40, 30)
    np.testing.assert_allclose(first.boxes, [[10, 20, 30, 25]])
    assert first.labels.tolist() == [0]
    assert (second.image_id, second.width, second.height) == (2, 64, 48)
    np.testing.assert_allclose(second.boxes, [[0, 0, 10, 20]])
    assert second.labels.tolist() == [1]
    np.testing.assert_allclose(second.ignore_boxes, [[4, 5, 64, 48]])  # the difficult dog: an ignore region
    assert second.ignore_labels.tolist() == [0] and first.ignore_boxes.shape == (0, 4)
    assert ds.category_ids is None and ds.to_coco()["annotations"][-1]["iscrowd"] == 1

    kept = load_voc(tmp_path, keep_difficult=True).samples[1]
    np.testing.assert_allclose(kept.boxes, [[0, 0, 10, 20], [4, 5, 64, 48]])
    assert kept.labels.tolist() == [1, 0] and kept.ignore_boxes.shape == (0, 4)


def test_voc_split_and_given_classes(tmp_path):
    ds = load_voc(voc_fixture(tmp_path), split="val", classes=["person", "dog", "cat"])
    assert ds.classes == ["person", "dog", "cat"]
    assert [s.path.name for s in ds.samples] == ["000002.jpg"]
    assert ds.samples[0].labels.tolist() == [0]
    with raises_naming(tmp_path / "Annotations" / "000001.xml", "'dog'"):
        load_voc(tmp_path, classes=["person"])


def test_voc_errors(tmp_path):
    root = voc_fixture(tmp_path)
    with raises_naming(root, "train.txt"):
        load_voc(root, split="train")
    (root / "JPEGImages" / "000001.jpg").unlink()
    with raises_naming(root / "Annotations" / "000001.xml", "000001.jpg"):
        load_voc(root)
    bad = root / "Annotations" / "000002.xml"
    bad.write_text("<annotation><object>")
    with raises_naming(bad, "invalid XML"):
        load_voc(root, split="val")
    bad.write_text(voc_xml("000002.jpg", [("person", (1, 1, "x", 3), False)]))
    with raises_naming(bad, "bndbox"):
        load_voc(root, split="val")
    with raises_naming(tmp_path / "empty", "Annotations"):
        load_voc(tmp_path / "empty")


# ------------------------------------------------------------------ YOLO txt

def yolo_fixture(root: Path, split: str | None = "val", names: str = "names: [car, person]\n") -> Path:
    images = root / "images" / split if split else root / "images"
    labels = root / "labels" / split if split else root / "labels"
    write_image(images / "b.png", 64, 48)
    write_image(images / "a.jpg", 32, 32)
    labels.mkdir(parents=True)
    (labels / "b.txt").write_text("1 0.5 0.5 0.25 0.5\n\n0 0.125 0.25 0.25 0.5\n")
    (root / "data.yaml").write_text(names)
    return root


@pytest.mark.parametrize("split", ["val", None])
def test_yolo_normalized_conversion(tmp_path, split):
    ds = load_yolo_txt(yolo_fixture(tmp_path, split))
    assert ds.classes == ["car", "person"]
    a, b = ds.samples
    assert (a.image_id, a.path.name, a.boxes.shape) == (1, "a.jpg", (0, 4))  # no label file: background
    assert (b.image_id, b.width, b.height) == (2, 64, 48)
    # cx 32, cy 24, w 16, h 24 -> [24, 12, 40, 36]; cx 8, cy 12, w 16, h 24 -> [0, 0, 16, 24]
    np.testing.assert_allclose(b.boxes, [[24, 12, 40, 36], [0, 0, 16, 24]])
    assert b.labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    "yaml_text",
    [
        "path: ../data\ntrain: images/train\nnames: ['car', \"person\"]  # two\nnc: 2\n",
        "names:\n  0: car\n  1: person\nnc: 2\n",
        "names:\n  1: person # comment\n  0: 'car'\n",
        "names:\n- car\n- person\nval: images/val\n",
        "names: {0: car, 1: person}\n",
    ],
)
def test_yolo_data_yaml_variants(tmp_path, yaml_text):
    assert load_yolo_txt(yolo_fixture(tmp_path, names=yaml_text)).classes == ["car", "person"]


def test_yolo_classes_txt(tmp_path):
    root = yolo_fixture(tmp_path)
    (root / "data.yaml").unlink()
    (root / "classes.txt").write_text("car\nperson\n\n")
    assert load_yolo_txt(root).classes == ["car", "person"]


@pytest.mark.parametrize(
    "label_line, words",
    [
        ("5 0.5 0.5 0.1 0.1", ["b.txt:1", "class 5"]),
        ("0 0.5 0.5 0.1", ["b.txt:1", "4 values"]),
        ("0 12 20 4 4", ["b.txt:1", "normalized"]),
        ("car 0.5 0.5 0.1 0.1", ["b.txt:1", "not numbers"]),
    ],
)
def test_yolo_bad_label_lines(tmp_path, label_line, words):
    root = yolo_fixture(tmp_path)
    (root / "labels" / "val" / "b.txt").write_text(label_line + "\n")
    with raises_naming(root / "labels" / "val", *words):
        load_yolo_txt(root)


def test_yolo_errors(tmp_path):
    root = yolo_fixture(tmp_path)
    with raises_naming(root, "images/train", "val"):
        load_yolo_txt(root, split="train")
    (root / "data.yaml").write_text("names:\n  0: car\n  2: person\n")
    with raises_naming(root / "data.yaml", "0..1"):
        load_yolo_txt(root)
    (root / "data.yaml").unlink()
    with raises_naming(root, "classes.txt"):
        load_yolo_txt(root)
    (root / "classes.txt").write_text("car\nperson\n")
    (root / "images" / "val" / "a.jpg").write_bytes(b"not an image")
    with raises_naming(root / "images" / "val" / "a.jpg", ""):
        load_yolo_txt(root)


# ------------------------------------------------------------------ class folders and detection

def folders_fixture(root: Path) -> Path:
    write_image(root / "dog" / "x.png", 16, 16)
    write_image(root / "cat" / "y.png", 16, 16)
    write_image(root / "cat" / "x.jpg", 20, 16)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".ipynb_checkpoints").mkdir()
    return root


def test_class_folders_sorted_and_deterministic(tmp_path):
    ds = load_class_folders(folders_fixture(tmp_path))
    assert ds.classes == ["cat", "dog"]
    assert [(s.path.relative_to(tmp_path).as_posix(), s.label) for s in ds.samples] == [
        ("cat/x.jpg", 0), ("cat/y.png", 0), ("dog/x.png", 1),
    ]


def test_class_folders_errors(tmp_path):
    with raises_naming(tmp_path, "no class subfolders"):
        load_class_folders(tmp_path)
    (tmp_path / "empty_class").mkdir()
    write_image(tmp_path / "full" / "a.png", 16, 16)
    with raises_naming(tmp_path / "empty_class", "no images"):
        load_class_folders(tmp_path)


def test_load_dataset_detects_each_format(tmp_path):
    coco_json = coco_fixture(tmp_path / "coco")
    cases = {
        coco_json: ("instances_val", DetectionDataset),
        tmp_path / "coco": ("instances_val", DetectionDataset),
        voc_fixture(tmp_path / "voc"): ("voc", DetectionDataset),
        yolo_fixture(tmp_path / "yolo"): ("yolo-val", DetectionDataset),
        folders_fixture(tmp_path / "folders"): ("folders", ClassificationDataset),
    }
    for path, (name, kind) in cases.items():
        ds = load_dataset(path)
        assert (ds.name, type(ds)) == (name, kind), path
    assert len(load_dataset(tmp_path / "voc", split="val")) == 1


def test_load_dataset_rejects_unknown_layouts(tmp_path):
    with raises_naming(tmp_path / "missing", "not found"):
        load_dataset(tmp_path / "missing")
    write_image(tmp_path / "loose.png", 16, 16)
    for path in (tmp_path, tmp_path / "loose.png"):
        with raises_naming(path, "COCO", "VOC", "YOLO", "class subfolders"):
            load_dataset(path)
