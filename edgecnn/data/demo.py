"""A deterministic, realistic-enough demo data set, generated on first use.

Public data sets cannot be downloaded everywhere edgecnn runs (CI, air-gapped
build machines), so the demo models are trained and evaluated on synthetic
scenes: five shape classes at varied scale, aspect, rotation and colour, with
partial occlusion, clutter, textured backgrounds, noise and blur.

Every image is drawn from its own random stream seeded by (version, split,
index), so the set is the same bytes every time and any image can be
regenerated alone. Detection is written as COCO JSON, classification as class
folders: the demo set goes through the same loaders as a user's data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgecnn.data.dataset import ClassificationDataset, DetectionDataset, Task
from edgecnn.errors import DataError
from edgecnn.paths import cache_dir

VERSION = 1
CLASSES = ["ellipse", "triangle", "rectangle", "star", "cross"]
SPLITS = ("train", "val", "calibration")
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}
_JPEG_QUALITY = 92


@dataclass(frozen=True)
class TaskConfig:
    image_size: int
    counts: dict[str, int]
    min_object: int  # longest side of an object in pixels
    max_object: int
    max_objects: int


CONFIGS = {
    Task.DETECTION: TaskConfig(224, {"train": 2000, "val": 300, "calibration": 300}, 28, 120, 4),
    Task.CLASSIFICATION: TaskConfig(128, {"train": 2000, "val": 500, "calibration": 250}, 56, 116, 1),
}


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


def render_scene(task: str, split: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image: (RGB uint8 image, boxes (N,4) xyxy float32, labels (N,) int64)."""
    cfg = CONFIGS[task]
    rng = np.random.default_rng([VERSION, 7 if task == Task.DETECTION else 11, _SPLIT_IDS[split], index])
    size = cfg.image_size
    img = _background(size, rng)
    _clutter(img, rng, int(rng.integers(2, 10)))
    n = 1 if cfg.max_objects == 1 else int(rng.integers(1, cfg.max_objects + 1))
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(n):
        label = int(rng.integers(0, len(CLASSES)))
        for _attempt in range(20):
            obj = float(np.exp(rng.uniform(np.log(cfg.min_object), np.log(cfg.max_object))))
            margin = obj / 2 + 1
            if cfg.max_objects == 1:  # classification: roughly centred, like a crop
                center = size / 2 + rng.uniform(-0.12, 0.12, 2) * size
                center = np.clip(center, margin, size - margin)
            else:
                center = rng.uniform(margin, size - margin, 2)
            poly = _object_polygon(CLASSES[label], obj, center, rng)
            box = np.concatenate([poly.min(0), poly.max(0)]).clip(0, size)
            # Occlusion is allowed but bounded, so every object stays identifiable.
            if all(_overlap(box, b) < 0.3 for b in boxes):
                break
        else:
            continue
        color = _hsv_color(rng, (0.45, 1.0), (0.3, 1.0))
        pts = np.round(poly * 16).astype(np.int32)  # 4 fractional bits for anti-aliased edges
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA, shift=4)
        if rng.random() < 0.4:
            edge = _hsv_color(rng, (0.0, 0.5), (0.0, 0.35))
            cv2.polylines(img, [pts], True, edge, int(rng.integers(1, 3)), cv2.LINE_AA, shift=4)
        boxes.append(box)
        labels.append(label)
    _clutter(img, rng, int(rng.integers(0, 3)))  # a few strokes in front of objects
    out = img.astype(np.float32)
    out = out * rng.uniform(0.75, 1.2) + rng.uniform(-20, 20)  # exposure
    out += rng.normal(0, rng.uniform(1, 7), out.shape)
    blur = rng.uniform(0, 1.3)
    if blur > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    img = np.clip(out, 0, 255).astype(np.uint8)
    box_arr = np.array(boxes, np.float32).reshape(-1, 4)
    return img, box_arr, np.array(labels, np.int64)


# ---------------------------------------------------------------------------- writing


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise DataError(f"cannot encode demo image {path}")
    path.write_bytes(buf.tobytes())


def _generate_detection(root: Path, split: str, count: int) -> None:
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]}
    for i in range(count):
        img, boxes, labels = render_scene(Task.DETECTION, split, i)
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


def _generate_classification(root: Path, split: str, count: int) -> None:
    for c in CLASSES:
        (root / c).mkdir(parents=True)
    for i in range(count):
        img, _, labels = render_scene(Task.CLASSIFICATION, split, i)
        _write_jpeg(root / CLASSES[int(labels[0])] / f"{split}_{i:05d}.jpg", img)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def generate(task: str, split: str, dest: Path, count: int | None = None) -> Path:
    """Write one split of the demo set into `dest` (which must not exist yet)."""
    if task not in CONFIGS:
        raise DataError(f"unknown demo task {task!r} (known: {', '.join(CONFIGS)})")
    if split not in SPLITS:
        raise DataError(f"unknown demo split {split!r} (known: {', '.join(SPLITS)})")
    count = CONFIGS[task].counts[split] if count is None else count
    if task == Task.DETECTION:
        _generate_detection(dest, split, count)
    else:
        _generate_classification(dest, split, count)
    manifest = {"generator": "edgecnn.data.demo", "version": VERSION, "task": task, "split": split,
                "count": count, "classes": CLASSES, "sha256": _tree_digest(dest)}
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
