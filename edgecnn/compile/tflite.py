"""TFLite backend: a .tflite flatbuffer run by LiteRT with the XNNPACK delegate.

fp32 and fp16 come from TensorFlow's converter (fp16: float16 weights, which
XNNPACK computes in fp32 or, on cores with fp16 arithmetic, in fp16); int8
comes from edgecnn.quantize (full-integer, calibrated and validated). A given
.tflite file is bundled as it is. The flatbuffer is the same on every machine,
so the bundle is verified on the host with the very bytes the board loads.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from edgecnn.artifacts import TensorSpec
from edgecnn.compile.cache import tool_versions
from edgecnn.compile.job import Built, Compiler, Job, check_file_precision
from edgecnn.errors import ModelError
from edgecnn.kinds import Backend, Precision

MODEL_FILE = "model.tflite"


def check(job: Job) -> None:
    """Refuse what this backend cannot build, before any heavy work."""
    src = job.source
    if src.kind == "onnx" and src.precision != "fp32":
        raise ModelError(f"{src.ref} is a {src.precision} ONNX model; onnx2tf converts float graphs: use "
                         "--backend onnx for it, or give the float export")
    check_file_precision(src, job.precision, "tflite", converts_to=("fp16",) if src.kind == "onnx" else ())


def tools(job: Job) -> dict[str, str]:
    dists = ["ai-edge-litert"] + (["tensorflow", "tensorflow-cpu"] if job.source.kind == "keras" else [])
    if job.source.kind == "onnx":
        dists += ["onnx2tf", "tensorflow", "tensorflow-cpu"]
    if job.precision == "int8" and job.source.kind != "keras":
        dists += ["ai-edge-quantizer"]
    return tool_versions(dists)


def build(job: Job, out: Path, work: Path) -> Built:
    """Write model.tflite into `out` and describe it."""
    from edgecnn.frameworks.tf import tflite_float, tflite_fp16

    src, info = job.source, {}
    if job.precision == "int8" and src.precision != "int8":
        path, info = _quantized(job, work)
        shutil.copyfile(path, out / MODEL_FILE)
    elif src.kind == "tflite":
        shutil.copyfile(src.path, out / MODEL_FILE)
    elif src.kind == "onnx":
        from edgecnn.frameworks.convert import onnx_to_tflite

        job.log(f"tflite: converting {src.name} from ONNX with onnx2tf ({job.precision})")
        path = onnx_to_tflite(src.path, work / "onnx2tf", input_shape=src.static_shape, precision=job.precision,
                              layout=src.layout)
        shutil.copyfile(path, out / MODEL_FILE)
    else:
        job.log(f"tflite: converting {src.name} ({job.precision})")
        data = tflite_float(src) if job.precision == "fp32" else tflite_fp16(src)
        (out / MODEL_FILE).write_bytes(data)
    data = (out / MODEL_FILE).read_bytes()
    inputs, outputs = tensor_specs(data)
    options = {"delegate": "xnnpack", "threads": job.target.cores}
    return Built({"model": MODEL_FILE}, inputs, outputs, options, tools(job), info)


def _quantized(job: Job, work: Path):
    from edgecnn.compile.job import quantize_int8

    return quantize_int8(job, "tflite", work)


def tensor_specs(data: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs as LiteRT sees them, with int8 scale/zero-point."""
    from edgecnn.frameworks.litert import interpreter

    it = interpreter(data)

    def spec(d) -> TensorSpec:
        shape = [int(x) for x in d.get("shape_signature", d["shape"])]
        scale, zero = d["quantization"]
        quantized = np.dtype(d["dtype"]) in (np.dtype(np.int8), np.dtype(np.uint8)) and scale != 0
        return TensorSpec(d["name"], shape, np.dtype(d["dtype"]).name, "NHWC" if len(shape) == 4 else "",
                          float(scale) if quantized else None, int(zero) if quantized else None)

    return [spec(d) for d in it.get_input_details()], [spec(d) for d in it.get_output_details()]


def host_runner(bundle_dir: Path, built: Built):
    """The bundle's own file under LiteRT on this machine (int8 inputs/outputs (de)quantized as the runner does)."""
    from edgecnn.frameworks.litert import predictor

    return predictor((bundle_dir / built.files["model"]).read_bytes(), threads=1)


class TFLiteCompiler(Compiler):
    """LiteRT flatbuffers: fp32, fp16 weights, or full-integer int8 through edgecnn.quantize."""

    name = Backend.TFLITE.value
    precisions = (Precision.FP32.value, Precision.FP16.value, Precision.INT8.value)
    formats = ("keras", "tflite")


COMPILER = TFLiteCompiler(sys.modules[__name__])
