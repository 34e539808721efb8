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
from edgecnn.errors import DataError
from edgecnn.paths import cache_dir

VERSION = 1
CLASSES = ["ellipse", "triangle", "rectangle", "star", "cross"]
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
# The shifted style's object sizes (longest side, pixels) and count: smaller and larger than the
# trained range, and more objects per image.
SHIFT_OBJECTS = {Task.DETECTION: (16, 168, 6), Task.CLASSIFICATION: (44, 124, 1)}
SHIFT_ASPECTS = ("background", "fill", "clutter", "size")


# ---------------------------------------------------------------------------- drawing


def _unit_polygon(cls: str, rng: np.random.Generator) -> np.ndarray:
    """Outline of one class in unit coordinates (fits in [-1, 1]^2)."""
    if cls == "ellipse":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if cls == "triangle":
        angles = np.array([90, 210, 330]) + rng.uniform(-12, 12, 3)
        t = np.deg2rad(angles)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if cls == "rectangle":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    if cls == "star":
        inner = rng.uniform(0.38, 0.5)
        t = np.deg2rad(np.arange(10) * 36 + 90)
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if cls == "cross":
        w = rng.uniform(0.28, 0.4)
        return np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w],
                         [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w]], float)
    raise ValueError(cls)


def _object_polygon(cls: str, size: float, center: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Place a unit outline: aspect, rotation, scale to `size` (longest side), then translate."""
    pts = _unit_polygon(cls, rng)
    aspect = np.exp(rng.uniform(-0.4, 0.4))
    pts = pts * np.array([aspect, 1 / aspect])
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = pts @ rot.T
    extent = (pts.max(0) - pts.min(0)).max()
    pts = (pts - (pts.max(0) + pts.min(0)) / 2) * (size / extent)
    return pts + center


def _hsv_color(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> tuple[int, int, int]:
    hsv = np.uint8([[[rng.integers(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Low-saturation texture: colour gradient + low-frequency noise + fine grain."""
    base = np.array(_hsv_color(rng, (0.05, 0.35), (0.35, 0.8)), np.float32)
    other = np.array(_hsv_color(rng, (0.05, 0.35), (0.35, 0.8)), np.float32)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    g = np.cos(direction) * ramp[None, :] + np.sin(direction) * ramp[:, None]
    g = (g - g.min()) / (np.ptp(g) + 1e-6)
    img = base + (other - base) * g[..., None]
    cells = int(rng.integers(3, 9))
    blotches = cv2.resize(rng.normal(0, 18, (cells, cells, 3)).astype(np.float32), (size, size),
                          interpolation=cv2.INTER_CUBIC)
    img += blotches + rng.normal(0, 6, (size, size, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _clutter(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Thin lines, arcs and dots: edges that are not objects."""
    size = img.shape[0]
    for _ in range(count):
        color = _hsv_color(rng, (0.0, 0.6), (0.15, 0.95))
        kind = rng.integers(0, 3)
        p = rng.integers(0, size, 2)
        if kind == 0:
            q = p + rng.integers(-size // 3, size // 3, 2)
            cv2.line(img, tuple(map(int, p)), tuple(map(int, q)), color, int(rng.integers(1, 3)), cv2.LINE_AA)
        elif kind == 1:
            axes = tuple(int(a) for a in rng.integers(4, size // 5, 2))
            start = int(rng.integers(0, 360))
            cv2.ellipse(img, tuple(map(int, p)), axes, 0, start, start + int(rng.integers(40, 160)), color,
                        1, cv2.LINE_AA)
        else:
            cv2.circle(img, tuple(map(int, p)), int(rng.integers(1, 5)), color, -1, cv2.LINE_AA)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box: how much of one object the other can hide."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller if smaller > 0 else 0.0


def _place_object(label: int, lo: float, hi: float, size: int, centred: bool, boxes: list[np.ndarray],
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """Polygon and box of one object that overlaps the placed ones little enough, or None after 20 tries."""
    for _attempt in range(20):
        obj = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        margin = obj / 2 + 1
        if centred:  # classification: roughly centred, like a crop
            center = size / 2 + rng.uniform(-0.12, 0.12, 2) * size
            center = np.clip(center, margin, size - margin)
        else:
            center = rng.uniform(margin, size - margin, 2)
        poly = _object_polygon(CLASSES[label], obj, center, rng)
        box = np.concatenate([poly.min(0), poly.max(0)]).clip(0, size)
        # Occlusion is allowed but bounded, so every object stays identifiable.
        if all(_overlap(box, b) < 0.3 for b in boxes):
            return poly, box
    return None


def _flat_fill(img: np.ndarray, pts: np.ndarray, rng: np.random.Generator) -> float:
    """The trained style's paint: one saturated colour, sometimes a thin dark edge; paints inside the polygon."""
    cv2.fillPoly(img, [pts], _hsv_color(rng, (0.45, 1.0), (0.3, 1.0)), cv2.LINE_AA, shift=4)
    if rng.random() < 0.4:
        edge = _hsv_color(rng, (0.0, 0.5), (0.0, 0.35))
        cv2.polylines(img, [pts], True, edge, int(rng.integers(1, 3)), cv2.LINE_AA, shift=4)
    return 0.0


def _finish(img: np.ndarray, rng: np.random.Generator, boxes: list,
            labels: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera effects (exposure, sensor noise, defocus), then the arrays render_scene returns."""
    out = img.astype(np.float32)
    out = out * rng.uniform(0.75, 1.2) + rng.uniform(-20, 20)  # exposure
    out += rng.normal(0, rng.uniform(1, 7), out.shape)
    blur = rng.uniform(0, 1.3)
    if blur > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    img = np.clip(out, 0, 255).astype(np.uint8)
    box_arr = np.array(boxes, np.float32).reshape(-1, 4)
    return img, box_arr, np.array(labels, np.int64)


def render_scene(task: str, split: str, index: int,
                 aspects: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image: (RGB uint8 image, boxes (N,4) xyxy float32, labels (N,) int64).

    `aspects` (shifted splits only, for ablations): draw every image with exactly these SHIFT_ASPECTS
    in the new style instead of the split's own per-image choice.
    """
    cfg = CONFIGS[task]
    rng = np.random.default_rng([VERSION, 7 if task == Task.DETECTION else 11, _SPLIT_IDS[split], index])
    if split in SHIFTED_SPLITS:
        return _render_shifted(task, cfg, rng, aspects)
    if aspects is not None:
        raise DataError(f"demo split {split!r} has one style; aspects apply to {', '.join(sorted(SHIFTED_SPLITS))}")
    size = cfg.image_size
    img = _background(size, rng)
    _clutter(img, rng, int(rng.integers(2, 10)))
    n = 1 if cfg.max_objects == 1 else int(rng.integers(1, cfg.max_objects + 1))
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(n):
        label = int(rng.integers(0, len(CLASSES)))
        placed = _place_object(label, cfg.min_object, cfg.max_object, size, cfg.max_objects == 1, boxes, rng)
        if placed is None:
            continue
        poly, box = placed
        _flat_fill(img, np.round(poly * 16).astype(np.int32), rng)  # 4 fractional bits: anti-aliased edges
        boxes.append(box)
        labels.append(label)
    _clutter(img, rng, int(rng.integers(0, 3)))  # a few strokes in front of objects
    return _finish(img, rng, boxes, labels)


# ---------------------------------------------------------------------------- the shifted style


def _grid(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates along and across a random direction."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    return np.cos(theta) * xx + np.sin(theta) * yy, -np.sin(theta) * xx + np.cos(theta) * yy


def _two_tone(pattern: np.ndarray, a: tuple, b: tuple) -> np.ndarray:
    """Blend colours a and b by a 0..1 pattern."""
    a_, b_ = np.array(a, np.float32), np.array(b, np.float32)
    return a_ + (b_ - a_) * pattern[..., None]


def _shift_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Backgrounds unlike the trained ones: periodic stripes or checks, coloured mosaic, or dark grain."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        u, v = _grid(size, rng)
        period = rng.uniform(6, 26)
        if rng.random() < 0.5:
            pattern = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
        else:
            pattern = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
        img = _two_tone(cv2.GaussianBlur(pattern, (0, 0), 0.8), _hsv_color(rng, (0.2, 0.7), (0.2, 0.9)),
                        _hsv_color(rng, (0.2, 0.7), (0.2, 0.9)))
    elif kind == 1:
        cells = int(rng.integers(6, 20))
        tiles = np.stack([_hsv_color(rng, (0.05, 0.45), (0.35, 0.85)) for _ in range(cells * cells)])
        img = cv2.resize(tiles.reshape(cells, cells, 3).astype(np.float32), (size, size),
                         interpolation=cv2.INTER_NEAREST)
    else:
        img = np.broadcast_to(np.array(_hsv_color(rng, (0.0, 0.5), (0.04, 0.22)), np.float32),
                              (size, size, 3)).copy()
        img += rng.normal(0, 14, (size, size, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


_GLYPHS = "abdefghkmnpqrsuwyz235689"  # no letters shaped like the classes (o, x, t, v, ...)


def _distractors(img: np.ndarray, rng: np.random.Generator, scribbles: int, glyphs: int) -> None:
    """Thick random-walk strokes and printed glyphs: non-object shapes with strong edges and corners."""
    size = img.shape[0]
    for _ in range(scribbles):
        steps = rng.normal(0, size / 10, (int(rng.integers(3, 9)), 2))
        pts = np.cumsum(steps, 0) + rng.uniform(0, size, 2)
        color = _hsv_color(rng, (0.0, 1.0), (0.1, 1.0))
        cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, color, int(rng.integers(1, 6)),
                      cv2.LINE_AA, shift=4)
    for _ in range(glyphs):
        text = "".join(rng.choice(list(_GLYPHS), int(rng.integers(1, 4))))
        org = tuple(int(c) for c in rng.integers(0, size - 10, 2))
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.35, 1.1),
                    _hsv_color(rng, (0.0, 1.0), (0.1, 1.0)), int(rng.integers(1, 3)), cv2.LINE_AA)


def _shift_fill(img: np.ndarray, pts: np.ndarray, rng: np.random.Generator) -> float:
    """Paint one object in a style the trained splits never use; returns how far paint reaches past the polygon."""
    size = img.shape[0]
    mask = np.zeros((size, size), np.uint8)
    kind = int(rng.integers(0, 4))
    # The style is harder, not unfair: an object's main colour stands out from what lies under it.
    under = cv2.fillPoly(np.zeros((size, size), np.uint8), [pts], 255, cv2.LINE_AA, shift=4) > 0
    ground = float(img[under].mean()) if under.any() else 128.0
    for _attempt in range(12):
        a = _hsv_color(rng, (0.35, 1.0), (0.2, 1.0))
        if abs(float(np.mean(a)) - ground) > 50:
            break
    b = _hsv_color(rng, (0.35, 1.0), (0.2, 1.0))
    reach = 0.0
    if kind == 0:  # outline only: the inside shows the background
        thickness = int(rng.integers(2, 6))
        cv2.polylines(mask, [pts], True, 255, thickness, cv2.LINE_AA, shift=4)
        paint = np.broadcast_to(np.array(a, np.float32), (size, size, 3))
        reach = thickness / 2
    else:
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, shift=4)
        u, _ = _grid(size, rng)
        if kind == 1:  # linear gradient from one side of the object to the other
            inside = u[mask > 0]
            start, span = (float(inside.min()), float(np.ptp(inside))) if inside.size else (0.0, 1.0)
            pattern = np.clip((u - start) / (span + 1e-6), 0, 1)
        elif kind == 2:  # stripes
            pattern = (np.sin(2 * np.pi * u / rng.uniform(3, 10)) > 0).astype(np.float32)
        else:  # coarse noise texture: a and a darker a, so the object stays one colour family
            cells = max(2, size // int(rng.integers(2, 6)))
            pattern = cv2.resize(rng.uniform(0, 1, (cells, cells)).astype(np.float32), (size, size),
                                 interpolation=cv2.INTER_NEAREST)
            b = tuple(int(c * rng.uniform(0.3, 0.6)) for c in a)
        paint = _two_tone(pattern, a, b)
    alpha = mask.astype(np.float32)[..., None] / 255
    img[:] = np.clip(img * (1 - alpha) + paint * alpha, 0, 255).astype(np.uint8)
    return reach


def _shift_aspects(rng: np.random.Generator, forced: Iterable[str] | None) -> frozenset[str]:
    """Which aspects of this image leave the trained style.

    By default a random non-empty subset (each aspect with probability 1/2, about two per image): the
    split then grades a model by how much novelty it survives instead of bottoming out, and the
    ablation in tools/demo_shift.py gives each aspect's own cost. The draw is made even when `forced`
    overrides it, so that the streams drawn after it stay the split's.
    """
    while not (picked := rng.random(len(SHIFT_ASPECTS)) < 0.5).any():
        pass
    if forced is None:
        return frozenset(a for a, p in zip(SHIFT_ASPECTS, picked) if p)
    unknown = set(forced) - set(SHIFT_ASPECTS)
    if unknown:
        raise DataError(f"unknown demo shift aspect(s) {', '.join(sorted(unknown))} (known: {', '.join(SHIFT_ASPECTS)})")
    return frozenset(forced)


def _render_shifted(task: str, cfg: TaskConfig, rng: np.random.Generator,
                    forced: Iterable[str] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene of a shifted split: same classes, box convention and camera, some aspects restyled."""
    aspects = _shift_aspects(rng, forced)
    # One stream per part, so restyling one aspect leaves the others' draws alone: an ablation then
    # shows the same objects (unless it restyles size), background and camera as the split.
    ground, back, layout, paint, front, camera = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 6))
    size = cfg.image_size
    lo, hi, max_objects = SHIFT_OBJECTS[task] if "size" in aspects else (cfg.min_object, cfg.max_object,
                                                                         cfg.max_objects)
    img = (_shift_background if "background" in aspects else _background)(size, ground)
    if "clutter" in aspects:
        _clutter(img, back, int(back.integers(8, 20)))
        _distractors(img, back, int(back.integers(2, 7)), int(back.integers(0, 5)))
    else:
        _clutter(img, back, int(back.integers(2, 10)))
    fill = _shift_fill if "fill" in aspects else _flat_fill
    n = 1 if max_objects == 1 else int(layout.integers(1, max_objects + 1))
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(n):
        label = int(layout.integers(0, len(CLASSES)))
        placed = _place_object(label, lo, hi, size, max_objects == 1, boxes, layout)
        if placed is None:
            continue
        poly, box = placed
        reach = fill(img, np.round(poly * 16).astype(np.int32), paint)
        boxes.append(np.concatenate([box[:2] - reach, box[2:] + reach]).clip(0, size))
        labels.append(label)
    if "clutter" in aspects:  # in front of objects
        _distractors(img, front, int(front.integers(1, 4)), int(front.integers(0, 2)))
    else:
        _clutter(img, front, int(front.integers(0, 3)))
    return _finish(img, camera, boxes, labels)


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
