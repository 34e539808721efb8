"""Framework glue: the one place that talks to TensorFlow's converters, LiteRT, onnxruntime and tf2onnx.

    tf      Keras -> TFLite (fp32, fp16, any converter setting) and Keras -> ONNX, with their errors
    litert  a LiteRT interpreter from bytes or a path, a batch predictor, tensor facts of a .tflite
    ort     an onnxruntime session from bytes or a path, a batch predictor, output names

The stages (quantize, compile, prune) load and run model files through these and
nothing else. Each module imports its framework inside the functions that need
it, so importing edgecnn.frameworks costs nothing. The board-side runner does not
use this package (it must run without TensorFlow); what both share, the int8
(de)quantization and the image-by-image loop, lives in edgecnn.runner.tensors;
the log filter both use lives in edgecnn.logfilter.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

from edgecnn.logfilter import native_logs
from edgecnn.paths import raise_if_stopped


@contextlib.contextmanager
def quiet(stderr: bool = True):
    """Keep stdout for results and stderr for edgecnn's own lines while a framework runs.

    Keras' export prints every captured variable and the C++ side writes to file
    descriptor 1 directly, so descriptor 1 goes to /dev/null, not only sys.stdout.
    With stderr=True descriptor 2 goes through edgecnn.logfilter, the one filter
    the CLI and the runner use too: the delegate banner, the quantizer's settings
    and absl's lines are dropped, any other line (a real error) still shows.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        with native_logs() if stderr else contextlib.nullcontext(), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        raise_if_stopped()  # an interrupt the framework caught and carried on from still stops the command
