"""COCO scoring against pycocotools on a COCO file made here: gapped category ids, crowd regions, odd image ids.

edgecnn's mAP (load_coco_json -> coco_map) and pycocotools' COCOeval over the same ground
truth file and the results written by save_coco_results must give the same figures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecnn.data.dataset import DetectionDataset, DetectionSample
from edgecnn.data.formats import load_coco_json
from edgecnn.paths import PathError
from edgecnn.runner.metrics import coco_map, coco_results, save_coco_results
from edgecnn.runner.postprocess import Detections

pycocotools = pytest.importorskip("pycocotools")

# Listed out of id order, with gaps, as COCO's own 1..90 has.
CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
IMAGES = [(5, 64, 48), (17, 80, 60), (301, 50, 50), (1000, 40, 64), (4242, 72, 56), (90001, 48, 48)]


def _box(rng, width: int, height: int, lo: int, hi: int) -> list[int]:
    """An integer xywh box inside the image (integers: float32 and float64 hold them alike)."""
    w, h = int(rng.integers(lo, min(hi, width) + 1)), int(rng.integers(lo, min(hi, height) + 1))
    return [int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h]


def make_coco(root: Path) -> Path:
    """A COCO file over tiny images; about 1 object in 5 is a crowd region, and one image has no objects."""
    rng = np.random.default_rng(14)
    images, annotations = [], []
    for image_id, width, height in IMAGES:
        name = f"img_{image_id}.png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "images" / name), np.full((height, width, 3), image_id % 200, np.uint8))
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        count = 0 if image_id == 90001 else int(rng.integers(6, 11))
        for k in range(count):
            crowd = k == 0 or rng.random() < 0.1
            x, y, w, h = _box(rng, width, height, 20, 40) if crowd else _box(rng, width, height, 6, 24)
            annotations.append({
                "id": 1000 + len(annotations), "image_id": image_id,
                "category_id": int(rng.choice([c["id"] for c in CATEGORIES])),
                # A segmentation's area, smaller than the box: COCO files carry these.
                "bbox": [x, y, w, h], "area": 0.8 * w * h, "iscrowd": int(crowd),
            })
    path = root / "instances_val.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def make_detections(coco_path: Path, dataset: DetectionDataset) -> list[Detections]:
    """Per sample: hits of varying quality, near misses, duplicates, small boxes inside crowd regions,
    wrong classes and stray boxes, all with distinct scores; labels are the data set's class indices."""
    rng = np.random.default_rng(7)
    data = json.loads(coco_path.read_text())
    label = {cid: i for i, cid in enumerate(sorted(c["id"] for c in data["categories"]))}
    out = []
    for sample in dataset.samples:
        boxes, labels = [], []
        for ann in (a for a in data["annotations"] if a["image_id"] == sample.image_id):
            x, y, w, h = ann["bbox"]
            if ann["iscrowd"]:  # small boxes well inside: IoU with the region is low, overlap with it total
                for _ in range(3):
                    bw, bh = w * rng.uniform(0.2, 0.4), h * rng.uniform(0.2, 0.4)
                    bx, by = x + rng.uniform(0, w - bw), y + rng.uniform(0, h - bh)
                    boxes.append([bx, by, bx + bw, by + bh])
                    labels.append(label[ann["category_id"]])
                continue
            copies = 1 + int(rng.random() < 0.3)  # a duplicate: the second one is a false positive
            for _ in range(copies):
                jitter = rng.uniform(0.02, 0.45) * np.array([w, h, w, h])  # from near-exact to near miss
                boxes.append(np.array([x, y, x + w, y + h]) + rng.uniform(-1, 1, 4) * jitter)
                labels.append(label[ann["category_id"]])
            if rng.random() < 0.2:  # right place, wrong class
                boxes.append([x, y, x + w, y + h])
                labels.append((label[ann["category_id"]] + 1) % len(label))
        for _ in range(2):  # strays
            bx, by = rng.uniform(0, sample.width - 8), rng.uniform(0, sample.height - 8)
            boxes.append([bx, by, bx + 8, by + 8])
            labels.append(int(rng.integers(len(label))))
        scores = rng.permutation(len(boxes)).astype(np.float32) / len(boxes) + rng.uniform(0.001, 0.009)
        out.append(Detections(np.asarray(boxes, np.float32).reshape(-1, 4), scores.astype(np.float32),
                              np.asarray(labels, np.int64)))
    return out


def pycocotools_map(gt_path: Path, results_path: Path) -> tuple[float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(results_path)), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


@pytest.fixture
def coco(tmp_path):
    path = make_coco(tmp_path)
    dataset = load_coco_json(path)
    return path, dataset, make_detections(path, dataset)


def test_edgecnn_and_pycocotools_agree_with_gapped_ids_and_crowd(coco, tmp_path):
    gt_path, dataset, detections = coco
    ours = coco_map(dataset, detections)
    results_path = save_coco_results(tmp_path / "out" / "predictions.json", coco_results(dataset, detections))
    theirs = pycocotools_map(gt_path, results_path)
    assert 0.05 < ours["map50_95"] < 0.95 and 0.05 < ours["map50"] < 0.95  # neither trivial nor perfect
    assert ours["map50_95"] == pytest.approx(theirs[0], abs=1e-6)
    assert ours["map50"] == pytest.approx(theirs[1], abs=1e-6)


def test_results_carry_the_files_own_ids(coco, tmp_path):
    gt_path, dataset, detections = coco
    assert dataset.category_ids == [1, 3, 90] and dataset.classes == ["person", "car", "toothbrush"]
    assert [dataset.category_id(i) for i in range(3)] == [1, 3, 90]
    results = coco_results(dataset, detections)
    path = save_coco_results(tmp_path / "predictions.json", results)
    written = json.loads(path.read_text())
    assert written == results and isinstance(written, list)
    assert {r["category_id"] for r in written} == {1, 3, 90}
    assert {r["image_id"] for r in written} == {image_id for image_id, _, _ in IMAGES}
    for sample, det in zip(dataset.samples, detections):
        mine = [r for r in written if r["image_id"] == sample.image_id]
        assert [r["category_id"] for r in mine] == [dataset.category_ids[int(v)] for v in det.labels]
        np.testing.assert_allclose([r["bbox"][2] for r in mine], det.boxes[:, 2] - det.boxes[:, 0], rtol=1e-6)
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary was renamed, not left behind


def test_ignoring_crowd_regions_changes_the_figure(coco, tmp_path):
    """Detections on crowd regions are ignored; with the regions dropped they are false positives."""
    gt_path, dataset, detections = coco
    crowd = sum(len(s.ignore_boxes) for s in dataset.samples)
    assert crowd >= len(IMAGES) - 1 and sum(len(s.boxes) for s in dataset.samples) >= 3 * crowd
    with_crowd = coco_map(dataset, detections)
    dropped = DetectionDataset(dataset.classes, [dataclasses.replace(s, ignore_boxes=np.zeros((0, 4), np.float32),
                                                                     ignore_labels=np.zeros(0, np.int64))
                                                 for s in dataset.samples], dataset.name, dataset.category_ids)
    without = coco_map(dropped, detections)
    assert with_crowd["map50"] > without["map50"] + 0.02
    assert with_crowd["map50_95"] > without["map50_95"] + 0.01
    # pycocotools says the same of the file with its crowd annotations removed.
    data = json.loads(gt_path.read_text())
    data["annotations"] = [a for a in data["annotations"] if not a["iscrowd"]]
    (tmp_path / "no_crowd.json").write_text(json.dumps(data))
    results = save_coco_results(tmp_path / "p.json", coco_results(dataset, detections))
    assert without["map50_95"] == pytest.approx(pycocotools_map(tmp_path / "no_crowd.json", results)[0], abs=1e-6)


def test_to_coco_keeps_ids_and_writes_crowd_regions(coco, tmp_path):
    gt_path, dataset, _ = coco
    out = dataset.to_coco()
    assert sorted(c["id"] for c in out["categories"]) == [1, 3, 90]
    assert [i["id"] for i in out["images"]] == sorted(i for i, _, _ in IMAGES)
    original = json.loads(gt_path.read_text())["annotations"]
    key = lambda a: (a["image_id"], a["category_id"], a["iscrowd"], tuple(a["bbox"]))  # noqa: E731
    assert sorted(map(key, out["annotations"])) == sorted(map(key, original))
    for a in out["annotations"]:
        assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3])
    # Through to_coco and back, and subset, nothing is lost.
    (tmp_path / "again.json").write_text(json.dumps(out))
    again = load_coco_json(tmp_path / "again.json", images_dir=gt_path.parent / "images")
    assert again.category_ids == dataset.category_ids
    for s, t in zip(dataset.samples, again.samples):
        np.testing.assert_array_equal(s.ignore_boxes, t.ignore_boxes)
        assert s.ignore_labels.tolist() == t.ignore_labels.tolist()
    assert dataset.subset(2).category_ids == [1, 3, 90]


def test_loaders_without_ids_number_categories_from_one(tmp_path):
    sample = DetectionSample(3, tmp_path / "x.png", 10, 10, np.array([[0, 0, 5, 5]], np.float32), np.array([1]))
    ds = DetectionDataset(["a", "b"], [sample])
    assert ds.category_id(1) == 2 and sample.ignore_boxes.shape == (0, 4)
    assert ds.to_coco()["categories"] == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    det = Detections(np.array([[0, 0, 5, 5]], np.float32), np.array([0.9], np.float32), np.array([1]))
    assert coco_results(ds, [det])[0]["category_id"] == 2
    with pytest.raises(ValueError, match="category_ids"):
        DetectionDataset(["a", "b"], [sample], category_ids=[4, 4])


def test_save_coco_results_refuses_an_unwritable_path(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(PathError, match="folder"):
        save_coco_results(tmp_path / "folder", [])
    (tmp_path / "file").write_text("")
    with pytest.raises(PathError, match="file"):
        save_coco_results(tmp_path / "file" / "p.json", [])
