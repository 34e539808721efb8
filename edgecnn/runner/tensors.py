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
