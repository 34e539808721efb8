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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecnn.data.preprocess import Preprocessing
from edgecnn.errors import DataError, ModelError
from edgecnn.kinds import Precision

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
    path: Path | None = None  # the model file the stages build from (None for zoo models)
    keras_model: Any = None  # a keras.Model for Keras sources
    macs: int | None = None
    params: int | None = None
    layout: str = "NHWC"  # the image input's layout: "NHWC" or "NCHW" (PyTorch/Paddle exports)
    file: Path | None = None  # the user's own file; `path` is its intake copy (input bound, simplified)
    notes: list[str] = field(default_factory=list)  # what intake did that the user should know

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes else None

    @property
    def onnx_path(self) -> Path | None:
        return self.path if self.kind == "onnx" else None

    @property
    def static_shape(self) -> list[int]:
        """The input with batch 1 in the model's layout: every backend here compiles one image of one size."""
        from edgecnn.frameworks.onnx_graph import static_shape

        if len(self.input_shape) != 4:
            return [1, *(int(d) if d is not None else -1 for d in self.input_shape[1:])]
        return static_shape(tuple(self.input_shape), self.layout, self.preprocessing.size)

    def metadata(self) -> dict:
        """The sidecar of a derived artifact: what a runner needs to feed and decode it."""
        return {"model": self.name, "task": self.task, "classes": self.classes,
                "preprocessing": self.preprocessing.to_dict(), "head": self.head, "demo": self.demo}


def is_zoo_ref(model: str | Path) -> bool:
    """True when `model` names a zoo model (NAME or NAME:options) rather than an existing file."""
    from edgecnn import zoo

    text = str(model)
    return text.strip().partition(":")[0] in {s.name for s in zoo.list_models()} and not Path(text).exists()


def check_model_ref(model: "str | Path | SourceModel") -> None:
    """ModelError for a reference that names nothing, decided from the text alone (nothing is loaded).

    A reference without a path separator or a model-file suffix that is neither a file nor a zoo
    name was meant as a zoo name: "unknown model" with the known names, not "model file not found".
    """
    from edgecnn import zoo
    from edgecnn.zoo.files import FORMATS

    if isinstance(model, SourceModel) or is_zoo_ref(model):
        return
    text = str(model).strip()
    name = text.partition(":")[0]
    if Path(text).exists() or "/" in text or os.sep in text or Path(name).suffix.lower() in FORMATS:
        return
    known = ", ".join(s.name for s in zoo.list_models())
    raise ModelError(f"unknown model {name!r}; known models: {known} (or give a path to a .keras, .h5, .onnx or "
                     ".tflite file)")


def load_source(model: "str | Path | SourceModel", weights: str | Path = "demo",
                preprocessing: Preprocessing | dict | None = None, layout: str | None = None,
                contract: dict | None = None) -> SourceModel:
    """A zoo reference or model file -> SourceModel (a SourceModel is returned as it is).

    layout: NHWC or NCHW for an ONNX input the shape leaves ambiguous (else read from the graph).
    contract: the data-contract options of edgecnn.contract (input_size, mean, std, scale, offset, bgr,
    layout, classes, task, resize), over the sidecar and the file's own metadata.
    ModelError for anything missing, unreadable, without a data contract, or whose input is not
    an image batch at its preprocessing size (what every stage feeds it).
    """
    if isinstance(model, SourceModel):
        return model
    check_model_ref(model)
    if is_zoo_ref(model):
        if any(v not in (None, False, ()) for v in (contract or {}).values()):
            raise ModelError(f"{model} is a zoo model with its own preprocessing and classes; the contract options "
                             "(--input-size, --mean, --classes, ...) describe model files")
        src = _from_zoo(str(model), weights, preprocessing)
    else:
        src = _from_file(Path(str(model)), preprocessing, layout, contract)
    check_image_input(src.name, src.input_shape, src.preprocessing, src.layout)
    if src.kind == "onnx":
        _onnx_intake(src)
    if src.kind in ("onnx", "tflite"):
        _file_counts(src)
    import warnings

    from edgecnn.errors import EdgecnnWarning

    for note in src.notes:  # shown now, once per load, whatever the stage does next
        warnings.warn(note, EdgecnnWarning, stacklevel=2)
    return src


def check_image_input(model_name: str, shape: "tuple | list | None", preprocessing: Preprocessing,
                      layout: str = "NHWC") -> None:
    """ModelError when RGB images at the preprocessing size cannot feed the model's image input."""
    shape = tuple(shape or ())
    h, w = preprocessing.size
    if len(shape) != 4:
        raise ModelError(f"{model_name}: input shape {_fmt(shape)} is not an image batch (N, H, W, 3) or "
                         "(N, 3, H, W); edgecnn takes single-input image models")
    # The same checks for both layouts, on the (N, H, W, C) view.
    nhwc = (shape[0], shape[2], shape[3], shape[1]) if layout == "NCHW" else shape
    if nhwc[3] not in (None, 3):
        raise ModelError(f"{model_name}: input {_fmt(shape)} wants {nhwc[3]} channels ({layout}), but edgecnn "
                         "feeds RGB images (3 channels)")
    if (nhwc[1] not in (None, h)) or (nhwc[2] not in (None, w)):
        raise ModelError(f"{model_name}: input {_fmt(shape)} ({layout}) does not match the preprocessing size "
                         f"{h}x{w}; set the size in the sidecar (preprocessing.size) to the model's input")


def _file_counts(src: SourceModel) -> None:
    """MACs and params of an .onnx/.tflite from its graph (edgecnn.zoo.graph_stats); None where undetermined."""
    from edgecnn.zoo.graph_stats import onnx_counts, tflite_counts

    shape = src.static_shape
    try:
        if src.kind == "onnx":  # the intake copy: its input is already bound
            src.macs, src.params = onnx_counts(src.path)
        else:
            src.macs, src.params = tflite_counts(src.path, shape if min(shape) > 0 else None)
    except ModelError as e:  # the model loaded, so this is the counter's limit, not bad input
        src.notes.append(f"{src.name}: MACs/params not counted ({e})")


def _onnx_intake(src: SourceModel) -> None:
    """Bind the free dimensions and simplify the graph into a cached copy that every stage builds from.

    Keyed by the content hash (file bytes, data contract, layout), so it is made once per model.
    """
    from edgecnn.frameworks.onnx_graph import bind_and_simplify
    from edgecnn.paths import atomic_dir, cache_dir

    folder = cache_dir("intake") / src.sha256[:32]
    bound = folder / f"{src.name}.onnx"
    if not bound.is_file():
        with atomic_dir(folder) as tmp:
            notes = bind_and_simplify(src.file, tmp / bound.name, src.static_shape,
                                      simplify=src.precision != Precision.INT8.value)
            (tmp / "notes.json").write_text(json.dumps(notes))
    src.path = bound
    src.notes += json.loads((folder / "notes.json").read_text())
    free = [i for i, d in enumerate(src.input_shape) if d is None]
    if any(i > 0 for i in free):
        src.notes.append(f"{src.name}: free input dimensions bound to {tuple(src.static_shape)} ({src.layout}) "
                         f"from the preprocessing size")


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


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
    if head is not None:
        from edgecnn.runner.heads import head_spec

        head = head_spec(head, f"{spec.name} head")  # the manifest records the head's type, like a file's
    src = SourceModel(name=spec.name, ref=ref, kind="keras", task=spec.task, preprocessing=_prep(pre, ref),
                      classes=classes, head=head, input_shape=tuple(model.input_shape), weights=str(weights),
                      demo=demo, keras_model=model)
    src.sha256 = _keras_digest(model, None, src)
    src.macs, src.params = _keras_counts(model)
    return src


def _from_file(path: Path, preprocessing, layout: str | None = None, contract: dict | None = None) -> SourceModel:
    from edgecnn.zoo.files import model_format

    fmt = model_format(path)  # ModelError for a missing, empty or unknown file
    if fmt == "savedmodel":
        raise ModelError(f"{path} is a SavedModel; give edgecnn the Keras model (.keras) or an .onnx export")
    # The model first: a file that is not a model should be reported as that, not as missing metadata.
    keras_model, precision, params = None, Precision.FP32.value, None
    if fmt == "onnx":
        shape, outputs = _single_input(path, check_float=True)
        precision = onnx_precision(path)
    elif fmt == "tflite":
        shape, outputs = _single_input(path, check_float=False)
        precision = tflite_precision(path.read_bytes())
    else:
        keras_model = _load_keras(path)
        shape = tuple(keras_model.input_shape) if not isinstance(keras_model.input_shape, list) else None
        if shape is None:
            raise ModelError(f"{path.name} has {len(keras_model.inputs)} inputs; edgecnn takes "
                             "single-input image models")
        outputs = [tuple(o.shape) for o in keras_model.outputs]
    from edgecnn import contract as c

    side = c.sidecar_path(path)
    options = c.from_options(contract)
    embedded = c.onnx_metadata(path) if fmt == "onnx" else c.tflite_metadata(path) if fmt == "tflite" else {}
    meta = c.merge(embedded, c.read_sidecar(path), options)
    model_layout = "NHWC"
    if fmt == "onnx":
        from edgecnn.frameworks.onnx_graph import image_layout

        model_layout = image_layout(tuple(shape), path.name, layout or meta.get("layout"))
    elif layout and str(layout).upper() != "NHWC":
        raise ModelError(f"{path.name}: {fmt} models take NHWC images; --layout {layout} applies to ONNX files")
    pre = preprocessing if preprocessing is not None else meta.get("preprocessing")
    notes = []
    if isinstance(pre, dict) and "size" not in pre and {"scale", "offset"} & set(pre):
        # The normalisation is known (metadata, sidecar or options) and the file fixes its input size: use it.
        size = c.static_size(shape, model_layout)
        if size:
            pre = {**pre, "size": size}
            notes.append(f"{path.name}: input size {size[0]}x{size[1]} from the model's input shape")
    if pre is None or (isinstance(pre, dict) and "size" not in pre):
        raise ModelError(f"no preprocessing for {path.name}: pass --input-size HxW (with --mean/--std or "
                         f"--scale/--offset), or write {side.name} next to it with {c.SIDECAR_HELP}")
    if preprocessing is None and not {"scale", "offset"} & set(pre):
        notes.append(f"{path.name}: no normalisation given (sidecar or --mean/--std/--scale/--offset): "
                     "pixels are scaled by 1/255")
    classes = meta.get("classes")
    prep = _prep(pre, path.name)
    check_image_input(path.stem, shape, prep, model_layout)  # the input first: it decides what else to say
    task, head = c.task_and_head(meta, outputs, path, side, notes, head_option="head" in options)
    src = SourceModel(name=path.stem, ref=str(path), kind=fmt, task=task, preprocessing=prep,
                      classes=list(classes) if classes else None, head=head, input_shape=shape,
                      precision=precision, demo=bool(meta.get("demo", False)), path=path, keras_model=keras_model,
                      params=params, layout=model_layout, file=path, notes=notes)
    if keras_model is not None:
        src.sha256 = _keras_digest(keras_model, path, src)
        src.macs, src.params = _keras_counts(keras_model)
    else:
        src.sha256 = _digest(_file_sha256(path), src)
    return src


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
    return tuple(shape), [tuple(o[1]) for o in f.outputs]


def _file_sha256(path: Path) -> str:
    from edgecnn.artifacts import file_sha256

    return file_sha256(path)


def _digest(model_hash: str, src: SourceModel) -> str:
    """Model bytes plus the data contract: an edited sidecar is a different source."""
    contract = {"preprocessing": src.preprocessing.to_dict(), "task": src.task, "classes": src.classes,
                "head": src.head}
    if src.layout != "NHWC":  # only where it is not the default, so existing keys stay valid
        contract["layout"] = src.layout
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
