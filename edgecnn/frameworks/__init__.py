"""Framework glue: the one place that talks to TensorFlow's converters, LiteRT, onnxruntime and tf2onnx.

    tf      Keras -> TFLite (fp32, fp16, any converter setting) and Keras -> ONNX, with their errors
    litert  a LiteRT interpreter from bytes or a path, a batch predictor, tensor facts of a .tflite
    ort     an onnxruntime session from bytes or a path, a batch predictor, output names

The stages (quantize, compile, prune) load and run model files through these and
nothing else. Each module imports its framework inside the functions that need
it, so importing edgecnn.frameworks costs nothing. The board-side runner does not
use this package (it must run without TensorFlow); what both share, the int8
(de)quantization and the image-by-image loop, lives in edgecnn.runner.tensors.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys


@contextlib.contextmanager
def quiet(stderr: bool = False):
    """Keep stdout for results: Keras' export prints every captured variable, the C++ quantizer its settings.

    The C++ side writes to file descriptor 1 directly, so redirect that, not only
    sys.stdout; with stderr=True descriptor 2 too (LiteRT's delegate banner).
    """
    fds = (1, 2) if stderr else (1,)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    try:
        with open(os.devnull, "wb") as null:
            for fd in fds:
                os.dup2(null.fileno(), fd)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        sys.stdout.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
