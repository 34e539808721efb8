"""edgecnn.frameworks.convert on tiny models: each converter's result against its source, and its refusals.

The colour classifier (fixtures.colors) gives the fp32, float16 and int8 .tflite
files; the NCHW ONNX files are built with onnx.helper as PyTorch would export
them. Figures are compared on the colour images (val for agreement, calibration
for int8 ranges) or on fixed random inputs for random-weight models.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecnn.errors import DataError, EdgecnnWarning, ModelError, ToolError
from edgecnn.frameworks import convert, litert, ort
from edgecnn.runner.metrics import output_agreement
from fixtures import colors as Q


def _images(folder: Path) -> np.ndarray:
    paths = sorted(folder.rglob("*.png"))
    rgb = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
    return np.stack(rgb).astype(np.float32) * np.float32(Q.PREPROCESSING["scale"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """fp32 / fp16 / int8 .tflite of the colour model, its ONNX export, and the colour images."""
    import tensorflow as tf

    from edgecnn.frameworks import tf as etf

    root = tmp_path_factory.mktemp("convert")
    model = Q.color_model()
    calib = _images(Q.make_calibration(root / "calib", 24))
    (root / "fp32.tflite").write_bytes(etf.tflite_float(model))
    (root / "fp16.tflite").write_bytes(etf.tflite_fp16(model))
    c = etf.tflite_converter(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Statistics for quantized inputs")  # TF's note on every int8 export
        (root / "int8-float-io.tflite").write_bytes(etf.convert(c, "int8 fixture, float interface"))
        c.inference_input_type = c.inference_output_type = tf.int8
        (root / "int8.tflite").write_bytes(etf.convert(c, "int8 fixture"))
    etf.onnx_float(model, root / "nhwc.onnx")
    return {"root": root, "calib": calib, "val": _images(Q.make_val(root / "val")), "keras": model}


def _nchw_onnx(path: Path, shape=(1, 3, 32, 32), op: str | None = None) -> Path:
    """Conv 3->8 k3 s2 pad1, Relu, GlobalAveragePool, Flatten, Gemm to 4: a PyTorch-style NCHW classifier.

    op="CastLike" appends an op onnx2tf 1.29 has no converter for (onnxruntime runs it).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    sizes = [("W", (8, 3, 3, 3), 0.3), ("B", (8,), 0.1), ("G", (4, 8), 0.5), ("C", (4,), 0.1)]
    weights = [numpy_helper.from_array(rng.normal(0, s, dims).astype(np.float32), name) for name, dims, s in sizes]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "G", "C"], ["y"], transB=1)]
    out_type = TensorProto.FLOAT
    if op == "CastLike":
        weights.append(numpy_helper.from_array(np.zeros(1, np.float16), "like"))
        nodes[-1].output[0] = "g"
        nodes.append(helper.make_node("CastLike", ["g", "like"], ["y"]))
        out_type = TensorProto.FLOAT16
    graph = helper.make_graph(nodes, "nchw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", out_type, [shape[0], 4])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _close(ref: np.ndarray, out: np.ndarray, rel: float = 1e-4) -> None:
    fig = output_agreement(ref, out)
    assert fig.max_abs_diff <= rel * fig.scale, f"max |diff| {fig.max_abs_diff:g} (scale {fig.scale:g})"


# ---------------------------------------------------------------------------------------------- tflite -> onnx


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tflite_to_onnx_matches_litert(files, precision):
    src = files["root"] / f"{precision}.tflite"
    out = convert.tflite_to_onnx(src, files["root"] / "onnx" / f"{precision}.onnx")
    sess = ort.session(out)
    assert [int(d) if isinstance(d, int) else None for d in sess.get_inputs()[0].shape][1:] == [32, 32, 3]  # NHWC
    assert sess.get_inputs()[0].type == "tensor(float)"  # float16 weights became fp32 constants
    ref = litert.predictor(src)(files["val"])[0]
    got = ort.predictor(out)(files["val"])[0]
    _close(ref, got)  # measured: 4.8e-6 on logits up to 7.9, fp32 and fp16 alike
    assert (ref.argmax(1) == got.argmax(1)).all()


def test_tflite_to_onnx_int8_keeps_integer_io(files):
    src = files["root"] / "int8.tflite"
    out = convert.tflite_to_onnx(src, files["root"] / "onnx" / "int8.onnx")
    sess = ort.session(out)
    assert sess.get_inputs()[0].type == "tensor(int8)" and sess.get_outputs()[0].type == "tensor(int8)"
    it = litert.interpreter(src)
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    from edgecnn.runner.tensors import to_integer

    for image in files["val"]:
        q = to_integer(image[None], np.int8, *inp["quantization"])  # the .tflite's scale: the ONNX has the same
        it.set_tensor(inp["index"], q)
        it.invoke()
        ref = it.get_tensor(outp["index"]).astype(int)
        got = sess.run(None, {sess.get_inputs()[0].name: q})[0].astype(int)
        assert np.abs(ref - got).max() <= convert.INT8_MAX_LSB


def test_tflite_to_onnx_int8_with_a_float_interface(files):
    src = files["root"] / "int8-float-io.tflite"
    out = convert.tflite_to_onnx(src, files["root"] / "onnx" / "int8-float-io.onnx")
    assert ort.session(out).get_inputs()[0].type == "tensor(float)"
    _close(litert.predictor(src)(files["val"])[0], ort.predictor(out)(files["val"])[0])  # measured: equal


def test_tflite_to_onnx_names_an_op_it_cannot_convert(tmp_path):
    import keras

    from edgecnn.frameworks import tf as etf

    inp = keras.Input((8,))
    src = tmp_path / "gelu.tflite"
    src.write_bytes(etf.tflite_float(keras.Model(inp, keras.layers.Dense(4, activation="gelu")(inp))))
    with pytest.raises(ModelError, match=r"TFLite op\(s\) GELU .*LiteRT"):
        convert.tflite_to_onnx(src, tmp_path / "gelu.onnx")
    assert not (tmp_path / "gelu.onnx").exists()


# ---------------------------------------------------------------------------------------------- onnx -> tflite


@pytest.mark.slow
def test_onnx_to_tflite_turns_nchw_into_nhwc(tmp_path, monkeypatch):
    src = _nchw_onnx(tmp_path / "src" / "net.onnx")
    before = src.read_bytes()
    monkeypatch.chdir(tmp_path / "src")  # onnx2tf looks for (and would fetch) sample data in the cwd
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    state = np.random.get_state()[1].copy()
    out = convert.onnx_to_tflite(src, tmp_path / "out")
    assert "TF_USE_LEGACY_KERAS" not in os.environ and (np.random.get_state()[1] == state).all()
    assert out == tmp_path / "out" / "net.tflite" and sorted(p.name for p in (tmp_path / "out").iterdir()) == [out.name]
    assert src.read_bytes() == before, "onnx2tf must work on a copy: it rewrites its input in place"
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == ["net.onnx"]
    assert list(litert.interpreter(out).get_input_details()[0]["shape"]) == [1, 32, 32, 3]  # NHWC
    assert litert.precision(out) == "fp32"
    x = np.random.default_rng(5).random((4, 1, 3, 32, 32), dtype=np.float32)
    sess = ort.session(src)
    ref = np.concatenate([sess.run(None, {"x": xi})[0] for xi in x])
    got = litert.predictor(out)(x[:, 0].transpose(0, 2, 3, 1))[0]
    _close(ref, got)  # measured: 7e-8 on outputs up to 0.45


@pytest.mark.slow
def test_onnx_to_tflite_fp16(tmp_path):
    out = convert.onnx_to_tflite(_nchw_onnx(tmp_path / "net.onnx"), tmp_path / "out", precision="fp16")
    assert out.name == "net.fp16.tflite" and litert.precision(out) == "fp16"


@pytest.mark.slow
def test_onnx_to_tflite_converts_one_graph_once(tmp_path, monkeypatch):
    """A model compiled for a second board (or quantized after compiling) gets the checked conversion back."""
    import onnx2tf

    from edgecnn.errors import EdgecnnError

    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    src = _nchw_onnx(tmp_path / "net.onnx")
    first = convert.onnx_to_tflite(src, tmp_path / "a")
    kept = list((tmp_path / "cache" / "exports" / "onnx2tf").iterdir())
    assert len(kept) == 1 and kept[0].read_bytes() == first.read_bytes()
    calls = []

    def converter_called(**kw):
        calls.append(kw)
        raise RuntimeError("not this time")

    monkeypatch.setattr(onnx2tf, "convert", converter_called)
    again = convert.onnx_to_tflite(tmp_path / "net.onnx", tmp_path / "b")
    assert not calls and again == tmp_path / "b" / "net.tflite" and again.read_bytes() == first.read_bytes()
    with pytest.raises(EdgecnnError):  # another input binding is another conversion
        convert.onnx_to_tflite(_nchw_onnx(tmp_path / "other.onnx", shape=(1, 3, 16, 16)), tmp_path / "c")
    assert len(calls) == 1


@pytest.mark.slow
def test_onnx_to_tflite_binds_free_dimensions(tmp_path):
    src = _nchw_onnx(tmp_path / "dyn.onnx", shape=("N", 3, "h", "w"))
    with pytest.raises(ModelError, match=r"free dimensions \['h', 'w'\].*input_shape"):
        convert.onnx_to_tflite(src, tmp_path / "out")
    with pytest.raises(ModelError, match="disagrees with the fixed dimension 1"):
        convert.onnx_to_tflite(src, tmp_path / "out", input_shape=(1, 4, 16, 20))
    out = convert.onnx_to_tflite(src, tmp_path / "out", input_shape=(1, 3, 16, 20))
    assert list(litert.interpreter(out).get_input_details()[0]["shape"]) == [1, 16, 20, 3]


@pytest.mark.slow
def test_onnx_to_tflite_keeps_an_nhwc_export_nhwc(files, tmp_path):
    out = convert.onnx_to_tflite(files["root"] / "nhwc.onnx", tmp_path, layout="NHWC")
    it = litert.interpreter(out, delegates=False)
    assert list(it.get_input_details()[0]["shape"]) == [1, 32, 32, 3]
    assert "TRANSPOSE" not in {op["op_name"] for op in it._get_ops_details()}  # noqa: SLF001
    _close(files["keras"].predict(files["val"], verbose=0), litert.predictor(out)(files["val"])[0])
    with pytest.raises(ModelError, match="unknown layout"):
        convert.onnx_to_tflite(files["root"] / "nhwc.onnx", tmp_path, layout="HWC")


@pytest.mark.slow
def test_onnx_to_tflite_names_an_op_it_cannot_convert(tmp_path):
    with pytest.raises(ModelError, match="no TFLite conversion for ONNX op CastLike .*onnxruntime"):
        convert.onnx_to_tflite(_nchw_onnx(tmp_path / "cl.onnx", op="CastLike"), tmp_path / "out")


def test_onnx_to_tflite_refuses_what_it_cannot_read(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot read .*bad.onnx as ONNX"):
        convert.onnx_to_tflite(bad, tmp_path / "out")
    with pytest.raises(ModelError, match="quantize_tflite_int8"):
        convert.onnx_to_tflite(bad, tmp_path / "out", precision="int8")


# ------------------------------------------------------------------------------------------------ tflite -> int8


def _quantize(files, name: str, **kw) -> Path:
    samples = [{"image": files["calib"][i:i + 1]} for i in range(len(files["calib"]))]
    return convert.quantize_tflite_int8(files["root"] / "fp32.tflite", samples, files["root"] / name, **kw)


def test_quantize_tflite_int8_agrees_with_the_float_file(files):
    out = _quantize(files, "q-tensor.tflite", per_channel=False)
    assert litert.precision(out) == "int8"
    assert litert.interpreter(out).get_input_details()[0]["dtype"] == np.int8
    # On the calibration images: each has one dominant colour. The val set's d_none image is a near-tie of
    # three logits that one int8 step may flip.
    ref = litert.predictor(files["root"] / "fp32.tflite")(files["calib"])[0]
    got = litert.predictor(out)(files["calib"])[0]
    assert (ref.argmax(1) == got.argmax(1)).all()
    assert output_agreement(ref, got).cosine >= 0.999  # measured: 0.99999 (min over images)


def test_quantize_tflite_int8_per_channel_loses_a_dead_channels_bias(files):
    """The colour model's 4th logit has all-zero weights and bias -5: ai-edge-quantizer 0.10.0's per-channel
    scale for it collapses, and the bias goes with it (convert.py's docstring says so; per_channel=False keeps it)."""
    out = _quantize(files, "q-channel.tflite")
    ref = litert.predictor(files["root"] / "fp32.tflite")(files["calib"])[0]
    got = litert.predictor(out)(files["calib"])[0]
    assert (ref.argmax(1) == got.argmax(1)).all()
    assert output_agreement(ref[:, :3], got[:, :3]).cosine >= 0.999  # the live channels
    assert np.allclose(got[:, 3], 0.0, atol=0.1), "ai-edge-quantizer now keeps it: drop the note in convert.py"


@pytest.mark.slow
def test_quantize_tflite_int8_of_an_onnx2tf_result(tmp_path):
    """The path for a PyTorch model on LiteRT at int8: NCHW ONNX -> onnx2tf -> ai-edge-quantizer."""
    src = _nchw_onnx(tmp_path / "net.onnx")
    fp32 = convert.onnx_to_tflite(src, tmp_path)
    rng = np.random.default_rng(7)
    calib = [{"x": rng.random((1, 32, 32, 3), dtype=np.float32)} for _ in range(16)]  # signature name = ONNX name
    out = convert.quantize_tflite_int8(fp32, calib, tmp_path / "net-int8.tflite")
    x = rng.random((8, 32, 32, 3), dtype=np.float32)
    fig = output_agreement(litert.predictor(fp32)(x)[0], litert.predictor(out)(x)[0])
    assert fig.cosine >= 0.99, fig


def test_quantize_tflite_int8_without_a_signature(files, tmp_path):
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray((files["root"] / "fp32.tflite").read_bytes()))
    obj.signatureDefs = []
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(obj)))
    name = litert.interpreter(bare).get_input_details()[0]["name"]  # a tensor name works as the input name
    samples = [{name: files["calib"][i:i + 1]} for i in range(8)]
    out = convert.quantize_tflite_int8(bare, samples, tmp_path / "bare-int8.tflite", per_channel=False)
    assert litert.precision(out) == "int8"


def test_quantize_tflite_int8_refuses_bad_input(files, tmp_path):
    src = files["root"] / "fp32.tflite"
    one = files["calib"][:1]
    cases = [([], "no calibration samples"), ([{"pixels": one}], r"has input 'pixels'; .* takes \['image'\]"),
             ([{"image": one[0]}], r"got float32 \(32, 32, 3\), .* takes float32 \(1, 32, 32, 3\)")]
    for samples, message in cases:
        with pytest.raises(DataError, match=message):
            convert.quantize_tflite_int8(src, samples, tmp_path / "x.tflite")
    with pytest.raises(ModelError, match="already int8"):
        convert.quantize_tflite_int8(files["root"] / "int8.tflite", [], tmp_path / "x.tflite")
    with pytest.raises(ModelError, match="float16 weights"):
        convert.quantize_tflite_int8(files["root"] / "fp16.tflite", [], tmp_path / "x.tflite")


def test_quantize_tflite_int8_names_ops_left_in_float(tmp_path):
    import keras
    import tensorflow as tf

    from edgecnn.frameworks import tf as etf

    inp = keras.Input((16,), name="v")
    x = keras.layers.Lambda(lambda t: tf.math.sin(t))(keras.layers.Dense(8)(inp))
    src = tmp_path / "sin.tflite"
    src.write_bytes(etf.tflite_float(keras.Model(inp, keras.layers.Dense(4)(x))))
    rng = np.random.default_rng(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert.quantize_tflite_int8(src, [{"v": rng.random((1, 16), dtype=np.float32)} for _ in range(8)],
                                     tmp_path / "sin-int8.tflite")
    notes = [str(w.message) for w in caught if issubclass(w.category, EdgecnnWarning)]
    assert notes == ["sin-int8.tflite: op(s) SIN stay float (ai-edge-quantizer has no int8 rule for them)"]


# ------------------------------------------------------------------------------------------------------ tools


@pytest.mark.parametrize("module, fn, hint", [
    ("tf2onnx", "tflite_to_onnx", "pip install tf2onnx"),
    ("onnx2tf", "onnx_to_tflite", "tools/setup.sh"),
    ("ai_edge_quantizer", "quantize_tflite_int8", "pip install ai-edge-quantizer"),
])
def test_a_missing_converter_is_a_tool_error(files, monkeypatch, module, fn, hint):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as when not installed
    args = {"tflite_to_onnx": (files["root"] / "fp32.tflite", files["root"] / "x.onnx"),
            "onnx_to_tflite": (files["root"] / "nhwc.onnx", files["root"] / "x"),
            "quantize_tflite_int8": (files["root"] / "fp32.tflite", [], files["root"] / "x.tflite")}[fn]
    with pytest.raises(ToolError, match=hint):
        getattr(convert, fn)(*args)
