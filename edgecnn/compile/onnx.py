"""ONNX backend: an .onnx file run by onnxruntime with the target's execution provider.

Keras models are exported with tf2onnx (NHWC input named "input", free batch);
int8 is a QDQ model from edgecnn.quantize; a given .onnx is bundled as it is.
CPU boards run CPUExecutionProvider; Jetson targets ask for TensorRT with CUDA
and CPU behind it (onnxruntime falls back per node). The file is portable, so
it is verified on the host (CPUExecutionProvider) with the same bytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgecnn.artifacts import TensorSpec
from edgecnn.compile.cache import tool_versions
from edgecnn.compile.job import Built, Compiler, Job, check_file_precision
from edgecnn.errors import ModelError
from edgecnn.kinds import Backend, Precision

MODEL_FILE = "model.onnx"
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
           "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def check(job: Job) -> None:
    """Refuse what this backend cannot build, before any heavy work."""
    if job.source.kind == "tflite":
        raise ModelError(f"{job.source.ref} is a TFLite flatbuffer; edgecnn has no TFLite->ONNX converter: give the "
                         "Keras or ONNX model, or use --backend tflite")
    check_file_precision(job.source, job.precision, "onnx")


def tools(job: Job) -> dict[str, str]:
    dists = ["onnx", "onnxruntime"]
    if job.source.kind == "keras":
        dists += ["tf2onnx", "tensorflow", "tensorflow-cpu"]
    return tool_versions(dists)


def providers(target) -> dict:
    """The backend options (execution provider, threads) the runner must honour on this target."""
    if target.gpu is not None:
        return {"execution_provider": "TensorrtExecutionProvider",
                "fallback_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"], "threads": target.cores}
    return {"execution_provider": "CPUExecutionProvider", "threads": target.cores}


def build(job: Job, out: Path, work: Path) -> Built:
    """Write model.onnx into `out` and describe it."""
    src, info = job.source, {}
    if job.precision == "int8" and src.precision != "int8":
        from edgecnn.compile.job import quantize_int8

        path, info = quantize_int8(job, "onnx", work)
    elif src.kind == "onnx":
        path = src.path
    else:
        from edgecnn.frameworks.tf import onnx_float

        job.log(f"onnx: exporting {src.name} with tf2onnx")
        path = onnx_float(src.keras_model, work / "float.onnx")
    shutil.copyfile(path, out / MODEL_FILE)
    inputs, outputs = tensor_specs(out / MODEL_FILE)
    return Built({"model": MODEL_FILE}, inputs, outputs, providers(job.target), tools(job), info)


def tensor_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs as onnxruntime sees them; free dimensions are -1."""
    from edgecnn.frameworks.ort import session

    sess = session(path)

    def spec(v) -> TensorSpec:
        shape = [d if isinstance(d, int) else -1 for d in v.shape]
        return TensorSpec(v.name, shape, _DTYPES.get(v.type, v.type), "NHWC" if len(shape) == 4 else "")

    return [spec(v) for v in sess.get_inputs()], [spec(v) for v in sess.get_outputs()]


def host_runner(bundle_dir: Path, built: Built):
    """The bundle's own file under onnxruntime's CPU provider on this machine."""
    from edgecnn.frameworks.ort import predictor

    return predictor(bundle_dir / built.files["model"])


class OnnxCompiler(Compiler):
    """ONNX files for onnxruntime: fp32, or QDQ int8 through edgecnn.quantize."""

    name = Backend.ONNX.value
    precisions = (Precision.FP32.value, Precision.INT8.value)
    precision_advice = {
        Precision.FP16.value: "the onnx backend builds fp32 and int8; for fp16 use --backend tflite (float16 weights)"}

    def check(self, job: Job) -> None:
        check(job)

    def tools(self, job: Job) -> dict[str, str]:
        return tools(job)

    def build(self, job: Job, out: Path, work: Path) -> Built:
        return build(job, out, work)

    def host_runner(self, folder: Path, built: Built):
        return host_runner(folder, built)


COMPILER = OnnxCompiler()
