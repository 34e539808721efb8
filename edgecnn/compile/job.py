"""What one compile works on: the source model with its data contract, and what a backend hands back.

The source is a zoo reference (with weights), a Keras file (.keras/.h5), an
.onnx or a .tflite file; the last three take preprocessing, task, classes and
head from a `<model>.json` sidecar. Its content hash (weights, graph and data
contract) is the first part of the bundle cache key, so a retrained model or an
edited sidecar never reuses an old bundle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgecnn.artifacts import TensorSpec, file_sha256
from edgecnn.errors import ModelError
from edgecnn.targets import Target

Log = Callable[[str], None]
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


@dataclass
class CompileSource:
    """A model to compile plus the contract it was trained under."""

    name: str  # bundle stem, e.g. "yolo_lite" or "mymodel"
    ref: str  # what the user gave
    kind: str  # "keras" | "onnx" | "tflite"
    task: str
    preprocessing: Any  # edgecnn.data.preprocess.Preprocessing
    classes: list[str] | None
    head: dict | None
    input_shape: tuple  # (N, H, W, C), None for free dims
    sha256: str
    weights: str | None = None  # zoo models: "demo", "random", "imagenet" or a path
    keras_model: Any = None
    path: Path | None = None  # .onnx / .tflite files
    precision: str = "fp32"  # what the given file already is: "fp32" | "fp16" | "int8"
    demo: bool = False
    macs: int | None = None
    params: int | None = None

    @property
    def static_shape(self) -> list[int]:
        """The input with batch 1: every backend here compiles for one image at a time."""
        return [1, *(int(d) if d is not None else -1 for d in self.input_shape[1:])]


@dataclass
class Job:
    """One compile request, resolved: everything a backend's build() needs."""

    source: CompileSource
    target: Target
    backend: str
    precision: str
    calib: str | Path | None = None
    tune: bool = False
    trials: int = 0
    log: Log = field(default=lambda _msg: None)


@dataclass
class Built:
    """What a backend wrote into the bundle folder and what the manifest must say about it."""

    files: dict[str, str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    runtime: dict[str, Any]
    tools: dict[str, str]
    build: dict[str, Any] = field(default_factory=dict)  # quantization / tuning facts
    reference: Any = None  # predictor (N,H,W,3) -> outputs that verification compares against; None: the source


def load_source(model: str | Path, weights: str | Path = "demo") -> CompileSource:
    """A zoo reference or model file -> CompileSource; ModelError for anything unreadable."""
    from edgecnn.zoo.files import model_format

    text = str(model)
    path = Path(text)
    if path.suffix.lower() == ".tflite" or (path.exists() and model_format(path) == "tflite"):
        return _tflite_source(path)
    from edgecnn.quantize.source import resolve_model

    src = resolve_model(model, weights=weights)
    if src.keras_model is not None:
        from edgecnn import zoo

        from_zoo = text.strip().partition(":")[0] in {s.name for s in zoo.list_models()} and not path.exists()
        digest = _keras_digest(src.keras_model, path if not from_zoo else None, src)
        macs, params = _keras_counts(src.keras_model)
        return CompileSource(src.name, text, "keras", src.task, src.preprocessing, src.classes, src.head,
                             tuple(src.input_shape), digest, str(weights) if from_zoo else None,
                             keras_model=src.keras_model, demo=src.demo, macs=macs, params=params)
    onnx_path = Path(src.onnx_path)
    digest = _digest(file_sha256(onnx_path), src)
    return CompileSource(src.name, text, "onnx", src.task, src.preprocessing, src.classes, src.head,
                         tuple(src.input_shape), digest, path=onnx_path, precision=onnx_precision(onnx_path),
                         params=_file_params(onnx_path))


def _tflite_source(path: Path) -> CompileSource:
    """.tflite files: quantize.source rejects them (nothing to quantize), compile takes them as they are."""
    from edgecnn.quantize.source import SIDECAR_HELP, _prep, _sidecar
    from edgecnn.zoo.files import inspect_model_file

    info = inspect_model_file(path)  # ModelError for a missing, empty or corrupt flatbuffer
    if len(info.inputs) != 1:
        raise ModelError(f"{path.name} has {len(info.inputs)} inputs; edgecnn compiles single-input image models")
    meta = _sidecar(path)
    if "preprocessing" not in meta:
        raise ModelError(f"no preprocessing for {path.name}: write {path.with_suffix('.json').name} next to it "
                         f"with {SIDECAR_HELP}")
    head = meta.get("head")
    task = meta.get("task") or ("detection" if head else "classification")
    src = CompileSource(path.name.split(".")[0], str(path), "tflite", task, _prep(meta["preprocessing"], path.name),
                        list(meta["classes"]) if meta.get("classes") else None, head, tuple(info.inputs[0][1]),
                        "", path=path, precision=tflite_precision(path.read_bytes()))
    src.sha256 = _digest(file_sha256(path), src)
    return src


def _digest(model_hash: str, src) -> str:
    """Model bytes plus the data contract: an edited sidecar is a different bundle."""
    contract = {"preprocessing": src.preprocessing.to_dict(), "task": src.task, "classes": src.classes,
                "head": src.head}
    return hashlib.sha256((model_hash + json.dumps(contract, sort_keys=True)).encode()).hexdigest()


def _keras_digest(keras_model, path: Path | None, src) -> str:
    # Hash the weights themselves, not the weights' name: "random" differs on every build.
    h = hashlib.sha256()
    if path is not None:
        h.update(file_sha256(path).encode())
    else:
        h.update(json.dumps(architecture(keras_model), sort_keys=True).encode())
        for w in keras_model.get_weights():
            h.update(str((w.shape, w.dtype.name)).encode())
            h.update(w.tobytes())
    return _digest(h.hexdigest(), src)


def architecture(keras_model) -> dict:
    """The model's config with every model/layer name replaced by its position (L0, L1, ...).

    Keras numbers auto-named layers per process (conv2d, conv2d_1, ...), so the
    same zoo model built second in a process has other names than when built
    first; hashing the raw config gave one model several cache keys.
    """
    names = {keras_model.name: "model"}
    names.update({layer.name: f"L{i}" for i, layer in enumerate(keras_model.layers)})

    def canon(value):
        if isinstance(value, str):
            return names.get(value, value)
        if isinstance(value, dict):
            return {k: canon(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [canon(v) for v in value]
        return value

    return canon(json.loads(keras_model.to_json()))


def _keras_counts(keras_model) -> tuple[int | None, int | None]:
    from edgecnn.zoo.stats import count_macs, count_params

    try:
        return count_macs(keras_model), count_params(keras_model)
    except (ValueError, TypeError, AttributeError):  # a layer the counter does not know: leave the figures out
        return None, None


def _file_params(path: Path) -> int | None:
    from edgecnn.zoo.files import inspect_model_file

    return inspect_model_file(path).params


def onnx_precision(path: Path) -> str:
    """"int8" for QDQ / QLinear graphs, "fp16" for float16 weights, else "fp32"."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError family; report it as bad input
        raise ModelError(f"cannot read ONNX model {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if any(n.op_type in QDQ_OPS for n in model.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def tflite_precision(data: bytes) -> str:
    """"int8" when any tensor is int8/uint8 with a scale, "fp16" for float16 weights, else "fp32"."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_content=data)
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"LiteRT cannot read the TFLite model: {str(e).splitlines()[0]}") from None
    kinds = set()
    for d in it.get_tensor_details():
        scales = d.get("quantization_parameters", {}).get("scales")
        if d["dtype"] in (np.int8, np.uint8) and scales is not None and len(scales):
            kinds.add("int8")
        elif d["dtype"] == np.float16:
            kinds.add("fp16")
    return "int8" if "int8" in kinds else "fp16" if "fp16" in kinds else "fp32"


def check_file_precision(src: CompileSource, precision: str, backend: str) -> None:
    """A given .onnx/.tflite is compiled as it is: its precision must be the one asked for."""
    if src.kind == "keras" or src.precision == precision:
        return
    if src.precision == "fp32" and precision == "int8" and src.kind == "onnx":
        return  # a float ONNX file is quantized by edgecnn.quantize
    raise ModelError(f"{Path(src.ref).name} is already {src.precision}; compile it with --precision {src.precision}"
                     + ("" if src.precision != "fp32" else f" or quantize its Keras source for {precision}")
                     + f" ({backend} takes the file as it is)")


def quantize_int8(job: Job, backend: str, work: Path) -> tuple[Path, dict]:
    """int8 through edgecnn.quantize (calibrated and accuracy-validated there); returns the file and its figures.

    Demo-weight zoo models calibrate on the demo set of their task by default;
    anything else needs a calibration set, because ranges from the wrong images
    would quietly ruin accuracy.
    """
    import warnings

    from edgecnn.errors import DataError
    from edgecnn.quantize import quantize

    src = job.source
    calib = job.calib
    if calib is None:
        if not src.demo:
            raise DataError(f"int8 needs calibration images for {src.name}: pass --calib (a named set under "
                            "calibration/ or a folder of images)")
        calib = f"demo-{src.task}"
    model = src.ref if src.kind == "keras" else src.path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # its notes come back in result.warnings, logged once below
        result = quantize(model, calib, work / "quantized", backend=backend, weights=src.weights or "demo",
                          log=lambda msg: job.log(f"quantize: {msg}"))
    for note in result.warnings:
        job.log(f"quantize: note: {note}")
    info = {"quantization": {"calibration": result.calibration, "validation": result.validation,
                             "accuracy": result.accuracy, "outputs": result.outputs,
                             "settings": result.settings, "warnings": result.warnings}}
    return result.output, info
