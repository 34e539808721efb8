"""Users' own model files: what format they are in, their inputs, outputs and size.

Supported: Keras (.keras, full-model .h5), a TensorFlow SavedModel directory
(with saved_model.pb), ONNX (.onnx) and TFLite (.tflite). Anything missing,
unreadable, corrupt or of another kind raises ModelError with one line.
Shapes use None for dimensions that are not fixed (batch, dynamic sizes);
dtypes are numpy names ("float32", "int8", ...).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgecnn.errors import ModelError

FORMATS = {".keras": "keras", ".h5": "keras", ".onnx": "onnx", ".tflite": "tflite"}

Tensor = tuple[str, tuple, str]  # (name, shape with None for free dims, numpy dtype name)


@dataclass(frozen=True)
class ModelFile:
    """A model file as found on disk; params is None where the format does not say (TFLite)."""

    path: Path
    format: str  # "keras" | "savedmodel" | "onnx" | "tflite"
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    params: int | None


def model_format(path: str | Path) -> str:
    """The format of a model path from its name (or saved_model.pb for directories); ModelError otherwise."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise ModelError(f"{path} is a directory without saved_model.pb, so not a SavedModel")
    if path.name.endswith(".weights.h5"):
        raise ModelError(f"{path} holds weights only, not a model; load it with edgecnn.zoo.load(ref, weights=path)")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ModelError(f"unsupported model file {path.name!r}: expected .keras, .h5, .onnx, .tflite "
                         "or a SavedModel directory")
    if path.stat().st_size == 0:
        raise ModelError(f"model file {path} is empty")
    return fmt


def inspect_model_file(path: str | Path) -> ModelFile:
    """Open a model file with its own library and describe its inputs, outputs and parameter count."""
    path = Path(path)
    fmt = model_format(path)
    reader = {"keras": _keras, "savedmodel": _savedmodel, "onnx": _onnx, "tflite": _tflite}[fmt]
    inputs, outputs, params = reader(path)
    return ModelFile(path, fmt, tuple(inputs), tuple(outputs), params)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _keras(path: Path):
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        # Keras' own message for this case ("File not found") would mislead.
        raise ModelError(f"cannot read Keras model {path}: not a .keras zip archive")
    import keras

    from edgecnn.zoo.stats import count_params

    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile) as e:
        # ValueError/TypeError: bad config or unknown custom layer; KeyError: archive without
        # config.json; OSError: h5py cannot open a damaged .h5.
        raise ModelError(f"cannot read Keras model {path}: {_first_line(e)}") from e
    try:
        tensors_in, tensors_out = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):  # a subclassed model that was never called has no graph
        tensors_in, tensors_out = [], []
    names_out = list(getattr(model, "output_names", None) or [])
    inputs = [(_keras_name(t), _shape(t.shape), _dtype_name(t.dtype)) for t in tensors_in]
    outputs = [(names_out[i] if i < len(names_out) else _keras_name(t), _shape(t.shape), _dtype_name(t.dtype))
               for i, t in enumerate(tensors_out)]
    return inputs, outputs, count_params(model)


def _keras_name(tensor) -> str:
    # A Keras 3 tensor's own name is generic ("keras_tensor_12"); the layer that made it is not.
    history = getattr(tensor, "_keras_history", None)
    layer = getattr(history, "operation", None)
    return getattr(layer, "name", None) or tensor.name


def _savedmodel(path: Path):
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ModelError(f"cannot read SavedModel {path}: {_first_line(e)}") from e
    signatures = getattr(loaded, "signatures", {})
    if "serving_default" not in signatures:
        raise ModelError(f"SavedModel {path} has no serving_default signature; export it with model.export(path)")
    fn = signatures["serving_default"]
    specs_in = fn.structured_input_signature[1]
    specs_out = fn.structured_outputs
    inputs = [(name, _shape(s.shape), s.dtype.name) for name, s in sorted(specs_in.items())]
    outputs = [(name, _shape(s.shape), s.dtype.name) for name, s in sorted(specs_out.items())]
    variables = getattr(loaded, "variables", None)
    params = sum(int(v.shape.num_elements() or 0) for v in variables) if variables is not None else None
    return inputs, outputs, params


def _onnx(path: Path):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(str(path))  # by path, so models with external data are checked too
    except DecodeError as e:
        raise ModelError(f"cannot read ONNX model {path}: not an ONNX protobuf ({_first_line(e)})") from e
    except (onnx.checker.ValidationError, OSError) as e:
        raise ModelError(f"invalid ONNX model {path}: {_first_line(e)}") from e
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [_onnx_value(v) for v in graph.input if v.name not in weights]
    outputs = [_onnx_value(v) for v in graph.output]
    params = 0
    for init in graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        params += n
    return inputs, outputs, params


def _onnx_value(value) -> Tensor:
    import onnx

    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return value.name, (), str(kind)
    t = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    return value.name, shape, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name


def _tflite(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path))
    except ValueError as e:  # LiteRT reports a bad flatbuffer or an unreadable file as ValueError
        raise ModelError(f"cannot read TFLite model {path}: {_first_line(e)}") from e

    def describe(d) -> Tensor:
        sig = d.get("shape_signature", d["shape"])
        return d["name"], tuple(None if int(x) < 0 else int(x) for x in sig), _dtype_name(d["dtype"])

    return ([describe(d) for d in interpreter.get_input_details()],
            [describe(d) for d in interpreter.get_output_details()], None)


def _shape(shape) -> tuple:
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return tuple(None if d is None else int(d) for d in dims)


def _dtype_name(dtype) -> str:
    import numpy as np

    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).name
