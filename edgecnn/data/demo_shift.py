"""The demo set's shifted style: what the "val-shift" split draws in place of the trained style.

In each image a non-empty subset of SHIFT_ASPECTS leaves the trained style (edgecnn.data.demo):
striped, checked, mosaic or dark backgrounds; outlined, gradient, striped or noisy fills; dense
clutter with scribbles and glyphs; a wider size range and more objects. Classes, box convention and
camera stay the trained ones (edgecnn.data.drawing).
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

from edgecnn.data.dataset import Task
from edgecnn.data.drawing import CLASSES, background, clutter, finish, flat_fill, hsv_color, place_object
from edgecnn.errors import DataError

# The shifted style's object sizes (longest side, pixels) and count: smaller and larger than the
# trained range, and more objects per image.
SHIFT_OBJECTS = {Task.DETECTION: (16, 168, 6), Task.CLASSIFICATION: (44, 124, 1)}
SHIFT_ASPECTS = ("background", "fill", "clutter", "size")


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
        img = _two_tone(cv2.GaussianBlur(pattern, (0, 0), 0.8), hsv_color(rng, (0.2, 0.7), (0.2, 0.9)),
                        hsv_color(rng, (0.2, 0.7), (0.2, 0.9)))
    elif kind == 1:
        cells = int(rng.integers(6, 20))
        tiles = np.stack([hsv_color(rng, (0.05, 0.45), (0.35, 0.85)) for _ in range(cells * cells)])
        img = cv2.resize(tiles.reshape(cells, cells, 3).astype(np.float32), (size, size),
                         interpolation=cv2.INTER_NEAREST)
    else:
        img = np.broadcast_to(np.array(hsv_color(rng, (0.0, 0.5), (0.04, 0.22)), np.float32),
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
        color = hsv_color(rng, (0.0, 1.0), (0.1, 1.0))
        cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, color, int(rng.integers(1, 6)),
                      cv2.LINE_AA, shift=4)
    for _ in range(glyphs):
        text = "".join(rng.choice(list(_GLYPHS), int(rng.integers(1, 4))))
        org = tuple(int(c) for c in rng.integers(0, size - 10, 2))
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.35, 1.1),
                    hsv_color(rng, (0.0, 1.0), (0.1, 1.0)), int(rng.integers(1, 3)), cv2.LINE_AA)


def _shift_fill(img: np.ndarray, pts: np.ndarray, rng: np.random.Generator) -> float:
    """Paint one object in a style the trained splits never use; returns how far paint reaches past the polygon."""
    size = img.shape[0]
    mask = np.zeros((size, size), np.uint8)
    kind = int(rng.integers(0, 4))
    # The style is harder, not unfair: an object's main colour stands out from what lies under it.
    under = cv2.fillPoly(np.zeros((size, size), np.uint8), [pts], 255, cv2.LINE_AA, shift=4) > 0
    ground = float(img[under].mean()) if under.any() else 128.0
    for _attempt in range(12):
        a = hsv_color(rng, (0.35, 1.0), (0.2, 1.0))
        if abs(float(np.mean(a)) - ground) > 50:
            break
    b = hsv_color(rng, (0.35, 1.0), (0.2, 1.0))
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


def render_shifted(task: str, size: int, trained_objects: tuple[int, int, int], rng: np.random.Generator,
                   forced: Iterable[str] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene of a shifted split: same classes, box convention and camera, some aspects restyled.

    `size` is the image side and `trained_objects` the trained style's (min size, max size, max count)
    of objects, used when "size" is not restyled; `forced`: see edgecnn.data.demo.render_scene.
    """
    aspects = _shift_aspects(rng, forced)
    # One stream per part, so restyling one aspect leaves the others' draws alone: an ablation then
    # shows the same objects (unless it restyles size), background and camera as the split.
    ground, back, layout, paint, front, camera = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 6))
    lo, hi, max_objects = SHIFT_OBJECTS[task] if "size" in aspects else trained_objects
    img = (_shift_background if "background" in aspects else background)(size, ground)
    if "clutter" in aspects:
        clutter(img, back, int(back.integers(8, 20)))
        _distractors(img, back, int(back.integers(2, 7)), int(back.integers(0, 5)))
    else:
        clutter(img, back, int(back.integers(2, 10)))
    fill = _shift_fill if "fill" in aspects else flat_fill
    n = 1 if max_objects == 1 else int(layout.integers(1, max_objects + 1))
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(n):
        label = int(layout.integers(0, len(CLASSES)))
        placed = place_object(label, lo, hi, size, max_objects == 1, boxes, layout)
        if placed is None:
            continue
        poly, box = placed
        reach = fill(img, np.round(poly * 16).astype(np.int32), paint)
        boxes.append(np.concatenate([box[:2] - reach, box[2:] + reach]).clip(0, size))
        labels.append(label)
    if "clutter" in aspects:  # in front of objects
        _distractors(img, front, int(front.integers(1, 4)), int(front.integers(0, 2)))
    else:
        clutter(img, front, int(front.integers(0, 3)))
    return finish(img, camera, boxes, labels)
