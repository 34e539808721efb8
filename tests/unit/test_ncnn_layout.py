"""Keras -> channels-first ONNX for pnnx: the layout transposes must cancel out even where tf2onnx's own
transpose pass gives up (a 0-d constant, as in hard-swish's x + 3), or every layer of the ncnn model is
wrapped in Permutes (127 of them in Keras' MobileNetV3-Large)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tf2onnx")


def _model():
    """A squeeze-and-excite block as keras.applications' MobileNetV3 writes it (hard-sigmoid with Python
    floats: relu6(s + 3) / 6), between two convolutions."""
    import keras

    x = inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same")(x)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = keras.layers.ReLU()(keras.layers.Conv2D(4, 1)(s))
    s = keras.layers.Conv2D(16, 1)(s)
    s = keras.layers.ReLU(6.0)(s + 3.0) * (1.0 / 6.0)
    x = keras.layers.Multiply()([x, s])
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 1)(x))
    return keras.Model(inp, keras.layers.Dense(4)(x))


def test_hard_swish_export_has_no_layout_transposes(tmp_path):
    import onnx
    import onnxruntime as ort

    from edgecnn.compile.ncnn import onnx_channels_first

    model = _model()
    path = onnx_channels_first(model, tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    assert sum(n.op_type == "Transpose" for n in graph.node) == 0
    x = np.random.default_rng(0).uniform(-4, 4, (1, 8, 8, 3)).astype(np.float32)
    got = ort.InferenceSession(str(path)).run(None, {graph.input[0].name: x.transpose(0, 3, 1, 2)})[0]
    assert np.allclose(got, model(x).numpy(), atol=1e-4)
