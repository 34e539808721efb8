"""The model zoo: a registry of named CNN presets, their builders and demo weights.

A model reference is a preset name with optional builder options:

    mobilenet_v2                                   the preset (the demo configuration)
    mobilenet_v2:alpha=1.0,size=224,classes=1000   the published ImageNet configuration

Option values are parsed as int, float or bool (true/false) and checked against
the preset's allowed values; anything else is a ModelError. Demo weights fit
only the preset's own configuration. TensorFlow/Keras are imported only when a
model is built, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgecnn.errors import ModelError
from edgecnn.zoo import benchnets as _bn
from edgecnn.zoo import benchnets_det as _bd
from edgecnn.zoo import mobilenet as _mn
from edgecnn.zoo import yolo_lite as _yl

WEIGHTS_DIR = Path(__file__).parent / "weights"
# The one place that says which presets ship trained demo weights.
_DEMO_WEIGHTS = frozenset({"mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "yolo_lite"})


@dataclass(frozen=True)
class Option:
    """Allowed values of one builder option: a set of choices or an inclusive range with a step."""

    kind: type
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    step: int | None = None

    def check(self, model: str, key: str, value: Any) -> Any:
        """Return value converted to this option's kind, or raise ModelError naming the allowed values."""
        ok = type(value) is self.kind or (self.kind is float and type(value) is int)
        if ok and self.kind is not bool:
            value = self.kind(value)
            ok = (value in self.choices if self.choices else
                  (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
                  and (self.step is None or value % self.step == 0))
        if not ok:
            raise ModelError(f"{model}: {key} must be {self.describe()}, got {value!r}")
        return value

    def describe(self) -> str:
        """The allowed values in words, e.g. 'one of 0.25, 0.5' or 'an int multiple of 32 in 32..512'."""
        if self.kind is bool:
            return "true or false"
        if self.choices:
            return "one of " + ", ".join(f"{c:g}" if isinstance(c, float) else str(c) for c in self.choices)
        words = "an int" if self.kind is int else "a number"
        if self.step:
            words += f" multiple of {self.step}"
        if self.low is not None and self.high is not None:
            return f"{words} in {self.low:g}..{self.high:g}"
        return f"{words} >= {self.low:g}" if self.low is not None else words


@dataclass(frozen=True)
class ModelSpec:
    """A named preset: builder, its default options and the data contract of the default configuration."""

    name: str
    family: str
    task: str  # "classification" | "detection"
    builder: Callable
    defaults: dict
    description: str
    preprocessing: dict  # {"size": [h, w], "mode": "stretch", "scale": s, "offset": o}: float = uint8 * s + o
    demo_weights: bool
    head: dict | None = None  # detectors: {"anchors": [[w, h], ...], "grid": 7, "stride": 32}
    options: dict = field(default_factory=dict)  # option name -> Option

    def preprocessing_for(self, kwargs: dict) -> dict:
        """The preprocessing contract for a configuration (the size follows the `size` option)."""
        size = kwargs.get("size", self.defaults["size"])
        return {**self.preprocessing, "size": [size, size]}

    def head_for(self, kwargs: dict) -> dict | None:
        """The detector head for a configuration: grid = size / stride, default anchors scaled to it.

        Demo weights may have been trained with their own anchors: prefer
        demo_metadata(name)["anchors"] when using them.
        """
        if self.head is None:
            return None
        anchors = kwargs.get("anchors", self.defaults["anchors"])
        if anchors != len(_yl.DEFAULT_ANCHORS):
            raise ModelError(f"{self.name}: there are default anchors only for anchors={len(_yl.DEFAULT_ANCHORS)}; "
                             f"with anchors={anchors}, cluster your own (edgecnn.train.yolo.kmeans_anchors)")
        grid = kwargs.get("size", self.defaults["size"]) // self.head["stride"]
        return {**self.head, "grid": grid, "anchors": _yl.scaled_anchors(grid)}


_SIZE = Option(int, low=32, high=640, step=32)
_CLASSES = Option(int, low=1, high=100000)
_DROPOUT = Option(float, low=0.0, high=0.99)
_V3 = {"size": _SIZE, "classes": _CLASSES, "alpha": Option(float, _mn.V3_ALPHAS),
       "minimalistic": Option(bool), "dropout": _DROPOUT}
_YOLO = {"size": _SIZE, "classes": _CLASSES, "anchors": Option(int, low=1, high=16)}
_CLS_PRE = {"mode": "stretch", "scale": _mn.SCALE, "offset": _mn.OFFSET}
_DET_PRE = {"mode": "stretch", "scale": _yl.SCALE, "offset": _yl.OFFSET}
_HEAD = {"anchors": _yl.scaled_anchors(_yl.DEFAULT_GRID), "grid": _yl.DEFAULT_GRID, "stride": _yl.STRIDE}


def _spec(name, family, task, builder, defaults, description, options, pre, head=None) -> ModelSpec:
    size = defaults["size"]
    return ModelSpec(name, family, task, builder, defaults, description, {"size": [size, size], **pre},
                     name in _DEMO_WEIGHTS, head, options)


def _v3(name: str, builder: Callable, minimalistic: bool, what: str) -> ModelSpec:
    return _spec(name, "mobilenet_v3", "classification", builder,
                 {"size": 128, "classes": 5, "alpha": 1.0, "minimalistic": minimalistic},
                 what, _V3, _CLS_PRE)


def _bench(name: str, task: str, builder: Callable, size: int, what: str, size_option: Option, classes: int | None,
           pre: dict = _CLS_PRE) -> ModelSpec:
    """A benchncnn network rebuilt from its .param (edgecnn.zoo.benchnets): defaults are benchncnn's input size
    and classes; random weights only. Detectors' raw outputs are generic models here."""
    defaults = {"size": size, **({"classes": classes} if classes else {})}
    options = {"size": size_option, **({"classes": _CLASSES} if classes else {})}
    return _spec(name, "benchncnn", task, builder, defaults, f"{what}, as ncnn's benchmark .param (random weights)",
                 options, pre)


_BENCH_SIZE = Option(int, low=96, high=1024)
_BENCH = [
    _bench("squeezenet", "classification", _bn.squeezenet, 227, "SqueezeNet 1.1", _BENCH_SIZE, 1000),
    _bench("shufflenet", "classification", _bn.shufflenet, 224, "ShuffleNet V1 1x, 3 groups (logits)",
           _BENCH_SIZE, 1000),
    _bench("shufflenet_v2", "classification", _bn.shufflenet_v2, 224, "ShuffleNet V2 1.0x", _BENCH_SIZE, 1000),
    _bench("mobilenet_v3_ncnn", "classification", _bn.mobilenet_v3, 224,
           "MobileNetV3 (ncnn's variant, not Keras' Large)", Option(int, low=32, high=1024), 1000),
    _bench("alexnet", "classification", _bn.alexnet, 227, "AlexNet (Caffe, grouped convs, LRN)", _BENCH_SIZE, 1000),
    _bench("vgg16", "classification", _bn.vgg16, 224, "VGG-16", Option(int, low=32, high=1024), 1000),
    _bench("blazeface", "generic", _bd.blazeface, 128, "BlazeFace backbone (no heads, as the .param)",
           Option(int, low=32, high=1024, step=16), None),
    _bench("yolov4_tiny", "generic", _bd.yolov4_tiny, 416, "YOLOv4-tiny head tensors (no decoding)",
           Option(int, low=64, high=1024, step=32), 80, _DET_PRE),
    _bench("mobilenet_ssd", "generic", _bd.mobilenet_ssd, 300, "MobileNet-SSD box/score tensors (no decoding)",
           _BENCH_SIZE, 21),
    _bench("squeezenet_ssd", "generic", _bd.squeezenet_ssd, 300, "SqueezeNet-SSD box/score tensors (no decoding)",
           Option(int, low=160, high=1024), 21),
]

_REGISTRY: dict[str, ModelSpec] = {s.name: s for s in [
    _spec("mobilenet_v1", "mobilenet_v1", "classification", _mn.mobilenet_v1,
          {"size": 128, "classes": 5, "alpha": 0.25}, "MobileNet V1 (Howard et al. 2017)",
          {"size": Option(int, low=128, high=224, step=32), "classes": _CLASSES,
           "alpha": Option(float, _mn.V1_ALPHAS), "dropout": _DROPOUT}, _CLS_PRE),
    _spec("mobilenet_v2", "mobilenet_v2", "classification", _mn.mobilenet_v2,
          {"size": 128, "classes": 5, "alpha": 0.35}, "MobileNet V2 (Sandler et al. 2018)",
          {"size": _SIZE, "classes": _CLASSES, "alpha": Option(float, _mn.V2_ALPHAS)}, _CLS_PRE),
    _v3("mobilenet_v3_small", _mn.mobilenet_v3_small, False, "MobileNet V3 Small (Howard et al. 2019)"),
    _v3("mobilenet_v3_small_minimalistic", _mn.mobilenet_v3_small, True,
        "MobileNet V3 Small minimalistic (no SE, hard-swish or 5x5)"),
    _v3("mobilenet_v3_large", _mn.mobilenet_v3_large, False, "MobileNet V3 Large (Howard et al. 2019)"),
    _v3("mobilenet_v3_large_minimalistic", _mn.mobilenet_v3_large, True,
        "MobileNet V3 Large minimalistic (no SE, hard-swish or 5x5)"),
    _spec("yolo_lite", "yolo_lite", "detection", _yl.yolo_lite,
          {"size": 224, "classes": 5, "anchors": 5},
          "YOLO-Lite detector (arXiv 1811.05588, trial 3 without batch norm)",
          {**_YOLO, "batch_norm": Option(bool), "leaky": Option(float, low=0.0, high=1.0)}, _DET_PRE, _HEAD),
    _spec("yolo_lite_mobilenet", "yolo_lite", "detection", _yl.yolo_lite_mobilenet,
          {"size": 224, "classes": 5, "anchors": 5, "alpha": 0.35},
          "YOLO-Lite region head on a MobileNet V2 backbone",
          {**_YOLO, "alpha": Option(float, _mn.V2_ALPHAS)}, _DET_PRE, _HEAD),
    *_BENCH,
]}


def list_models() -> list[ModelSpec]:
    """All registered presets, in registration order."""
    return list(_REGISTRY.values())


def get_spec(name: str) -> ModelSpec:
    """The preset called `name`; ModelError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(_REGISTRY)}") from None


def _parse_value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_model_ref(ref: str, **overrides: Any) -> tuple[ModelSpec, dict]:
    """Split 'name:key=value,...' into the preset and its full, checked builder kwargs.

    Keyword overrides win over options in the reference. Unknown options and
    values out of range raise ModelError naming the model and the allowed values.
    """
    name, colon, rest = ref.strip().partition(":")
    spec = get_spec(name.strip())
    given: dict[str, Any] = {}
    for item in rest.split(",") if colon else ():
        key, eq, text = (p.strip() for p in item.partition("="))
        if not (eq and key and text):
            raise ModelError(f"{spec.name}: bad option {item.strip()!r} in {ref!r}; write key=value, e.g. size=224")
        if key in given:
            raise ModelError(f"{spec.name}: option {key!r} given twice in {ref!r}")
        given[key] = _parse_value(text)
    given.update(overrides)
    kwargs = dict(spec.defaults)
    for key, value in given.items():
        if key not in spec.options:
            raise ModelError(f"{spec.name}: unknown option {key!r}; options: "
                             + "; ".join(f"{k} ({o.describe()})" for k, o in spec.options.items()))
        kwargs[key] = spec.options[key].check(spec.name, key, value)
    return spec, kwargs


_MISSING = object()


def format_model_ref(spec: ModelSpec, kwargs: dict) -> str:
    """The normalized reference: preset name plus the options that differ from its defaults, sorted."""
    extra = sorted((k, v) for k, v in kwargs.items() if spec.defaults.get(k, _MISSING) != v)
    parts = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in extra]
    return spec.name + (":" + ",".join(parts) if parts else "")


def build(ref: str, **overrides: Any):
    """Build the keras.Model of a reference with random initial weights."""
    spec, kwargs = parse_model_ref(ref, **overrides)
    return spec.builder(**kwargs)


def demo_weights_path(name: str) -> Path:
    """Where the demo weights of preset `name` live (they may not exist yet)."""
    return WEIGHTS_DIR / f"{get_spec(name).name}.weights.h5"


def demo_available(name: str) -> bool:
    """True when the preset ships demo weights and both the weights and their sidecar JSON exist."""
    path = demo_weights_path(name)
    return get_spec(name).demo_weights and path.is_file() and path.with_name(f"{name}.json").is_file()


def demo_metadata(name: str) -> dict | None:
    """The demo weights' sidecar (classes, anchors, input size, training metrics), or None when there is none."""
    if not get_spec(name).demo_weights:
        return None
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"demo metadata {path} is unreadable: {e}") from e


def load(ref: str, weights: str | Path = "demo"):
    """Build a reference and give it weights: "demo", "random", "imagenet" or a path to a .weights.h5 file."""
    spec, kwargs = parse_model_ref(ref)
    if weights == "random":
        return spec.builder(**kwargs)
    if weights == "imagenet":
        if spec.task == "detection":
            raise ModelError(f"{spec.name}: there are no ImageNet weights for detectors; use demo, random or a path")
        return spec.builder(**kwargs, weights="imagenet")
    if weights == "demo":
        if not spec.demo_weights:
            raise ModelError(f"{spec.name} has no demo weights; use weights='random', 'imagenet' or a .weights.h5 path")
        if kwargs != spec.defaults:
            raise ModelError(f"demo weights for {spec.name} fit only its default configuration, not "
                             f"{format_model_ref(spec, kwargs)}; use weights='random' or your own weights")
        if not demo_available(spec.name):
            raise ModelError(f"demo weights for {spec.name} are not built yet: run python tools/train_demo.py")
        path = demo_weights_path(spec.name)
    else:
        path = Path(weights)
        if not str(path).endswith(".weights.h5"):
            raise ModelError(f"weights must be 'demo', 'random', 'imagenet' or a .weights.h5 file, got {str(weights)!r}")
        if not path.is_file():
            raise ModelError(f"weights file not found: {path}")
    model = spec.builder(**kwargs)
    target = format_model_ref(spec, kwargs)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(str(path))
    except (ValueError, OSError) as e:
        raise ModelError(f"cannot load {path} into {target}: {_one_line(e)}") from None
    for w in caught:
        # Keras only warns when it leaves some layers at their random initial weights.
        if "freshly-initialized" in str(w.message):
            raise ModelError(f"cannot load {path} into {target}: {_one_line(w.message)}")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model


def _one_line(e) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    return " ".join(lines[:2])[:300]


def _sources_digest() -> str:
    h = hashlib.sha256()
    for module in ("mobilenet.py", "yolo_lite.py", "benchnets.py", "benchnets_det.py", "benchnets_layers.py",
                   "stats.py"):
        h.update((Path(__file__).parent / module).read_bytes())
    return h.hexdigest()[:16]


def _output_shape(model) -> list:
    """One output's shape without the batch, or a list of them for a model with several (detector heads)."""
    shapes = model.output_shape
    if isinstance(shapes, list):
        return [list(s[1:]) for s in shapes]
    return list(shapes[1:])


def model_info(ref: str) -> dict:
    """Name, family, task, input/output shape, params, MACs, demo weights availability and description.

    Params and MACs need the model built (seconds), so they are cached in
    cache_dir("zoo") under the normalized reference and a hash of the builder and
    counter sources (an edited builder never reads stale figures).
    """
    from edgecnn.paths import atomic_write_bytes, cache_dir

    spec, kwargs = parse_model_ref(ref)
    norm = format_model_ref(spec, kwargs)
    key = f"{norm}|{_sources_digest()}"
    path = cache_dir("zoo") / f"info-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
    counts = None
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            counts = cached
    except (OSError, json.JSONDecodeError, AttributeError):
        pass  # no cache yet, or a damaged one: recompute
    if counts is None:
        from edgecnn.zoo.stats import count_macs, count_params

        model = build(norm)
        counts = {"key": key, "params": count_params(model), "macs": count_macs(model),
                  "input_shape": list(model.input_shape[1:]), "output_shape": _output_shape(model)}
        atomic_write_bytes(path, json.dumps(counts).encode())
    return {"name": spec.name, "ref": norm, "family": spec.family, "task": spec.task, "options": kwargs,
            "input_shape": counts["input_shape"], "output_shape": counts["output_shape"],
            "params": counts["params"], "macs": counts["macs"], "demo_weights": demo_available(spec.name),
            "description": f"{spec.description}; " + ", ".join(f"{k}={v}" for k, v in kwargs.items()),
            "preprocessing": spec.preprocessing_for(kwargs)}


def describe(target: str) -> dict:
    """model_info() for a zoo reference, or the format, inputs, outputs and params of a model file or SavedModel."""
    from edgecnn.zoo.files import FORMATS, inspect_model_file

    name = target.strip().partition(":")[0]
    path = Path(target)
    if name not in _REGISTRY and (path.exists() or path.suffix.lower() in FORMATS or "/" in target):
        f = inspect_model_file(path)
        tensors = lambda ts: [{"name": n, "shape": list(s), "dtype": d} for n, s, d in ts]  # noqa: E731
        return {"name": path.name, "path": str(path), "format": f.format, "inputs": tensors(f.inputs),
                "outputs": tensors(f.outputs), "params": f.params}
    return model_info(target)


__all__ = ["ModelSpec", "Option", "WEIGHTS_DIR", "build", "demo_available", "demo_metadata", "demo_weights_path",
           "describe", "format_model_ref", "get_spec", "list_models", "load", "model_info", "parse_model_ref"]
