"""Reading users' model files: Keras, SavedModel, TFLite, ONNX; corrupt or unknown files give one-line errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import ModelError
from edgecnn.zoo.files import inspect_model_file


@pytest.fixture(scope="module")
def tiny_keras():
    import keras
    from keras import layers

    x = keras.Input((8, 8, 3), name="image")
    y = layers.Conv2D(4, 3, padding="same", name="conv")(x)
    y = layers.GlobalAveragePooling2D(name="pool")(y)
    y = layers.Dense(2, name="logits")(y)
    return keras.Model(x, y, name="tiny")  # 3*3*3*4 + 4 + 4*2 + 2 = 122 parameters


@pytest.fixture
def tiny_onnx(tmp_path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def test_keras_file(tiny_keras, tmp_path):
    tiny_keras.save(tmp_path / "tiny.keras")
    info = inspect_model_file(tmp_path / "tiny.keras")
    assert info.format == "keras" and info.path == tmp_path / "tiny.keras"
    assert info.inputs == (("image", (None, 8, 8, 3), "float32"),)
    assert info.outputs == (("logits", (None, 2), "float32"),)
    assert info.params == 122


def test_legacy_h5_file(tiny_keras, tmp_path):
    tiny_keras.save(tmp_path / "tiny.h5")
    info = inspect_model_file(str(tmp_path / "tiny.h5"))
    assert info.format == "keras" and info.params == 122 and info.inputs[0][1] == (None, 8, 8, 3)


def test_tflite_file(tiny_keras, tmp_path):
    import tensorflow as tf

    path = tmp_path / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tiny_keras).convert())
    info = inspect_model_file(path)
    assert info.format == "tflite" and info.params is None
    [(_, shape, dtype)] = info.inputs
    assert shape == (None, 8, 8, 3) and dtype == "float32"
    assert [o[1:] for o in info.outputs] == [((None, 2), "float32")]


def test_savedmodel_directory(tiny_keras, tmp_path):
    tiny_keras.export(str(tmp_path / "sm"), verbose=False)
    info = inspect_model_file(tmp_path / "sm")
    assert info.format == "savedmodel" and info.params == 122
    assert info.inputs == (("image", (None, 8, 8, 3), "float32"),)
    assert [o[1:] for o in info.outputs] == [((None, 2), "float32")]


def test_onnx_file(tiny_onnx):
    info = inspect_model_file(tiny_onnx)
    assert info.format == "onnx" and info.params == 4 * 3 * 3 * 3 + 4
    assert info.inputs == (("x", (None, 3, 8, 8), "float32"),)  # the weights are not inputs
    assert info.outputs == (("y", (None, 4, 8, 8), "float32"),)


def test_describe_a_file_or_a_reference(tiny_onnx, tmp_path, monkeypatch):
    from edgecnn import zoo

    info = zoo.describe(str(tiny_onnx))
    assert info["format"] == "onnx" and info["name"] == "tiny.onnx" and info["params"] == 112
    assert info["inputs"] == [{"name": "x", "shape": [None, 3, 8, 8], "dtype": "float32"}]
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    assert zoo.describe("yolo_lite:classes=20")["macs"] == pytest.approx(241e6, rel=0.02)
    with pytest.raises(ModelError, match="unknown model 'resnet'"):
        zoo.describe("resnet")
    with pytest.raises(ModelError, match="model file not found"):
        zoo.describe("models/resnet.onnx")


def _raises_one_line(path, match: str):
    with pytest.raises(ModelError, match=match) as info:
        inspect_model_file(path)
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("suffix,match", [
    (".onnx", "cannot read ONNX model .*: not an ONNX protobuf"),
    (".tflite", "cannot read TFLite model"),
    (".keras", "cannot read Keras model .*: not a .keras zip archive"),
    (".h5", "cannot read Keras model"),
])
def test_random_bytes_are_rejected(tmp_path, suffix, match):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _raises_one_line(path, match)


def test_other_broken_files(tmp_path):
    import onnx

    _raises_one_line(tmp_path / "missing.onnx", "model file not found")
    (tmp_path / "model.pt").write_bytes(b"x")
    _raises_one_line(tmp_path / "model.pt", "unsupported model file 'model.pt': expected .keras")
    (tmp_path / "empty.tflite").write_bytes(b"")
    _raises_one_line(tmp_path / "empty.tflite", "is empty")
    (tmp_path / "w.weights.h5").write_bytes(b"x")
    _raises_one_line(tmp_path / "w.weights.h5", "weights only, not a model")
    with zipfile.ZipFile(tmp_path / "nocfg.keras", "w") as z:
        z.writestr("foo", "bar")
    _raises_one_line(tmp_path / "nocfg.keras", "cannot read Keras model .*config.json")
    (tmp_path / "noir.onnx").write_bytes(onnx.ModelProto(producer_name="x").SerializeToString())
    _raises_one_line(tmp_path / "noir.onnx", "invalid ONNX model .*ir_version")
    (tmp_path / "plain").mkdir()
    _raises_one_line(tmp_path / "plain", "directory without saved_model.pb")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"\xff" * 64)
    _raises_one_line(tmp_path / "sm", "cannot read SavedModel")


# ---------------------------------------------------------------- load_source: refused at the edge, for every stage


def _onnx_with_input(path: Path, shape: list) -> Path:
    """An identity ONNX model with one float input of `shape`, plus a classification sidecar."""
    import onnx
    from onnx import TensorProto, helper

    from fixtures import model_files

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    model_files.sidecar(path)
    return path


@pytest.mark.parametrize("shape, message", [
    ([1, 10], r"input shape \(1, 10\) is not an image batch \(N, H, W, 3\)"),
    ([1, 3, 32, 3], r"input \(1, 3, 32, 3\) could be NCHW or NHWC; pass --layout"),
    ([1, 32, 32, 4], r"input \(1, 32, 32, 4\) wants 4 channels"),
    ([1, 64, 64, 3], r"does not match the preprocessing size 32x32"),
])
def test_onnx_input_that_is_not_an_image_batch_is_refused(tmp_path, shape, message):
    from edgecnn.source import load_source

    path = _onnx_with_input(tmp_path / "odd.onnx", shape)
    with pytest.raises(ModelError, match=message):
        load_source(path)


def test_unknown_name_says_unknown_model_not_file_not_found(tmp_path, monkeypatch):
    from edgecnn.source import load_source

    monkeypatch.chdir(tmp_path)
    for ref in ("resnet50", "resnet50:alpha=0.5"):
        with pytest.raises(ModelError, match=r"unknown model 'resnet50'; known models: .*mobilenet_v2") as e:
            load_source(ref)
        assert "not found" not in str(e.value)
    with pytest.raises(ModelError, match="model file not found"):
        load_source("resnet50.onnx")  # a model-file suffix: the user meant a file
    with pytest.raises(ModelError, match="model file not found"):
        load_source("models/resnet50")


@pytest.mark.parametrize("edit, message", [
    ({"classes": "red,green"}, r"classes must be a list or null, got \"red,green\""),
    ({"classes": [1, 2, 3, 4]}, "classes must be a list of strings"),
    ({"preprocessing": [32, 32]}, "preprocessing must be an object"),
    ({"task": 3}, "task must be a string"),
    ({"head": [[1, 1]]}, "head must be an object or null"),
    ({"head": {"anchors": [1, 2]}}, r"head.anchors must be a list of \[w, h\] pairs"),
    ({"demo": "yes"}, "demo must be true or false"),
])
def test_sidecar_fields_of_the_wrong_type_are_named(tmp_path, edit, message):
    import json

    from edgecnn.source import load_source

    path = _onnx_with_input(tmp_path / "m.onnx", [1, 32, 32, 3])
    side = tmp_path / "m.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), **edit}))
    with pytest.raises(ModelError, match=message) as e:
        load_source(path)
    assert str(side) in str(e.value)


def test_channels_first_onnx_with_free_dims_is_bound_at_intake(tmp_path, monkeypatch):
    """A PyTorch/Paddle-style export: NCHW, free batch, height and width -> a (1, 3, 32, 32) copy to build from."""
    import onnx

    from edgecnn.source import load_source

    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    path = _onnx_with_input(tmp_path / "torch.onnx", ["N", 3, "H", "W"])
    src = load_source(path)
    assert src.layout == "NCHW" and src.static_shape == [1, 3, 32, 32]
    assert src.file == path and src.path != path and src.path.is_file()
    dims = onnx.load(str(src.path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 32, 32]
    assert any("bound to (1, 3, 32, 32)" in n for n in src.notes)
    assert load_source(path).path == src.path  # cached by content: made once
    with pytest.raises(ModelError, match="layout must be NHWC or NCHW"):
        load_source(path, layout="CHW")
