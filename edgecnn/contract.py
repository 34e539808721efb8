"""A model file's data contract: command-line options, its sidecar, the file's own metadata, and the
task and head decided from them (task_and_head).

The sidecar (`<file name without its last suffix>.json`, README "Your own model files"; read_sidecar) is
the file form of the contract; the options here write the same record, so a user can compile an export
without writing JSON:

    --input-size 224x224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --bgr --layout NCHW
    --classes labels.txt --task classification --resize letterbox --head yolo

Precedence, highest first: options, sidecar, metadata stored in the model file (ONNX
metadata_props as Ultralytics writes them: imgsz, names, task; a detect task means the anchor-free head;
TFLite metadata: the input's normalisation and an output's labels). `--mean`/`--std` are in the 0..1 units
of torchvision and PaddleOCR (x = (pixel / 255 - mean) / std); `--scale`/`--offset` are the raw
form (x = pixel * scale + offset). Standard library at import; onnx, tflite and the heads' checks are
imported where they are used.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from edgecnn.errors import DataError, ModelError
from edgecnn.kinds import Task

SIDECAR_HELP = ('{"preprocessing": {"size": [H, W], "scale": s, "offset": o}, '
                '"task": "classification"|"detection"|"generic", "classes": [...], "head": {"type": "yolo"}}')
OPTION_KEYS = ("input_size", "mean", "std", "scale", "offset", "bgr", "layout", "classes", "task", "resize", "head")
# Ultralytics' metadata task -> edgecnn's; its segment/pose/obb outputs extend the detect format and are
# timed and compared as generic models rather than scored with a wrong decode.
_ULTRALYTICS_TASKS = {"detect": "detection", "classify": "classification", "segment": "generic",
                      "pose": "generic", "obb": "generic"}


def _numbers(text: Any, option: str) -> list[float]:
    if isinstance(text, (int, float)):
        return [float(text)]
    if isinstance(text, (list, tuple)):
        values = list(text)
    else:
        values = [v for v in str(text).replace(" ", "").split(",") if v]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise DataError(f"{option} {text!r}: expected a number or three comma-separated numbers") from None
    if len(numbers) not in (1, 3):
        raise DataError(f"{option} {text!r}: expected a number or three comma-separated numbers (per channel)")
    return numbers


def parse_size(text: Any) -> list[int]:
    """'224', '224x224', '48x192' or [h, w] -> [h, w]; DataError otherwise."""
    parts = list(text) if isinstance(text, (list, tuple)) else str(text).lower().replace(",", "x").split("x")
    try:
        size = [int(p) for p in parts]
    except (TypeError, ValueError):
        size = []
    if len(size) == 1:
        size *= 2
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"--input-size {text!r}: expected HxW (e.g. 224x224 or 48x192) or one number")
    return size


def read_classes(path: str | Path) -> list[str]:
    """A labels file: one name per line, or a JSON list; DataError when unreadable or empty."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"--classes {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            names = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise DataError(f"--classes {path}: not a JSON list ({e.msg})") from None
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"--classes {path}: expected class names, one per line (or a JSON list of strings)")
    return names


def from_options(options: dict[str, Any] | None) -> dict:
    """Options (None = not given) -> a partial sidecar record: {"preprocessing": {...}, "classes", ...}."""
    given = {k: v for k, v in (options or {}).items() if v not in (None, False, ())}
    unknown = sorted(set(given) - set(OPTION_KEYS))
    if unknown:
        raise DataError(f"unknown contract option(s) {unknown}; known: {', '.join(OPTION_KEYS)}")
    record: dict[str, Any] = {}
    pre: dict[str, Any] = {}
    if "input_size" in given:
        pre["size"] = parse_size(given["input_size"])
    if ("mean" in given or "std" in given) and ("scale" in given or "offset" in given):
        raise DataError("give --mean/--std or --scale/--offset, not both: they say the same thing")
    if "mean" in given or "std" in given:
        mean = _numbers(given.get("mean", 0.0), "--mean")
        std = _numbers(given.get("std", 1.0), "--std")
        if any(s <= 0 for s in std):
            raise DataError(f"--std {given.get('std')!r} must be positive")
        if any(abs(m) > 1 for m in mean) or any(s > 1 for s in std):
            raise DataError("--mean/--std are in 0..1 units (pixel / 255), e.g. 0.485,0.456,0.406; for pixel "
                            "units use --scale 1/std --offset -mean/std")
        channels = max(len(mean), len(std))
        mean, std = mean * (channels // len(mean)), std * (channels // len(std))
        scale = [1.0 / (255.0 * s) for s in std]
        offset = [-m / s for m, s in zip(mean, std)]
        pre["scale"], pre["offset"] = (scale[0], offset[0]) if channels == 1 else (scale, offset)
    for key, option in (("scale", "--scale"), ("offset", "--offset")):
        if key in given:
            values = _numbers(given[key], option)
            pre[key] = values[0] if len(values) == 1 else values
    if given.get("bgr"):
        pre["color"] = "bgr"
    if "resize" in given:
        pre["mode"] = str(given["resize"])
    if pre:
        record["preprocessing"] = pre
    if "layout" in given:
        record["layout"] = str(given["layout"]).upper()
    if "classes" in given:
        classes = given["classes"]
        record["classes"] = list(classes) if isinstance(classes, (list, tuple)) else read_classes(classes)
    if "task" in given:
        record["task"] = str(given["task"])
    if "head" in given:
        record["head"] = parse_head(given["head"])
        record.setdefault("task", "detection")
    return record


def parse_head(text: Any) -> dict:
    """--head: a head type with options ("yolo", "yolov5", "yolo:box=xyxy,normalized=true"), inline JSON, or a
    JSON file holding a head object (or a sidecar with one); DataError otherwise. Checked by the loader."""
    if isinstance(text, dict):
        return dict(text)
    text = str(text).strip()
    if text.startswith("{"):
        try:
            head = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"--head {text[:40]!r}: not valid JSON ({e.msg})") from None
    elif text.lower().endswith(".json"):
        try:
            head = json.loads(Path(text).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"--head {text}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
        if isinstance(head, dict) and isinstance(head.get("head"), dict):
            head = head["head"]
    else:
        kind, _, options = text.partition(":")
        head = {"type": kind.strip().lower()}
        for item in filter(None, (o.strip() for o in options.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise DataError(f"--head {text!r}: expected TYPE[:key=value,...], e.g. yolo:box=xyxy")
            try:
                head[key.strip()] = json.loads(value.strip())
            except json.JSONDecodeError:
                head[key.strip()] = value.strip()
    if not isinstance(head, dict):
        raise DataError(f"--head {text[:40]!r}: expected a head object, e.g. {{\"type\": \"yolo\"}}")
    return head


def onnx_metadata(path: str | Path) -> dict:
    """What an ONNX file's metadata_props say about its contract (Ultralytics: imgsz, names); {} otherwise."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - the loader reports unreadable files itself, with its own message
        return {}
    props = {p.key: p.value for p in model.metadata_props}
    record: dict[str, Any] = {}
    if "imgsz" in props:
        try:
            record["preprocessing"] = {"size": parse_size(ast.literal_eval(props["imgsz"]))}
        except (ValueError, SyntaxError, DataError):
            pass  # metadata is a hint: an unreadable one is ignored, the sidecar or options decide
    if "names" in props:
        try:
            names = ast.literal_eval(props["names"])
        except (ValueError, SyntaxError):
            names = None
        if isinstance(names, dict) and all(isinstance(k, int) for k in names):
            record["classes"] = [str(names[k]) for k in sorted(names)]
        elif isinstance(names, list):
            record["classes"] = [str(n) for n in names]
    task = _ULTRALYTICS_TASKS.get(props.get("task", "").strip().lower())
    if task:
        record["task"] = task
        # An end-to-end export (NMS inside the graph, [1, max_det, 6]) is not the anchor-free format.
        if task == "detection" and props.get("end2end", "").strip().lower() != "true":
            record["head"] = {"type": "yolo"}
        elif task == "detection":
            record["task"] = "generic"
    return record


# TFLite metadata's AssociatedFileType TENSOR_AXIS_LABELS: one label per line for an output's class axis.
_AXIS_LABELS = 2


def tflite_metadata(path: str | Path) -> dict:
    """What a .tflite file's TFLite metadata says about its contract: the input's normalisation (mean, std in
    pixel units, as TFLite Support writes them) and an output's axis labels; {} when it has none.

    Read with tflite's model schema and TFLite Support's generated metadata schema (tflite-support, installed
    without its dependencies by tools/setup.sh); {} when either is missing, so the sidecar or options decide.
    """
    try:
        import tflite
        from tensorflow_lite_support.metadata import metadata_schema_py_generated as schema
    except ImportError:
        return {}
    try:
        data = Path(path).read_bytes()
        model = tflite.Model.GetRootAsModel(data, 0)
        buffers = [model.Metadata(i) for i in range(model.MetadataLength())]
        entry = next((m for m in buffers if m.Name() == b"TFLITE_METADATA"), None)
        if entry is None:
            return {}
        meta = schema.ModelMetadata.GetRootAsModelMetadata(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes(), 0)
        if meta.SubgraphMetadataLength() < 1:
            return {}
        graph = meta.SubgraphMetadata(0)
        record: dict[str, Any] = {}
        if graph.InputTensorMetadataLength() == 1:
            tensor = graph.InputTensorMetadata(0)
            for k in range(tensor.ProcessUnitsLength()):
                unit = tensor.ProcessUnits(k)
                if unit.OptionsType() != schema.ProcessUnitOptions.NormalizationOptions:
                    continue
                norm = schema.NormalizationOptions()
                norm.Init(unit.Options().Bytes, unit.Options().Pos)
                mean, std = [float(v) for v in norm.MeanAsNumpy()], [float(v) for v in norm.StdAsNumpy()]
                if mean and std and all(v > 0 for v in std):
                    scale = [1.0 / v for v in std]
                    offset = [-m / v for m, v in zip(mean * (len(std) // len(mean) or 1), std)]
                    one = len(set(scale)) == 1 and len(set(offset)) == 1
                    record["preprocessing"] = {"scale": scale[0] if one else scale,
                                               "offset": offset[0] if one else offset}
        labels = [graph.OutputTensorMetadata(j).AssociatedFiles(a) for j in range(graph.OutputTensorMetadataLength())
                  for a in range(graph.OutputTensorMetadata(j).AssociatedFilesLength())]
        names = [f.Name().decode() for f in labels if f.Type() == _AXIS_LABELS]
        if names:
            record["classes"] = _zip_labels(Path(path), names[0])
            if not record["classes"]:
                del record["classes"]
        return record
    except Exception:  # noqa: BLE001 - metadata is a hint: an unreadable one is ignored, the sidecar decides
        return {}


def _zip_labels(path: Path, name: str) -> list[str]:
    """A labels file packed into the .tflite (TFLite metadata appends its associated files as a zip)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        text = archive.read(name).decode("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def merge(*records: dict) -> dict:
    """Later records win; preprocessing is merged key by key (an option changes one field, not all)."""
    out: dict[str, Any] = {}
    for record in records:
        for key, value in record.items():
            if key == "preprocessing" and isinstance(out.get(key), dict) and isinstance(value, dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def task_and_head(meta: dict, outputs: list, path: Path, side: Path, notes: list[str],
                   head_option: bool = False) -> tuple[str, dict | None]:
    """The task a model file is scored by, and its detector head: as the user or the file's metadata says.

    Never guessed from output shapes beyond one safe case: a model with one [N, C] output and no task
    given is a classifier. Anything else without a declared task is generic (timed and compared with the
    source model, never scored), with a note saying how to declare it.
    """
    from edgecnn.runner.heads import head_spec

    head = meta.get("head")
    word = meta.get("task")
    if word:
        try:
            task = Task.parse(word, "task")
        except ValueError as e:
            raise ModelError(f"{path.name}: {e} (--task, or task in {side.name})") from None
    elif head:
        task = Task.DETECTION
    elif len(outputs) == 1 and len(outputs[0]) == 2:
        task = Task.CLASSIFICATION
    else:
        task = Task.GENERIC
        shapes = ", ".join(_shape_text(tuple(o)) for o in outputs)
        notes.append(f"{path.name}: no task given and its outputs ({shapes}) are not one class-score vector: "
                     "benched as generic (latency, and fidelity to the source model; no accuracy). A detector "
                     "needs --head (README, 'Detection heads'); a classifier --task classification")
    if task == Task.DETECTION:
        if not head:
            raise ModelError(f"{path.name}: a detector needs its head to decode its outputs: pass --head (yolo, "
                             f"yolov5, ssd:FILE.json, ...) or write head in {side.name} (README, 'Detection heads')")
        head = head_spec(head, f"{path.name} head")
    elif head and head_option:
        raise ModelError(f"{path.name}: --head is given but the task is {task.value}; heads decode detectors")
    elif head:  # the sidecar's or metadata's head, overridden by --task: not used
        notes.append(f"{path.name}: task {task.value} (--task): the head in {side.name} or the metadata is not used")
        head = None
    if task == Task.CLASSIFICATION:
        _check_class_count(meta.get("classes"), outputs, path)
    return task.value, head


def _check_class_count(classes, outputs: list, path: Path) -> None:
    """ModelError when a classifier's output is not one score vector, or its width and the class names
    disagree (never scored). Free dims leave it to the runner, which checks the scores it gets."""
    if len(outputs) != 1:
        raise ModelError(f"{path.name}: a classifier has one output (class scores); this model has "
                         f"{len(outputs)}: pass --task generic, or --head for a detector")
    dims = tuple(outputs[0])[1:]
    if not dims or not all(isinstance(d, int) and d > 0 for d in dims):
        return
    wide = [d for d in dims if d != 1]
    if len(wide) > 1:
        raise ModelError(f"{path.name}: a classifier's output is [N, C] class scores, this one is "
                         f"{_shape_text(tuple(outputs[0]))}: pass --task generic, or --head for a detector")
    width = wide[0] if wide else 1
    if classes and width != len(classes):
        raise ModelError(f"{path.name}: the model scores {width} classes but {len(classes)} class names are "
                         "given: the names must list every output class in order")


def static_size(shape: tuple, layout: str) -> list[int] | None:
    """[H, W] of a 4-D image input whose spatial dims are fixed, else None."""
    if len(shape) != 4:
        return None
    h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    return [h, w] if all(isinstance(d, int) and d > 0 for d in (h, w)) else None


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
    _check_sidecar(data, side)
    return data


# Sidecar fields edgecnn reads -> allowed JSON types (others, e.g. a derived model's report, pass through).
_SIDECAR_TYPES: dict[str, tuple[type, ...]] = {
    "preprocessing": (dict,), "task": (str,), "classes": (list, type(None)), "head": (dict, type(None)),
    "demo": (bool,), "model": (str,), "layout": (str,),
}
_TYPE_WORDS = {dict: "an object", str: "a string", list: "a list", bool: "true or false", type(None): "null"}


def _check_sidecar(data: dict, side: Path) -> None:
    """ModelError naming the sidecar and the field whose JSON type is wrong (never guessed or coerced)."""
    for key, types in _SIDECAR_TYPES.items():
        value = data.get(key)
        if key in data and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            words = " or ".join(_TYPE_WORDS[t] for t in types)
            raise ModelError(f"{side}: {key} must be {words}, got {json.dumps(value)[:60]}")
    if not all(isinstance(c, str) for c in data.get("classes") or ()):
        raise ModelError(f"{side}: classes must be a list of strings, got {json.dumps(data['classes'])[:60]}")
    anchors = (data.get("head") or {}).get("anchors")
    if anchors is not None and not (isinstance(anchors, list) and all(
            isinstance(a, list) and len(a) == 2 and all(_is_number(x) and x > 0 for x in a) for a in anchors)):
        raise ModelError(f"{side}: head.anchors must be a list of [w, h] pairs of positive numbers, "
                         f"got {json.dumps(anchors)[:60]}")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
