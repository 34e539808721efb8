"""Calibration data through one narrow protocol: an iterable of {input_name: ndarray} batches.

Backends adapt it to their own calibrator: TFLite's representative data set
(a generator of input lists) and onnxruntime's CalibrationDataReader (get_next).
Images are decoded and preprocessed once, with the model's own preprocessing,
so every calibration pass and every backend sees the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from edgecnn.data.calibration import RECOMMENDED_MINIMUM, CalibrationSet
from edgecnn.data.preprocess import Preprocessing
from edgecnn.errors import DataError


@dataclass(frozen=True)
class CalibrationData:
    """Preprocessed calibration images (N, H, W, 3) float32, fed one image per batch in the model's layout."""

    name: str
    input_name: str
    images: np.ndarray
    paths: tuple[Path, ...]
    layout: str = "NHWC"  # the model input's layout: NCHW models get each batch transposed

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        from edgecnn.runner.tensors import to_layout

        for i in range(len(self.images)):
            yield {self.input_name: np.ascontiguousarray(to_layout(self.images[i:i + 1], self.layout))}

    @property
    def too_small(self) -> bool:
        return len(self.images) < RECOMMENDED_MINIMUM

    def renamed(self, input_name: str, layout: str | None = None) -> "CalibrationData":
        """The same images keyed by another input name (each backend names its input its own way)."""
        return CalibrationData(self.name, input_name, self.images, self.paths, layout or self.layout)

    def representative_dataset(self):
        """TFLite's form: a factory of generators yielding [input array] per sample."""
        def gen():
            for batch in self:
                yield [batch[self.input_name]]
        return gen

    def ort_reader(self):
        """onnxruntime's form: a CalibrationDataReader over the same batches (new one per pass)."""
        from onnxruntime.quantization import CalibrationDataReader

        data = self

        class _Reader(CalibrationDataReader):
            """Also a strided reader (len, set_range): onnxruntime's CalibStridedMinMax then calibrates a few
            images at a time and merges their ranges, instead of holding every intermediate tensor of every
            image (a 736x736 text detector's 20 images took 23 GB at once)."""

            def __init__(self) -> None:
                self._range = (0, len(data))
                self._it = self._batches()

            def _batches(self):
                for i in range(*self._range):
                    yield {data.input_name: np.ascontiguousarray(to_layout(data.images[i:i + 1], data.layout))}

            def __len__(self) -> int:
                return len(data)

            def set_range(self, start_index: int, end_index: int) -> None:
                self._range = (start_index, min(end_index, len(data)))
                self._it = self._batches()

            def get_next(self):
                return next(self._it, None)

            def rewind(self) -> None:
                self._it = self._batches()

        from edgecnn.runner.tensors import to_layout

        return _Reader()

    def calibration_stride(self, most: int = 4) -> int:
        """Images calibrated at once: the largest divisor of the set's size up to `most` (onnxruntime needs
        the size to be a multiple of the stride)."""
        return max(d for d in range(1, min(most, len(self)) + 1) if len(self) % d == 0)


def build_calibration(calib: CalibrationSet, preprocessing: Preprocessing, input_name: str = "input",
                      limit: int | None = None) -> CalibrationData:
    """Decode and preprocess the images of a calibration set; DataError naming the first bad image."""
    paths = list(calib.images if limit is None else calib.images[:limit])
    if not paths:
        raise DataError(f"calibration set '{calib.name}' has no images")
    h, w = preprocessing.size
    images = np.empty((len(paths), h, w, 3), np.float32)
    for i, path in enumerate(paths):
        try:
            images[i] = preprocessing(path)[0][0]
        except DataError as e:
            raise DataError(f"calibration set '{calib.name}': {e}") from None
    return CalibrationData(calib.name, input_name, images, tuple(paths))


def check_disjoint(calib: CalibrationData, val_paths: Sequence[Path]) -> None:
    """DataError when validation would reuse calibration images (then it proves nothing)."""
    seen = {p.resolve() for p in calib.paths}
    shared = [p for p in val_paths if Path(p).resolve() in seen]
    if shared:
        raise DataError(f"the validation set shares {len(shared)} image(s) with calibration set '{calib.name}' "
                        f"(e.g. {shared[0]}); validate on held-out images")
