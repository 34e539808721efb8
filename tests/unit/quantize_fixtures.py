"""Tiny models and images for the quantization tests: a colour classifier whose fp32 answer is known.

Images are 32x32 and dominated by one colour channel; the model is a 1x1
convolution (identity), global average pooling and a dense layer, so its
fp32 top-1 on these images is 100%. `fragile=True` shrinks the class logits
to a few thousandths next to a fourth logit at -100: one per-tensor int8 scale
cannot tell them apart, so int8 accuracy collapses (a real, not faked, loss).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

CLASSES = ["a_red", "b_green", "c_blue", "d_none"]
SIZE = 32
PREPROCESSING = {"size": [SIZE, SIZE], "scale": 1 / 255, "offset": 0.0}


def color_image(rng: np.random.Generator, label: int) -> np.ndarray:
    img = rng.integers(20, 90, (SIZE, SIZE, 3)).astype(np.uint8)
    if label < 3:
        img[..., label] = rng.integers(150, 250, (SIZE, SIZE))
    return img


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())


def make_calibration(folder: Path, count: int, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(count):
        write_png(folder / f"c{i:03d}.png", color_image(rng, i % 3))
    return folder


def make_val(folder: Path, per_class: int = 4, seed: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        for i in range(per_class if label < 3 else 1):
            write_png(folder / name / f"v{i:03d}.png", color_image(rng, label))
    return folder


def color_model(fragile: bool = False, channels: int = 3, size: int = SIZE):
    import keras

    inp = keras.Input((size, size, channels), name="image")
    x = keras.layers.Conv2D(3, 1, name="mix")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inp, out, name="colors")
    eye = np.zeros((1, 1, channels, 3), np.float32)
    for c in range(min(3, channels)):
        eye[0, 0, c, c] = 1.0
    model.get_layer("mix").set_weights([eye, np.zeros(3, np.float32)])
    gain, dead = (0.01, -100.0) if fragile else (10.0, -5.0)
    w = np.zeros((3, 4), np.float32)
    w[:3, :3] = np.eye(3) * gain
    model.get_layer("logits").set_weights([w, np.array([0, 0, 0, dead], np.float32)])
    return model


def save_model(folder: Path, model, name: str = "colors", sidecar: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.keras"
    model.save(path)
    if sidecar:
        (folder / f"{name}.json").write_text(json.dumps(
            {"task": "classification", "classes": CLASSES, "preprocessing": PREPROCESSING}))
    return path
