"""Drawing primitives shared by the demo set's trained style (edgecnn.data.demo) and its shifted style
(edgecnn.data.demo_shift): class outlines, placement, textured backgrounds, clutter and camera effects.

Every function draws from the random stream it is given, in a fixed order: the demo images are defined
by these draws, so reordering them changes every image.
"""

from __future__ import annotations

import cv2
import numpy as np

CLASSES = ["ellipse", "triangle", "rectangle", "star", "cross"]


def unit_polygon(cls: str, rng: np.random.Generator) -> np.ndarray:
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


def object_polygon(cls: str, size: float, center: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Place a unit outline: aspect, rotation, scale to `size` (longest side), then translate."""
    pts = unit_polygon(cls, rng)
    aspect = np.exp(rng.uniform(-0.4, 0.4))
    pts = pts * np.array([aspect, 1 / aspect])
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = pts @ rot.T
    extent = (pts.max(0) - pts.min(0)).max()
    pts = (pts - (pts.max(0) + pts.min(0)) / 2) * (size / extent)
    return pts + center


def hsv_color(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> tuple[int, int, int]:
    """An RGB colour of random hue, saturation and value drawn from the `sat` and `val` ranges (0..1)."""
    hsv = np.uint8([[[rng.integers(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Low-saturation texture: colour gradient + low-frequency noise + fine grain."""
    base = np.array(hsv_color(rng, (0.05, 0.35), (0.35, 0.8)), np.float32)
    other = np.array(hsv_color(rng, (0.05, 0.35), (0.35, 0.8)), np.float32)
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


def clutter(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Thin lines, arcs and dots: edges that are not objects."""
    size = img.shape[0]
    for _ in range(count):
        color = hsv_color(rng, (0.0, 0.6), (0.15, 0.95))
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


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box: how much of one object the other can hide."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller if smaller > 0 else 0.0


def place_object(label: int, lo: float, hi: float, size: int, centred: bool, boxes: list[np.ndarray],
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
        poly = object_polygon(CLASSES[label], obj, center, rng)
        box = np.concatenate([poly.min(0), poly.max(0)]).clip(0, size)
        # Occlusion is allowed but bounded, so every object stays identifiable.
        if all(overlap(box, b) < 0.3 for b in boxes):
            return poly, box
    return None


def flat_fill(img: np.ndarray, pts: np.ndarray, rng: np.random.Generator) -> float:
    """The trained style's paint: one saturated colour, sometimes a thin dark edge; paints inside the polygon."""
    cv2.fillPoly(img, [pts], hsv_color(rng, (0.45, 1.0), (0.3, 1.0)), cv2.LINE_AA, shift=4)
    if rng.random() < 0.4:
        edge = hsv_color(rng, (0.0, 0.5), (0.0, 0.35))
        cv2.polylines(img, [pts], True, edge, int(rng.integers(1, 3)), cv2.LINE_AA, shift=4)
    return 0.0


def finish(img: np.ndarray, rng: np.random.Generator, boxes: list,
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
