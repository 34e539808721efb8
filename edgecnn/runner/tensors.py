"""Float <-> integer tensors and the image-by-image loop: the one copy every model runner uses.

The runner's sessions (board side), the host predictors of edgecnn.frameworks
(validation, verification, prune timing) and anything else that feeds floats
to an int8-IO model goes through these, so the rounding and clipping of the
board are the rounding and clipping of every check on the PC. Stdlib and
numpy only: this module runs on the board and in the emulated guest.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def to_integer(x: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """Float values on the integer grid of (scale, zero_point): rounded half to even, clipped to dtype's range."""
    info = np.iinfo(dtype)
    q = np.clip(np.rint(np.asarray(x) / np.float32(scale) + zero_point), info.min, info.max)
    return np.ascontiguousarray(q, dtype=dtype)


def to_float(y: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer values back to float32: (y - zero_point) * scale, computed in float32."""
    return (np.asarray(y).astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def per_image(run: Callable[[np.ndarray], Sequence[np.ndarray]], batch: np.ndarray) -> list[np.ndarray]:
    """`run` on each image of `batch` as a batch of one; each output concatenated back over the batch."""
    parts = [run(batch[i:i + 1]) for i in range(len(batch))]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    """NHWC image batches (what preprocessing makes) in a model's input layout; anything else as it is."""
    if layout == "NCHW" and images.ndim == 4:
        return images.transpose(0, 3, 1, 2)
    return images


def pixel_table(scale, offset, dtype, qscale: float, zero_point: int) -> np.ndarray:
    """(3, 256): the integer input value of each 8-bit pixel value per channel, computed with the very
    float32 operations of the float path (x = pixel * scale + offset, then to_integer), so that looking the
    pixels up gives the same bytes as normalising and quantising them."""
    p = np.arange(256, dtype=np.uint8)[:, None]
    x = p.astype(np.float32) * np.asarray(scale, np.float32) + np.asarray(offset, np.float32)
    return np.ascontiguousarray(to_integer(np.broadcast_to(x, (256, 3)), dtype, qscale, zero_point).T)


def pixel_step_kind(table: np.ndarray) -> str:
    """How the table maps pixels: "xor" (int8 = pixel - 128, one XOR of the sign bit: an input scale of 1/255
    and no offset), "identity" (uint8 input = the pixels), else "lut" (one lookup per value)."""
    p = np.arange(256, dtype=np.uint8)
    if table.dtype == np.int8 and (table == (p ^ 0x80).view(np.int8)).all():
        return "xor"
    if table.dtype == np.uint8 and (table == p).all():
        return "identity"
    return "lut"


class PixelInput:
    """uint8 HxWx3 pixels (resized, in the model's channel order) -> the model's integer input batch, with no
    float round trip: the float path's x * scale + offset and quantisation folded into a table."""

    def __init__(self, table: np.ndarray):
        self.table = table
        self.kind = pixel_step_kind(table)
        try:  # OpenCV's LUT (SIMD, one pass for all three channels) where the board has it
            import cv2

            self._lut = cv2.LUT
            self._cv_table = np.ascontiguousarray(table.T.reshape(256, 1, 3)).view(np.uint8)
        except ImportError:
            self._lut = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"pixels must be uint8 HxWx3, got {image.dtype} {image.shape}")
        if self.kind == "xor":
            out = np.bitwise_xor(image, np.uint8(0x80)).view(np.int8)
        elif self.kind == "identity":
            out = image
        elif self._lut is not None:
            out = self._lut(np.ascontiguousarray(image), self._cv_table).view(self.table.dtype)
        else:
            out = np.empty(image.shape, self.table.dtype)
            for c in range(3):
                out[..., c] = np.take(self.table[c], image[..., c])
        return np.ascontiguousarray(out[None])
