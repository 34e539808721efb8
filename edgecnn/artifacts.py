"""The bundle: what `edgecnn compile` writes and the runner reads, on the board or anywhere.

A bundle is a folder with the model file(s) and a manifest.json that says
everything needed to run and evaluate it: the target and backend it was built
for, the tensors it takes and gives (with int8 scale/zero-point), the data
contract (preprocessing, classes, the detector head and its post-processing
thresholds), what it came from (a content hash) and the versions of every tool
used. Nothing else is needed to run it, so the runner can live on a Pi with
numpy and one runtime.

Standard library only: the runner imports this module on the board.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecnn.errors import ModelError
from edgecnn.kinds import Backend, Precision

__all__ = ["Backend", "Bundle", "Manifest", "Precision", "TensorSpec", "file_sha256", "load_bundle",
           "text_sha256", "write_manifest"]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the runtime sees it."""

    name: str
    shape: list[int]  # NHWC for images; -1 for a free dimension
    dtype: str  # numpy dtype name: "float32", "int8", "uint8", ...
    layout: str = "NHWC"  # "NHWC" | "NCHW" | "" (not an image)
    scale: float | None = None  # int8 tensors: real = scale * (q - zero_point)
    zero_point: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "tensor") -> "TensorSpec":
        """A tensor entry of manifest.json; ModelError naming the entry (`where`, e.g. inputs[0]) and field."""
        d = _known(cls, d, where)
        _check_fields(d, _TENSOR_TYPES, where)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in d["shape"]):
            raise ModelError(f"manifest: {where}.shape must be a list of integers, got {_shown(d['shape'])}")
        return cls(**d)


@dataclass(frozen=True)
class Manifest:
    """manifest.json of a bundle. `files` maps a role to a file name inside the bundle.

    Roles: "model" (the .tflite / .onnx file, or TVM's aarch64/x86 shared library);
    a backend may add more (e.g. "params"). `backend_options` holds the backend's settings
    the runner must honour: {"threads": 4, "delegate": "xnnpack"} for TFLite,
    {"execution_provider": "CPUExecutionProvider", "disabled_optimizers": [...]} for ONNX (the graph
    optimisers quantize's speed check found the int8 model faster without), {"device": "cpu" | "cuda",
    "entry": "main"} for TVM (manifests written before the rename call it `runtime`; both
    read the same). `postprocess` for detectors: {"kind": "yolo_region",
    "conf_threshold", "iou_threshold", "max_detections"}; null for classifiers.
    """

    name: str  # model stem, e.g. "yolo_lite"
    target: str  # target name (targets/<name>.toml)
    arch: str  # "aarch64" | "x86_64": the machine the model file runs on
    backend: str  # Backend value
    precision: str  # Precision value
    files: dict[str, str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    task: str  # a Task value: "classification" | "detection"
    preprocessing: dict[str, Any]  # edgecnn.data.preprocess.Preprocessing.to_dict()
    classes: list[str] | None = None
    head: dict[str, Any] | None = None  # detectors: {"anchors": [[w, h], ...], "grid": 7, "stride": 32}
    postprocess: dict[str, Any] | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # {"ref", "sha256", "weights"}
    pruning: dict[str, Any] | None = None  # {"method": "channel", "ratio": 0.3}
    macs: int | None = None
    params: int | None = None
    tools: dict[str, str] = field(default_factory=dict)  # package -> version, for every tool used
    verification: dict[str, Any] = field(default_factory=dict)  # {"status", "mode", "max_abs_diff", "cosine", ...}
    build: dict[str, Any] = field(default_factory=dict)  # how it was built: {"tvm_target", "tuning": {...}}
    # Integer-input models: how 8-bit pixels become the input without floats (edgecnn.runner.tensors.PixelInput):
    # {"kind": "xor" | "lut" | "identity", "dtype": "int8"}; None: the runner normalises in float and quantises.
    input_step: dict[str, Any] | None = None
    cache_key: str = ""
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        """manifest.json as read; ModelError naming the field for anything missing or of the wrong type."""
        d = _known(cls, _renamed(d), "manifest")
        version = d.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ModelError(f"bundle format {version!r} is not supported (this edgecnn reads {FORMAT_VERSION})")
        _check_fields(d, _MANIFEST_TYPES, "manifest")
        for key, kind in (("backend", Backend), ("precision", Precision)):
            if d.get(key) not in kind.values():
                raise ModelError(f"manifest: {key} must be one of {', '.join(kind.values())}, got {d.get(key)!r}")
        for key in ("files", "tools"):
            bad = next((k for k, v in d.get(key, {}).items() if not isinstance(v, str)), None)
            if bad is not None:
                raise ModelError(f"manifest: {key}.{bad} must be a string, got {_shown(d[key][bad])}")
        if d.get("classes") is not None and not all(isinstance(c, str) for c in d["classes"]):
            raise ModelError(f"manifest: classes must be a list of strings, got {_shown(d['classes'])}")
        d["inputs"] = [TensorSpec.from_dict(t, f"inputs[{i}]") for i, t in enumerate(d["inputs"])]
        d["outputs"] = [TensorSpec.from_dict(t, f"outputs[{i}]") for i, t in enumerate(d["outputs"])]
        return cls(**d)


def _renamed(d: Any) -> Any:
    """A manifest dict with the pre-rename `runtime` key read as `backend_options`."""
    if not isinstance(d, dict) or "runtime" not in d:
        return d
    if "backend_options" in d:
        raise ModelError("manifest: both runtime and backend_options given (runtime is the old name)")
    d = dict(d)
    d["backend_options"] = d.pop("runtime")
    return d


def _known(cls, d: Any, where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        shown = "the manifest" if where == "manifest" else where
        raise ModelError(f"manifest: {shown} must be an object, got {_shown(d)}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ModelError(f"manifest: unknown {where} field(s) {', '.join(unknown)}")
    return dict(d)


# Field -> the JSON types it may have (None: may be null); a field of the dataclass without a default is required.
_NULL = type(None)
_TENSOR_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "shape": (list,), "dtype": (str,), "layout": (str,), "scale": (int, float, _NULL),
    "zero_point": (int, _NULL),
}
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "target": (str,), "arch": (str,), "backend": (str,), "precision": (str,), "files": (dict,),
    "inputs": (list,), "outputs": (list,), "task": (str,), "preprocessing": (dict,), "classes": (list, _NULL),
    "head": (dict, _NULL), "postprocess": (dict, _NULL), "backend_options": (dict,), "source": (dict,),
    "pruning": (dict, _NULL), "macs": (int, _NULL), "params": (int, _NULL), "tools": (dict,),
    "verification": (dict,), "build": (dict,), "cache_key": (str,), "format_version": (int,),
}
_JSON_WORDS = {str: "a string", list: "a list", dict: "an object", int: "an integer", float: "a number",
               _NULL: "null"}


def _shown(value: Any) -> str:
    """A parsed JSON value as its writer sees it: 'string "image"', 'list [1, 2]', 'null', 'true'."""
    text = json.dumps(value, default=str)
    text = text if len(text) <= 60 else text[:57] + "..."
    for typ, word in ((bool, ""), (str, "string "), ((int, float), "number "), (list, "list "), (dict, "object ")):
        if isinstance(value, typ):
            return word + text
    return text


def _check_fields(d: dict[str, Any], types: dict[str, tuple[type, ...]], where: str) -> None:
    """Every required field present and every field of its JSON type; ModelError naming `where`.field."""
    cls = TensorSpec if types is _TENSOR_TYPES else Manifest
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    prefix = "" if where == "manifest" else f"{where}."
    for key, allowed in types.items():
        if key not in d:
            if key in required:
                raise ModelError(f"manifest: missing field {prefix}{key}")
            continue
        value = d[key]
        if not isinstance(value, allowed) or isinstance(value, bool):
            words = " or ".join(dict.fromkeys(_JSON_WORDS[t] for t in allowed))
            raise ModelError(f"manifest: {prefix}{key} must be {words}, got {_shown(value)}")


@dataclass(frozen=True)
class Bundle:
    """A bundle folder on disk with its parsed manifest."""

    path: Path
    manifest: Manifest

    def file(self, role: str = "model") -> Path:
        try:
            return self.path / self.manifest.files[role]
        except KeyError:
            raise ModelError(f"bundle {self.path} has no {role!r} file in its manifest") from None

    @property
    def size_bytes(self) -> int:
        """Bytes of the files the runner loads (the manifest excluded)."""
        return sum((self.path / name).stat().st_size for name in self.manifest.files.values())


def load_bundle(path: str | Path) -> Bundle:
    """Read and check a bundle folder (or its manifest.json); ModelError when it is not a usable bundle."""
    path = Path(path)
    if path.name == MANIFEST and path.is_file():
        path = path.parent
    if not path.is_dir():
        raise ModelError(f"bundle not found: {path} (make one with `edgecnn compile`)")
    manifest_path = path / MANIFEST
    try:
        data = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} is not a bundle: no {MANIFEST} (make one with `edgecnn compile`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{manifest_path}: not valid JSON ({e})") from None
    bundle = Bundle(path, Manifest.from_dict(data))
    for role, name in bundle.manifest.files.items():
        if "/" in name or name.startswith(".") or not (path / name).is_file():
            raise ModelError(f"bundle {path}: {role} file {name!r} is missing")
    return bundle


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write manifest.json into a bundle folder being built (inside paths.atomic_dir)."""
    out = Path(folder) / MANIFEST
    out.write_text(json.dumps(manifest.to_dict(), indent=1, sort_keys=False) + "\n")
    return out


def text_sha256(text: str) -> str:
    """SHA-256 of a text's UTF-8 bytes (e.g. the CUDA source a bundled cubin was compiled from)."""
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, or of every file under a folder (names and bytes, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()
