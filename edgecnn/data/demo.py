"""A deterministic, realistic-enough demo data set, generated on first use.

Public data sets cannot be downloaded everywhere edgecnn runs (CI, air-gapped
build machines), so the demo models are trained and evaluated on synthetic
scenes: five shape classes at varied scale, aspect, rotation and colour, with
partial occlusion, clutter, textured backgrounds, noise and blur.

Every image is drawn from its own random stream seeded by (version, split,
index), so the set is the same bytes every time and any image can be
regenerated alone. Detection is written as COCO JSON, classification as class
folders: the demo set goes through the same loaders as a user's data.

The "val-shift" split has its own seeds and, in each image, a random non-empty
subset of four aspects in a style no training image has (SHIFT_ASPECTS:
striped, mosaic or dark backgrounds; outlined, gradient, striped or noisy
fills; dense clutter with scribbles and glyphs; a wider size range and more
objects), with the same classes and label format: it measures how far a demo
model's accuracy carries beyond the scenes it was trained on.

The drawing primitives both styles share live in edgecnn.data.drawing, the
shifted style in edgecnn.data.demo_shift; this module keeps the configuration,
the trained style and the writing, and re-exports CLASSES, SHIFT_OBJECTS and
SHIFT_ASPECTS so that they stay importable from here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from edgecnn.data.dataset import ClassificationDataset, DetectionDataset, Task
from edgecnn.data.demo_shift import SHIFT_ASPECTS, SHIFT_OBJECTS, render_shifted
from edgecnn.data.drawing import CLASSES, background, clutter, finish, flat_fill, place_object
from edgecnn.errors import DataError
from edgecnn.paths import cache_dir

# CLASSES, SHIFT_ASPECTS and SHIFT_OBJECTS are defined with the drawing that uses them and listed here
# because callers have always imported them from this module.
__all__ = ["CLASSES", "CONFIGS", "SHIFTED_SPLITS", "SHIFT_ASPECTS", "SHIFT_OBJECTS", "SPLITS", "TaskConfig", "VERSION",
           "demo_dataset", "demo_path", "generate", "render_scene"]

VERSION = 1
SPLITS = ("train", "val", "calibration", "val-shift")
# The id is part of every image's seed: fixed by hand so that adding a split never renumbers (and so
# redraws) the splits the demo models were trained and baselined on.
_SPLIT_IDS = {"train": 0, "val": 1, "calibration": 2, "val-shift": 3}
SHIFTED_SPLITS = frozenset({"val-shift"})
_JPEG_QUALITY = 92


@dataclass(frozen=True)
class TaskConfig:
    image_size: int
    counts: dict[str, int]
    min_object: int  # longest side of an object in pixels
    max_object: int
    max_objects: int


CONFIGS = {
    Task.DETECTION: TaskConfig(224, {"train": 2000, "val": 300, "calibration": 300, "val-shift": 300},
                               28, 120, 4),
    Task.CLASSIFICATION: TaskConfig(128, {"train": 2000, "val": 500, "calibration": 250, "val-shift": 500},
                                    56, 116, 1),
}


# ---------------------------------------------------------------------------- the trained style


def render_scene(task: str, split: str, index: int,
                 aspects: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image: (RGB uint8 image, boxes (N,4) xyxy float32, labels (N,) int64).

    `aspects` (shifted splits only, for ablations): draw every image with exactly these SHIFT_ASPECTS
    in the new style instead of the split's own per-image choice.
    """
    cfg = CONFIGS[task]
    rng = np.random.default_rng([VERSION, 7 if task == Task.DETECTION else 11, _SPLIT_IDS[split], index])
    if split in SHIFTED_SPLITS:
        return render_shifted(task, cfg.image_size, (cfg.min_object, cfg.max_object, cfg.max_objects), rng,
                              aspects)
    if aspects is not None:
        raise DataError(f"demo split {split!r} has one style; aspects apply to {', '.join(sorted(SHIFTED_SPLITS))}")
    size = cfg.image_size
    img = background(size, rng)
    clutter(img, rng, int(rng.integers(2, 10)))
    n = 1 if cfg.max_objects == 1 else int(rng.integers(1, cfg.max_objects + 1))
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(n):
        label = int(rng.integers(0, len(CLASSES)))
        placed = place_object(label, cfg.min_object, cfg.max_object, size, cfg.max_objects == 1, boxes, rng)
        if placed is None:
            continue
        poly, box = placed
        flat_fill(img, np.round(poly * 16).astype(np.int32), rng)  # 4 fractional bits: anti-aliased edges
        boxes.append(box)
        labels.append(label)
    clutter(img, rng, int(rng.integers(0, 3)))  # a few strokes in front of objects
    return finish(img, rng, boxes, labels)


# ---------------------------------------------------------------------------- writing


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise DataError(f"cannot encode demo image {path}")
    path.write_bytes(buf.tobytes())


def _generate_detection(root: Path, split: str, count: int, aspects: Iterable[str] | None) -> None:
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]}
    for i in range(count):
        img, boxes, labels = render_scene(Task.DETECTION, split, i, aspects)
        name = f"{split}_{i:05d}.jpg"
        _write_jpeg(images_dir / name, img)
        coco["images"].append({"id": i + 1, "file_name": name, "width": img.shape[1], "height": img.shape[0]})
        for box, label in zip(boxes, labels):
            x1, y1, x2, y2 = (round(float(v), 2) for v in box)
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0,
            })
    (root / "annotations.json").write_text(json.dumps(coco))


def _generate_classification(root: Path, split: str, count: int, aspects: Iterable[str] | None) -> None:
    for c in CLASSES:
        (root / c).mkdir(parents=True)
    for i in range(count):
        img, _, labels = render_scene(Task.CLASSIFICATION, split, i, aspects)
        _write_jpeg(root / CLASSES[int(labels[0])] / f"{split}_{i:05d}.jpg", img)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def generate(task: str, split: str, dest: Path, count: int | None = None,
             aspects: Iterable[str] | None = None) -> Path:
    """Write one split of the demo set into `dest` (which must not exist yet).

    `aspects`: see render_scene; such a set is an experiment, recorded in its manifest, never cached.
    """
    if task not in CONFIGS:
        raise DataError(f"unknown demo task {task!r} (known: {', '.join(CONFIGS)})")
    if split not in SPLITS:
        raise DataError(f"unknown demo split {split!r} (known: {', '.join(SPLITS)})")
    count = CONFIGS[task].counts[split] if count is None else count
    if aspects is not None:
        aspects = sorted(aspects)
        render_scene(task, split, 0, aspects)  # bad aspects fail before anything is written
    if task == Task.DETECTION:
        _generate_detection(dest, split, count, aspects)
    else:
        _generate_classification(dest, split, count, aspects)
    manifest = {"generator": "edgecnn.data.demo", "version": VERSION, "task": task, "split": split,
                "count": count, "classes": CLASSES, "sha256": _tree_digest(dest)}
    if aspects is not None:
        manifest["aspects"] = aspects
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dest


def demo_path(task: str, split: str) -> Path:
    """Folder of one demo split, generated into the cache on first use."""
    final = cache_dir("data", f"demo-v{VERSION}", task) / split
    if (final / "manifest.json").exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=final.parent))
    try:
        generate(task, split, tmp / "out")
        try:
            (tmp / "out").rename(final)
        except OSError:
            if not (final / "manifest.json").exists():  # not a concurrent generator winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def demo_dataset(task: str, split: str) -> DetectionDataset | ClassificationDataset:
    """Load one demo split (generating it on first use) through the ordinary loaders."""
    from edgecnn.data.formats import load_class_folders, load_coco_json

    root = demo_path(task, split)
    if task == Task.DETECTION:
        ds = load_coco_json(root / "annotations.json")
    else:
        ds = load_class_folders(root)
    ds.name = f"demo-{task}-{split}"
    return ds
