"""ONNX backend: an .onnx file run by onnxruntime with the target's execution provider.

Keras models are exported with tf2onnx (NHWC input named "input", free batch);
int8 is a QDQ model from edgecnn.quantize; a given .onnx is bundled as it is.
CPU boards run CPUExecutionProvider; Jetson targets ask for TensorRT with CUDA
and CPU behind it (onnxruntime falls back per node). The file is portable, so
it is verified on the host (CPUExecutionProvider) with the same bytes.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from edgecnn.artifacts import TensorSpec
from edgecnn.compile.cache import tool_versions
from edgecnn.compile.job import Built, Compiler, Job, check_file_precision
from edgecnn.errors import ModelError
from edgecnn.kinds import Backend, Precision

MODEL_FILE = "model.onnx"
# What tf2onnx makes of a .tflite: float16 weights become float32 constants, int8 becomes a QDQ graph.
TFLITE_TO_ONNX = {"fp32": "fp32", "fp16": "fp32", "int8": "int8"}
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
           "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def check(job: Job) -> None:
    """Refuse what this backend cannot build, before any heavy work."""
    src = job.source
    if src.kind == "tflite":
        made = TFLITE_TO_ONNX[src.precision]
        if job.precision != made:
            raise ModelError(f"{Path(src.ref).name} ({src.precision}) converts to a {made} ONNX model: compile it "
                             f"with --precision {made}" + (", or quantize it with --backend tflite --precision int8"
                                                           if job.precision == "int8" else ""))
        return
    check_file_precision(src, job.precision, "onnx")


def tools(job: Job) -> dict[str, str]:
    dists = ["onnx", "onnxruntime"]
    if job.source.kind in ("keras", "tflite"):
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
    elif src.kind == "tflite":
        from edgecnn.frameworks.convert import tflite_to_onnx

        # tf2onnx reads TFLite: float16 weights become float32 constants, int8 becomes QDQ.
        job.log(f"onnx: converting {src.name} from TFLite with tf2onnx")
        path = tflite_to_onnx(src.path, work / "from-tflite.onnx")
    else:
        from edgecnn.frameworks.tf import onnx_float

        job.log(f"onnx: exporting {src.name} with tf2onnx")
        path = onnx_float(src, work / "float.onnx")
    shutil.copyfile(path, out / MODEL_FILE)
    inputs, outputs = tensor_specs(out / MODEL_FILE, src.layout)
    if src.kind == "tflite" and src.precision == "int8":
        inputs, outputs = _tflite_quantization(src.path, inputs, outputs)
    return Built({"model": MODEL_FILE}, inputs, outputs, {**providers(job.target), **_optimisers(out / MODEL_FILE)},
                 tools(job), info)


def _optimisers(model: Path) -> dict:
    """The graph optimisers the model asks onnxruntime to run without (quantize's speed check), for the runner."""
    from edgecnn.frameworks.ort import disabled_optimizers

    names = disabled_optimizers(model)
    return {"disabled_optimizers": names} if names else {}


def _tflite_quantization(tflite: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]):
    """The int8 inputs/outputs of a converted .tflite keep its scale and zero point (ONNX has no place for them)."""
    from dataclasses import replace

    from edgecnn.compile.tflite import tensor_specs as tflite_specs

    t_in, t_out = tflite_specs(tflite.read_bytes())

    def carry(ours: list[TensorSpec], theirs: list[TensorSpec]) -> list[TensorSpec]:
        return [replace(o, scale=t.scale, zero_point=t.zero_point) if t.scale is not None else o
                for o, t in zip(ours, theirs)]

    return carry(inputs, t_in), carry(outputs, t_out)


def tensor_specs(path: Path, layout: str = "NHWC") -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs as onnxruntime sees them; free dimensions are -1; image inputs in `layout`."""
    from edgecnn.frameworks.ort import session

    sess = session(path)

    def spec(v) -> TensorSpec:
        shape = [d if isinstance(d, int) else -1 for d in v.shape]
        return TensorSpec(v.name, shape, _DTYPES.get(v.type, v.type), layout if len(shape) == 4 else "")

    return [spec(v) for v in sess.get_inputs()], [spec(v) for v in sess.get_outputs()]


def host_runner(bundle_dir: Path, built: Built):
    """The bundle's own file under onnxruntime's CPU provider on this machine."""
    from edgecnn.frameworks.ort import predictor

    return predictor(bundle_dir / built.files["model"], layout=built.inputs[0].layout)


class OnnxCompiler(Compiler):
    """ONNX files for onnxruntime: fp32, or QDQ int8 through edgecnn.quantize."""

    name = Backend.ONNX.value
    precisions = (Precision.FP32.value, Precision.INT8.value)
    formats = ("keras", "onnx")
    precision_advice = {
        Precision.FP16.value: "the onnx backend builds fp32 and int8; for fp16 use --backend tflite (float16 weights)"}

    def made_from(self, source) -> str:
        return TFLITE_TO_ONNX[source.precision] if source.kind == "tflite" else super().made_from(source)

    def key_parts(self, job) -> dict:
        """int8: the activation/weight types chosen for the target (and, on x86, this machine's VNNI)."""
        if job.precision != Precision.INT8.value:
            return {}
        from edgecnn.quantize.onnx import quant_types

        return {"quant_types": quant_types(job.target.arch).settings()}


COMPILER = OnnxCompiler(sys.modules[__name__])
