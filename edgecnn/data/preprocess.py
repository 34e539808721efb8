"""Image loading, resizing and normalisation shared by calibration, evaluation and the board runner.

Only numpy and cv2 here: the same code runs on a Raspberry Pi next to a
compiled bundle, where TensorFlow is never installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgecnn.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class ResizeMode(str, Enum):
    STRETCH = "stretch"
    LETTERBOX = "letterbox"


class ColorOrder(str, Enum):
    RGB = "rgb"
    BGR = "bgr"


def _choice(enum: type[Enum], value: Any, what: str) -> Enum:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise DataError(f"unknown {what} {value!r}; expected one of: {allowed}") from None


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB, HxWx3 (grayscale, alpha and 16-bit files converted)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    # np.fromfile + imdecode rather than cv2.imread: imread cannot open non-ASCII paths on Windows.
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DataError(f"cannot decode image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Transform:
    """How `resize` mapped an image: input = original * scale + pad, per axis.

    source_size is the original (height, width), used to clip boxes mapped back.
    """

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    source_size: tuple[int, int]

    def boxes_to_input(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Original-image pixel boxes (N, 4) to model-input pixel boxes."""
        b = np.array(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        b[:, [0, 2]] = b[:, [0, 2]] * self.scale_x + self.pad_x
        b[:, [1, 3]] = b[:, [1, 3]] * self.scale_y + self.pad_y
        return b

    def boxes_to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Model-input pixel boxes (N, 4) to original-image pixels, clipped to the image."""
        b = np.array(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        height, width = self.source_size
        b[:, [0, 2]] = np.clip((b[:, [0, 2]] - self.pad_x) / self.scale_x, 0, width)
        b[:, [1, 3]] = np.clip((b[:, [1, 3]] - self.pad_y) / self.scale_y, 0, height)
        return b


def _check_size(size: Any) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
        ok = (h, w) == tuple(size) and h > 0 and w > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"input size must be two positive integers (height, width), got {size!r}")
    return h, w


def resize(
    image: np.ndarray,
    size: tuple[int, int],
    mode: str = "stretch",
    pad_value: int | tuple[int, ...] = 114,
) -> tuple[np.ndarray, Transform]:
    """Resize to size (h, w): "stretch" scales each axis, "letterbox" keeps aspect and pads.

    Returns the resized image and the Transform that maps boxes back.
    """
    h, w = _check_size(size)
    mode = _choice(ResizeMode, mode, "resize mode")
    src_h, src_w = image.shape[:2]
    if src_h == 0 or src_w == 0:
        raise DataError(f"cannot resize an empty image of shape {image.shape}")
    if mode is ResizeMode.STRETCH:
        out = image if (src_h, src_w) == (h, w) else _cv_resize(image, h, w)
        return out, Transform(w / src_w, h / src_h, 0, 0, (src_h, src_w))

    ratio = min(h / src_h, w / src_w)
    new_h = min(h, max(1, round(src_h * ratio)))
    new_w = min(w, max(1, round(src_w * ratio)))
    scaled = image if (src_h, src_w) == (new_h, new_w) else _cv_resize(image, new_h, new_w)
    pad_x, pad_y = (w - new_w) // 2, (h - new_h) // 2
    out = np.full((h, w) + image.shape[2:], pad_value, dtype=image.dtype)
    out[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = scaled
    # The real per-axis scales (after rounding), so boxes map back exactly.
    return out, Transform(new_w / src_w, new_h / src_h, pad_x, pad_y, (src_h, src_w))


def _cv_resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    # cv2 drops a trailing channel axis of size 1.
    return out.reshape((h, w) + image.shape[2:])


def normalize(image_uint8: np.ndarray, scale: Any, offset: Any, dtype: Any = np.float32) -> np.ndarray:
    """image * scale + offset; scale and offset are scalars or per-channel sequences.

    An integer dtype (a quantized model input) rounds and saturates to its range.
    """
    x = image_uint8.astype(np.float32) * np.asarray(scale, np.float32) + np.asarray(offset, np.float32)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return x.astype(dtype, copy=False)


def to_batch(x: np.ndarray) -> np.ndarray:
    """Add the leading batch axis: HxWxC -> 1xHxWxC, contiguous."""
    return np.ascontiguousarray(x[np.newaxis])


def _floats(value: Any, name: str) -> float | tuple[float, ...]:
    try:
        if np.ndim(value) == 0:
            return float(value)
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        values = ()
    if len(values) not in (1, 3):
        raise DataError(f"preprocessing {name} must be a number or 3 numbers (per channel), got {value!r}")
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects: input size (h, w), resize mode, x*scale+offset, channel order.

    Per-channel scale and offset are in the model's channel order (after any RGB->BGR swap).
    """

    size: tuple[int, int]
    mode: str = ResizeMode.STRETCH.value
    scale: float | tuple[float, ...] = 1 / 255
    offset: float | tuple[float, ...] = 0.0
    color: str = ColorOrder.RGB.value
    pad_value: int = 114

    def __post_init__(self) -> None:
        # Frozen: canonicalise (lists from JSON to tuples, enums to plain strings) via object.__setattr__.
        object.__setattr__(self, "size", _check_size(self.size))
        object.__setattr__(self, "mode", _choice(ResizeMode, self.mode, "resize mode").value)
        object.__setattr__(self, "color", _choice(ColorOrder, self.color, "color order").value)
        object.__setattr__(self, "scale", _floats(self.scale, "scale"))
        object.__setattr__(self, "offset", _floats(self.offset, "offset"))
        if not isinstance(self.pad_value, (int, np.integer)) or not 0 <= self.pad_value <= 255:
            raise DataError(f"preprocessing pad_value must be an integer in 0..255, got {self.pad_value!r}")

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (for bundle manifests)."""
        as_json = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
        return {f.name: as_json(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        """Inverse of to_dict; unknown or missing keys raise DataError."""
        if not isinstance(data, dict):
            raise DataError(f"preprocessing must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"preprocessing has unknown keys {unknown}; expected some of {sorted(known)}")
        if "size" not in data:
            raise DataError("preprocessing has no 'size' (height, width)")
        return cls(**data)

    def __call__(self, path_or_image: str | os.PathLike | np.ndarray) -> tuple[np.ndarray, Transform]:
        """A file path or uint8 RGB HxWx3 array -> (float32 batch 1xHxWx3, Transform)."""
        resized, transform = self.pixels(path_or_image)
        return to_batch(normalize(resized, self.scale, self.offset)), transform

    def pixels(self, path_or_image: str | os.PathLike | np.ndarray) -> tuple[np.ndarray, Transform]:
        """The resized uint8 HxWx3 image in the model's channel order, before x * scale + offset: what an
        integer-input model's pixel table (edgecnn.runner.tensors.PixelInput) takes."""
        if isinstance(path_or_image, (str, os.PathLike)):
            image = load_image(path_or_image)
        else:
            image = np.asarray(path_or_image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise DataError(
                    f"preprocessing expects a uint8 RGB HxWx3 image, got {image.dtype} shape {image.shape}"
                )
        if self.color == ColorOrder.BGR.value:
            image = image[..., ::-1]
        return resize(image, self.size, self.mode, self.pad_value)
