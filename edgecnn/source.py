"""The source model: what every stage starts from, loaded once (docs/architecture.md, "Source model").

A source is a zoo reference (NAME or NAME:key=value, with weights) or a user's
model file (.keras/.h5, .onnx, .tflite). Either way it carries the model's data
contract - preprocessing, task, classes, detector head - because calibration,
validation, verification and the board must feed and decode the model exactly
alike. Zoo models take it from the registry and the demo sidecar; model files
from a sidecar `<file name without its last suffix>.json` next to them (the
demo sidecar's schema) or from the caller.

`sha256` covers the model bytes (or a zoo model's architecture and weights) plus
the data contract, so an edited sidecar or retrained model never reuses an old
cached artifact. `demo` says the model is a demo model (a zoo preset with its
demo weights, or a model derived from one by pruning, which the sidecar
records): only then do the demo calibration and val splits belong to it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecnn.data.preprocess import Preprocessing
from edgecnn.errors import DataError, ModelError
from edgecnn.kinds import Precision, Task

SIDECAR_HELP = ('{"preprocessing": {"size": [H, W], "scale": s, "offset": o}, "task": "classification"|"detection", '
                '"classes": [...], "head": {"anchors": [[w, h], ...]}}')
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


@dataclass
class SourceModel:
    """A model to prune, quantize or compile, with the contract it was trained under."""

    name: str  # stem for output files and bundles, e.g. "mobilenet_v2" or "mymodel"
    ref: str  # what the user gave
    kind: str  # "keras" | "onnx" | "tflite"
    task: str  # a Task value
    preprocessing: Preprocessing
    classes: list[str] | None
    head: dict | None  # detectors: {"anchors": [[w, h], ...], ...}
    input_shape: tuple  # as the model declares it, None for free dims
    sha256: str = ""
    precision: str = Precision.FP32.value  # what a given .onnx/.tflite already is
    weights: str | None = None  # zoo models: "demo", "random", "imagenet" or a weights path
    demo: bool = False
    path: Path | None = None  # the model file (None for zoo models)
    keras_model: Any = None  # a keras.Model for Keras sources
    macs: int | None = None
    params: int | None = None

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes else None

    @property
    def onnx_path(self) -> Path | None:
        return self.path if self.kind == "onnx" else None

    @property
    def static_shape(self) -> list[int]:
        """The input with batch 1: every backend here compiles for one image at a time."""
        return [1, *(int(d) if d is not None else -1 for d in self.input_shape[1:])]

    def metadata(self) -> dict:
        """The sidecar of a derived artifact: what a runner needs to feed and decode it."""
        return {"model": self.name, "task": self.task, "classes": self.classes,
                "preprocessing": self.preprocessing.to_dict(), "head": self.head, "demo": self.demo}


def is_zoo_ref(model: str | Path) -> bool:
    """True when `model` names a zoo model (NAME or NAME:options) rather than an existing file."""
    from edgecnn import zoo

    text = str(model)
    return text.strip().partition(":")[0] in {s.name for s in zoo.list_models()} and not Path(text).exists()


def load_source(model: "str | Path | SourceModel", weights: str | Path = "demo",
                preprocessing: Preprocessing | dict | None = None) -> SourceModel:
    """A zoo reference or model file -> SourceModel (a SourceModel is returned as it is).

    ModelError for anything missing, unreadable or without a data contract.
    """
    if isinstance(model, SourceModel):
        return model
    if is_zoo_ref(model):
        return _from_zoo(str(model), weights, preprocessing)
    return _from_file(Path(str(model)), preprocessing)


def _from_zoo(ref: str, weights, preprocessing) -> SourceModel:
    from edgecnn import zoo

    spec, kwargs = zoo.parse_model_ref(ref)
    model = zoo.load(ref, weights=weights)
    demo = str(weights) == "demo"
    meta = zoo.demo_metadata(spec.name) if demo else None
    if meta:
        pre, classes, head = meta["preprocessing"], list(meta["classes"]), meta.get("head")
    else:
        pre = spec.preprocessing_for(kwargs)
        classes = None  # random or user weights: no class names to check data against
        head = spec.head_for(kwargs)
    if preprocessing is not None:
        pre = preprocessing
    src = SourceModel(name=spec.name, ref=ref, kind="keras", task=spec.task, preprocessing=_prep(pre, ref),
                      classes=classes, head=head, input_shape=tuple(model.input_shape), weights=str(weights),
                      demo=demo, keras_model=model)
    src.sha256 = _keras_digest(model, None, src)
    src.macs, src.params = _keras_counts(model)
    return src


def _from_file(path: Path, preprocessing) -> SourceModel:
    from edgecnn.zoo.files import model_format

    fmt = model_format(path)  # ModelError for a missing, empty or unknown file
    if fmt == "savedmodel":
        raise ModelError(f"{path} is a SavedModel; give edgecnn the Keras model (.keras) or an .onnx export")
    # The model first: a file that is not a model should be reported as that, not as missing metadata.
    keras_model, precision, params = None, Precision.FP32.value, None
    if fmt == "onnx":
        shape = _single_input(path, check_float=True)
        precision, params = onnx_precision(path), _file_params(path)
    elif fmt == "tflite":
        shape = _single_input(path, check_float=False)
        precision = tflite_precision(path.read_bytes())
    else:
        keras_model = _load_keras(path)
        shape = tuple(keras_model.input_shape) if not isinstance(keras_model.input_shape, list) else None
        if shape is None:
            raise ModelError(f"{path.name} has {len(keras_model.inputs)} inputs; edgecnn takes "
                             "single-input image models")
    side = sidecar_path(path)
    meta = read_sidecar(path)
    pre = preprocessing if preprocessing is not None else meta.get("preprocessing")
    if pre is None:
        raise ModelError(f"no preprocessing for {path.name}: write {side.name} next to it with {SIDECAR_HELP}")
    head = meta.get("head")
    task = meta.get("task") or (Task.DETECTION.value if head else Task.CLASSIFICATION.value)
    if task not in Task.values():
        raise ModelError(f"{side}: task must be classification or detection, got {task!r}")
    if task == Task.DETECTION and not (head and head.get("anchors")):
        raise ModelError(f"{side}: a detector needs head.anchors to decode its output")
    classes = meta.get("classes")
    src = SourceModel(name=path.stem, ref=str(path), kind=fmt, task=task, preprocessing=_prep(pre, path.name),
                      classes=list(classes) if classes else None, head=head, input_shape=shape,
                      precision=precision, demo=bool(meta.get("demo", False)), path=path, keras_model=keras_model,
                      params=params)
    if keras_model is not None:
        src.sha256 = _keras_digest(keras_model, path, src)
        src.macs, src.params = _keras_counts(keras_model)
    else:
        src.sha256 = _digest(_file_sha256(path), src)
    return src


def sidecar_path(path: Path) -> Path:
    """Where a model file's data contract lives: the file name without its last suffix, plus .json."""
    return path.with_suffix(".json")


def read_sidecar(path: Path) -> dict:
    """The sidecar of a model file as a dict ({} when there is none); ModelError when it is unreadable."""
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read {side}: {e}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{side} must hold a JSON object like {SIDECAR_HELP}")
    return data


def _prep(pre, what) -> Preprocessing:
    if isinstance(pre, Preprocessing):
        return pre
    try:
        return Preprocessing.from_dict(dict(pre))
    except DataError as e:
        raise ModelError(f"{what}: bad preprocessing: {e}") from None
    except (TypeError, ValueError) as e:
        raise ModelError(f"{what}: bad preprocessing {pre!r}: {e}") from None


def _load_keras(path: Path):
    import zipfile

    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"cannot read Keras model {path}: not a .keras zip archive")
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"cannot read Keras model {path}: {first}") from None


def _single_input(path: Path, check_float: bool) -> tuple:
    from edgecnn.zoo.files import inspect_model_file

    f = inspect_model_file(path)  # ModelError for a corrupt file
    if len(f.inputs) != 1:
        raise ModelError(f"{path.name} has {len(f.inputs)} inputs; edgecnn takes single-input image models")
    name, shape, dtype = f.inputs[0]
    if check_float and dtype != "float32":
        raise ModelError(f"{path.name}: input {name!r} is {dtype}; edgecnn starts from a float32-input model")
    return tuple(shape)


def _file_sha256(path: Path) -> str:
    from edgecnn.artifacts import file_sha256

    return file_sha256(path)


def _file_params(path: Path) -> int | None:
    from edgecnn.zoo.files import inspect_model_file

    return inspect_model_file(path).params


def _digest(model_hash: str, src: SourceModel) -> str:
    """Model bytes plus the data contract: an edited sidecar is a different source."""
    contract = {"preprocessing": src.preprocessing.to_dict(), "task": src.task, "classes": src.classes,
                "head": src.head}
    return hashlib.sha256((model_hash + json.dumps(contract, sort_keys=True)).encode()).hexdigest()


def _keras_digest(keras_model, path: Path | None, src: SourceModel) -> str:
    # Hash the weights themselves, not the weights' name: "random" differs on every build.
    h = hashlib.sha256()
    if path is not None:
        h.update(_file_sha256(path).encode())
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


def onnx_precision(path: Path) -> str:
    """"int8" for QDQ / QLinear graphs, "fp16" for float16 weights, else "fp32"."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError family; report it as bad input
        raise ModelError(f"cannot read ONNX model {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if any(n.op_type in QDQ_OPS for n in model.graph.node):
        return Precision.INT8.value
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return Precision.FP16.value
    return Precision.FP32.value


def tflite_precision(data: bytes) -> str:
    """"int8" when any tensor is int8/uint8 with a scale, "fp16" for float16 weights, else "fp32"."""
    from edgecnn.frameworks.litert import precision

    return precision(data)
