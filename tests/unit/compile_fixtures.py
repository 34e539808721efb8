"""Tiny models for the compile tests: the quantize tests' colour classifier, a tiny detector head, and
ONNX files built by hand (one with an op TVM cannot import)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import quantize_fixtures as Q  # noqa: E402

ANCHORS = [[1.0, 1.0], [2.0, 2.0]]


def classifier(folder: Path) -> Path:
    return Q.save_model(folder, Q.color_model())


def detector(folder: Path) -> Path:
    """A 32x32 'detector': conv to a 1x1 grid of 2 anchors x (5 + 1 class) with a detection sidecar."""
    import keras

    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(12, 1, name="head")(keras.layers.MaxPooling2D(16, name="pool")(x))
    model = keras.Model(inp, x, name="dets")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dets.keras"
    model.save(path)
    (folder / "dets.json").write_text(json.dumps({
        "task": "detection", "classes": ["thing"], "preprocessing": Q.PREPROCESSING,
        "head": {"anchors": ANCHORS, "grid": 1, "stride": 32}}))
    return path


def unsupported_onnx(folder: Path) -> Path:
    """Celu: onnxruntime runs it, TVM 0.27's Relax ONNX frontend has no converter for it."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 32, 32, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 32, 3])
    graph = helper.make_graph([helper.make_node("Celu", ["input"], ["y"], alpha=1.0)], "celu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "celu.onnx"
    onnx.save(model, str(path))
    sidecar(path)
    return path


def sidecar(model_path: Path) -> None:
    model_path.with_name(model_path.name.split(".")[0] + ".json").write_text(json.dumps(
        {"task": "classification", "classes": Q.CLASSES, "preprocessing": Q.PREPROCESSING}))


def corrupt(folder: Path, suffix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"broken{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    sidecar(path)
    return path


def target_file(folder: Path, base: str, name: str, **changes) -> Path:
    """A copy of a built-in target with some keys changed (written as TOML by hand: flat values only)."""
    import tomllib

    from edgecnn.targets import builtin_targets_dir

    data = tomllib.loads((builtin_targets_dir() / f"{base}.toml").read_text())
    data.update(name=name, aliases=[], **changes)
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    for key, table in tables:
        lines.append(f"[{key}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, dict)]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
