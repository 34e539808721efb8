"""onnxruntime on the PC side: one way to open an .onnx (bytes or path) and run it on a batch.

Host checks run on CPUExecutionProvider with one inter-op thread, so a figure
depends on the model and the thread count alone. QDQ models take and give
floats, so nothing is (de)quantized here; a model with a fixed batch of one
is fed image by image with the runner's own loop (edgecnn.runner.tensors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgecnn.errors import ModelError

QUIET = 3  # onnxruntime's ERROR severity: its warnings about unused initializers are noise on every load


def session(model: bytes | Path | str, threads: int = 1):
    """An InferenceSession on the CPU provider; ModelError for a model onnxruntime cannot load."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = QUIET
    source = model if isinstance(model, (bytes, bytearray)) else str(model)
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except (RuntimeError, ValueError) as e:  # onnxruntime's Fail/InvalidGraph derive from RuntimeError
        raise ModelError(f"onnxruntime cannot load the model: {str(e).splitlines()[0]}") from None


def predictor(model: bytes | Path | str, threads: int = 1,
              layout: str = "NHWC") -> Callable[[np.ndarray], list[np.ndarray]]:
    """batch (N, H, W, 3) float32 images -> list of float32 outputs; in one call where the batch is free.

    layout: the model's input layout; an NCHW model gets the images transposed, as the runner does.
    """
    from edgecnn.runner.tensors import per_image, to_layout

    sess = session(model, threads)
    name = sess.get_inputs()[0].name
    fixed_batch = isinstance(sess.get_inputs()[0].shape[0], int)

    def run(batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(to_layout(np.asarray(batch, np.float32), layout))
        if not fixed_batch:
            return [np.asarray(o, np.float32) for o in sess.run(None, {name: batch})]
        return [o.astype(np.float32) for o in per_image(lambda x: sess.run(None, {name: x}), batch)]

    return run


def output_names(model: bytes | Path | str) -> list[str]:
    """The model's output names, in output order."""
    return [o.name for o in session(model).get_outputs()]
