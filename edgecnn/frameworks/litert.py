"""LiteRT on the PC side: one way to load a .tflite (bytes or path), run it on a batch, and read its tensors.

The predictor feeds images one at a time and (de)quantizes int8 inputs and
outputs with edgecnn.runner.tensors, the code the board's runner uses, so a
host check sees the numbers the board will. No TensorFlow here: ai-edge-litert
alone reads and runs flatbuffers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgecnn.errors import ModelError
from edgecnn.frameworks import quiet
from edgecnn.kinds import Precision


def _content(model: bytes | Path | str) -> dict:
    return {"model_content": model} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}


def interpreter(model: bytes | Path | str, threads: int = 1, delegates: bool = True, keep_tensors: bool = False):
    """A LiteRT Interpreter with its tensors allocated; ModelError for a file LiteRT cannot load.

    delegates=False runs the built-in kernels without XNNPACK, so the op list shows
    the model's own ops rather than one DELEGATE node; keep_tensors keeps every
    intermediate tensor readable after invoke() (calibration statistics).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with quiet():  # 'INFO: Created TensorFlow Lite XNNPACK delegate' on every load
            it = Interpreter(**_content(model), num_threads=threads, experimental_op_resolver_type=resolver,
                             experimental_preserve_all_tensors=keep_tensors)
            it.allocate_tensors()
        return it
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"LiteRT cannot load the TFLite model: {e}") from None


def predictor(model: bytes | Path | str, threads: int = 1) -> Callable[[np.ndarray], list[np.ndarray]]:
    """batch (N, H, W, 3) float32 -> list of float32 outputs, image by image; int8 inputs/outputs (de)quantized."""
    from edgecnn.runner.tensors import per_image, to_float, to_integer

    it = interpreter(model, threads)
    inp = it.get_input_details()[0]
    outs = it.get_output_details()

    def one(x: np.ndarray) -> list[np.ndarray]:
        if inp["dtype"] != np.float32:
            x = to_integer(x, inp["dtype"], *inp["quantization"])
        it.set_tensor(inp["index"], x)
        it.invoke()
        results = []
        for d in outs:
            y = it.get_tensor(d["index"])
            results.append(to_float(y, *d["quantization"]) if d["dtype"] != np.float32 else y)
        return results

    return lambda batch: per_image(one, batch)


def output_names(model: bytes | Path | str) -> list[str]:
    """The output tensor names LiteRT reports, in output order."""
    return [d["name"] for d in interpreter(model).get_output_details()]


def precision(model: bytes | Path | str) -> str:
    """"int8" when any tensor is int8/uint8 with a scale, "fp16" for float16 weights, else "fp32"."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(**_content(model))  # tensor details need no allocation
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"LiteRT cannot read the TFLite model: {str(e).splitlines()[0]}") from None
    kinds = set()
    for d in it.get_tensor_details():
        scales = d.get("quantization_parameters", {}).get("scales")
        if d["dtype"] in (np.int8, np.uint8) and scales is not None and len(scales):
            kinds.add(Precision.INT8.value)
        elif d["dtype"] == np.float16:
            kinds.add(Precision.FP16.value)
    for p in (Precision.INT8.value, Precision.FP16.value):
        if p in kinds:
            return p
    return Precision.FP32.value
