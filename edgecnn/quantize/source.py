"""What quantization starts from: a zoo model with its weights, or a user's model file.

Either way the result carries the model's own data contract (preprocessing,
task, classes, detector head), because calibration and validation must feed
the model exactly as evaluation and the board do. Zoo models take it from the
registry and the demo sidecar; model files from a `<model>.json` next to them
(the same schema as the demo sidecar) or from the caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecnn.data.dataset import Task
from edgecnn.data.preprocess import Preprocessing
from edgecnn.errors import DataError, ModelError

SIDECAR_HELP = ('{"preprocessing": {"size": [H, W], "scale": s, "offset": o}, "task": "classification"|"detection", '
                '"classes": [...], "head": {"anchors": [[w, h], ...]}}')


@dataclass
class SourceModel:
    """A float model ready to quantize, with the contract it was trained under."""

    name: str  # stem for output files, e.g. "mobilenet_v2" or "mymodel"
    ref: str  # what the user gave
    task: str
    preprocessing: Preprocessing
    classes: list[str] | None
    head: dict | None  # detectors: {"anchors": [[w, h], ...], ...}
    input_shape: tuple  # (N, H, W, C) with None for free dims
    keras_model: Any = None  # a keras.Model (Keras sources)
    onnx_path: Path | None = None  # an .onnx file (ONNX sources)
    demo: bool = False  # zoo preset with demo weights: the demo val split is its held-out set

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes else None

    def metadata(self) -> dict:
        """The sidecar for the quantized artifact: what a runner needs to feed and decode it."""
        return {"model": self.name, "task": self.task, "classes": self.classes,
                "preprocessing": self.preprocessing.to_dict(), "head": self.head}


def resolve_model(model: str | Path, weights: str | Path = "demo",
                  preprocessing: Preprocessing | dict | None = None) -> SourceModel:
    """A zoo reference (NAME or NAME:key=value,...) or a .keras/.h5/.onnx file -> SourceModel."""
    from edgecnn import zoo

    text = str(model)
    name = text.strip().partition(":")[0]
    if name in {s.name for s in zoo.list_models()} and not Path(text).exists():
        return _from_zoo(text, weights, preprocessing)
    return _from_file(Path(text), preprocessing)


def _from_zoo(ref: str, weights, preprocessing) -> SourceModel:
    from edgecnn import zoo

    spec, kwargs = zoo.parse_model_ref(ref)
    model = zoo.load(ref, weights=weights)
    meta = zoo.demo_metadata(spec.name) if weights == "demo" else None
    if meta:
        pre = meta["preprocessing"]
        classes, head = list(meta["classes"]), meta.get("head")
    else:
        pre = spec.preprocessing_for(kwargs)
        classes = None  # random or user weights: no class names to check data against
        head = spec.head_for(kwargs)
    if preprocessing is not None:
        pre = preprocessing
    return SourceModel(name=spec.name, ref=ref, task=spec.task, preprocessing=_prep(pre, ref), classes=classes,
                       head=head, input_shape=tuple(model.input_shape), keras_model=model,
                       demo=weights == "demo")


def _from_file(path: Path, preprocessing) -> SourceModel:
    from edgecnn.zoo.files import model_format

    fmt = model_format(path)  # ModelError for a missing, empty or unknown file
    if fmt == "tflite":
        raise ModelError(f"{path.name} is already a TFLite flatbuffer; quantize from its Keras (.keras) or "
                         "ONNX source")
    if fmt == "savedmodel":
        raise ModelError(f"{path} is a SavedModel; quantize from the Keras model (.keras) or an .onnx export")
    # The model first: a file that is not a model should be reported as that, not as missing metadata.
    keras_model, onnx_path, shape = None, None, None
    if fmt == "onnx":
        onnx_path, shape = path, _onnx_input_shape(path)
    else:
        keras_model = _load_keras(path)
        shape = tuple(keras_model.input_shape) if not isinstance(keras_model.input_shape, list) else None
        if shape is None:
            raise ModelError(f"{path.name} has {len(keras_model.inputs)} inputs; edgecnn quantizes "
                             "single-input image models")
    meta = _sidecar(path)
    pre = preprocessing if preprocessing is not None else meta.get("preprocessing")
    if pre is None:
        raise ModelError(f"no preprocessing for {path.name}: write {path.with_suffix('.json').name} next to it "
                         f"with {SIDECAR_HELP}, or pass preprocessing=")
    head = meta.get("head")
    task = meta.get("task") or (Task.DETECTION if head else Task.CLASSIFICATION)
    if task not in (Task.CLASSIFICATION, Task.DETECTION):
        raise ModelError(f"{path.with_suffix('.json')}: task must be classification or detection, got {task!r}")
    if task == Task.DETECTION and not (head and head.get("anchors")):
        raise ModelError(f"{path.with_suffix('.json')}: a detector needs head.anchors to decode its output")
    classes = meta.get("classes")
    return SourceModel(name=path.name.split(".")[0], ref=str(path), task=task, preprocessing=_prep(pre, path.name),
                       classes=list(classes) if classes else None, head=head, input_shape=shape,
                       keras_model=keras_model, onnx_path=onnx_path)


def _prep(pre, what) -> Preprocessing:
    if isinstance(pre, Preprocessing):
        return pre
    try:
        return Preprocessing.from_dict(dict(pre))
    except DataError as e:
        raise ModelError(f"{what}: bad preprocessing: {e}") from None
    except (TypeError, ValueError) as e:
        raise ModelError(f"{what}: bad preprocessing {pre!r}: {e}") from None


def _sidecar(path: Path) -> dict:
    side = path.with_name(path.name.split(".")[0] + ".json")
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read {side}: {e}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{side} must hold a JSON object like {SIDECAR_HELP}")
    return data


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


def _onnx_input_shape(path: Path) -> tuple:
    from edgecnn.zoo.files import inspect_model_file

    f = inspect_model_file(path)
    if len(f.inputs) != 1:
        raise ModelError(f"{path.name} has {len(f.inputs)} inputs; edgecnn quantizes single-input image models")
    name, shape, dtype = f.inputs[0]
    if dtype != "float32":
        raise ModelError(f"{path.name}: input {name!r} is {dtype}; quantization starts from a float32 model")
    return tuple(shape)
