"""MACs and params counted from ONNX and TFLite graphs agree with the Keras counts of the same model.

Fixtures are made here: MobileNetV2 (alpha 0.35, 128x128) exported with edgecnn's
own converters (tf2onnx, the TFLite converter fp32/fp16, the int8 quantizer), the
colour model of tests/fixtures/colors.py, and an NCHW ONNX graph with free H/W built
with the onnx helper API, whose counts are worked out by hand below.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgecnn.errors import ModelError
from edgecnn.zoo.graph_stats import _tflite_op_macs, onnx_counts, tflite_counts
from fixtures import colors as F

# The TFLite quantizer warns that int8 input statistics are unset; it is no part of what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")

# ------------------------------------------------------------------------------------ MobileNetV2


@pytest.fixture(scope="module")
def mobilenet():
    import keras

    from edgecnn import zoo

    model = zoo.build("mobilenet_v2")
    # Random (not initial) weights everywhere: with batch norm at gamma=1, beta=0 every folded bias
    # of one width is the same zero vector, and the converters store identical constants once.
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.uniform(0.5, 1.5, tuple(w.shape)).astype("float32"))
    layers = model.layers
    bn = sum(int(x.gamma.shape[0]) for x in layers if isinstance(x, keras.layers.BatchNormalization))
    dw = sum(int(x.kernel.shape[2]) for x in layers if isinstance(x, keras.layers.DepthwiseConv2D))
    return model, bn, dw


@pytest.fixture(scope="module")
def keras_counts(mobilenet):
    from edgecnn.zoo.stats import count_macs, count_params

    return count_macs(mobilenet[0]), count_params(mobilenet[0])


def test_mobilenet_onnx_matches_keras(mobilenet, keras_counts, tmp_path):
    from edgecnn.frameworks.tf import onnx_float

    model, bn_channels, dw_channels = mobilenet
    path = onnx_float(model, tmp_path / "mv2.onnx")  # NHWC input with a free batch dim
    macs, params = onnx_counts(path)
    assert macs == keras_counts[0] == 18_947_072
    # tf2onnx folds each batch norm into the conv before it (4C scalars become C biases), except the
    # scale after a depthwise conv, which stays a Mul by a C-vector.
    assert params == keras_counts[1] - 3 * bn_channels + dw_channels
    assert onnx_counts(path, [1, 128, 128, 3]) == (macs, params)
    assert onnx_counts(path, [2, 128, 128, 3])[0] == 2 * macs
    with pytest.raises(ModelError, match="fixed size 128 at dim 1"):
        onnx_counts(path, [1, 96, 96, 3])


@pytest.fixture(scope="module")
def mobilenet_tflite(mobilenet):
    from edgecnn.frameworks.tf import tflite_float, tflite_fp16
    from edgecnn.quantize import tflite as qt
    from edgecnn.quantize.calibration import CalibrationData

    model = mobilenet[0]
    images = np.random.default_rng(1).uniform(-1, 1, (4, 128, 128, 3)).astype(np.float32)
    int8 = qt.quantize(qt.calibrate(model, CalibrationData("random", "input", images, ())))
    return {"fp32": tflite_float(model), "fp16": tflite_fp16(model), "int8": int8}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_mobilenet_tflite_matches_keras(mobilenet, keras_counts, mobilenet_tflite, precision, tmp_path):
    from edgecnn.frameworks.litert import precision as file_precision

    data = mobilenet_tflite[precision]
    assert file_precision(data) == precision
    macs, params = tflite_counts(data)
    assert macs == keras_counts[0]
    # Every batch norm folded into its conv; fp16 weights (each dequantized once) and int8 weights
    # with int32 biases count as many scalars as fp32 ones.
    assert params == keras_counts[1] - 3 * mobilenet[1]
    path = tmp_path / "mv2.tflite"
    path.write_bytes(data)
    assert tflite_counts(path) == (macs, params)
    assert tflite_counts(str(path), [1, 128, 128, 3]) == (macs, params)
    with pytest.raises(ModelError, match="does not fit"):
        tflite_counts(path, [1, 96, 96, 3])


def _random_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:  # trained-like: initial all-zero biases may be dropped or shared by a converter
        w.assign(rng.normal(size=tuple(w.shape)).astype("float32"))
    return model


def _layers_model(groups: int):
    """Every counted layer kind: (grouped) conv, depthwise x2, separable, strided transposed conv, 3-D dense."""
    import keras
    from keras import layers as L

    inp = keras.Input((16, 16, 4))
    x = L.Conv2D(8, 3, groups=groups, padding="same")(inp)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same")(x)
    x = L.SeparableConv2D(12, 3, padding="valid")(x)
    x = L.Conv2DTranspose(6, 3, strides=2, padding="same")(x)
    x = L.Reshape((12 * 12, 6))(x)  # with a free batch, TFLite computes this shape at run time
    return _random_weights(keras.Model(inp, L.Dense(5)(x)))


@pytest.mark.parametrize("groups", [1, 2])
def test_every_layer_kind_matches_keras(groups, tmp_path):
    from edgecnn.frameworks.tf import onnx_float, tflite_float, tflite_fp16
    from edgecnn.zoo.stats import count_macs, count_params

    model = _layers_model(groups)
    expected = (count_macs(model), count_params(model))
    assert expected[0] == 16 * 16 * 8 * 9 * 4 // groups + 9216 + 12096 + 23328 + 4320
    # The TFLite converter gives the separable conv's depthwise stage a bias (16 zeros) it did not have.
    assert tflite_counts(tflite_float(model)) == (expected[0], expected[1] + 16)
    assert tflite_counts(tflite_fp16(model)) == (expected[0], expected[1] + 16)
    if groups == 1:  # tf2onnx 1.17 cannot export Keras 3's grouped conv (a StatefulPartitionedCall)
        assert onnx_counts(onnx_float(model, tmp_path / "layers.onnx")) == expected


# ----------------------------------------------------------------------------- colour model (tiny)

COLOR_MACS = F.SIZE * F.SIZE * 3 * 3 + 3 * 4  # 1x1 conv 3->3 at 32x32, dense 3->4
COLOR_PARAMS = 3 * 3 + 3 + 3 * 4 + 4


def test_color_model_every_precision():
    from edgecnn.frameworks.tf import tflite_float, tflite_fp16
    from edgecnn.quantize import tflite as qt
    from edgecnn.quantize.calibration import CalibrationData
    from edgecnn.zoo.stats import count_macs, count_params

    model = F.color_model()
    assert (count_macs(model), count_params(model)) == (COLOR_MACS, COLOR_PARAMS)
    rng = np.random.default_rng(0)
    images = np.stack([F.color_image(rng, i % 3) for i in range(8)]).astype(np.float32) / 255
    int8 = qt.quantize(qt.calibrate(model, CalibrationData("colors", "image", images, ())))
    for data in (tflite_float(model), tflite_fp16(model), int8):
        assert tflite_counts(data) == (COLOR_MACS, COLOR_PARAMS)


def test_tflite_free_spatial_dims_need_a_binding():
    import keras

    from edgecnn.frameworks.tf import tflite_float

    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    data = tflite_float(_random_weights(keras.Model(inp, keras.layers.Dense(4)(x))))
    params = 3 * 3 * 3 * 8 + 8 + 8 * 4 + 4
    assert tflite_counts(data) == (None, params)  # unknown, not a count at a made-up size
    assert tflite_counts(data, [1, 64, 64, 3]) == (32 * 32 * 8 * 27 + 8 * 4, params)
    with pytest.raises(ModelError, match="does not fit"):
        tflite_counts(data, [1, 64, 64])


def _with_custom_op(data: bytes, builtin: str, custom: str) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    code = getattr(schema.BuiltinOperator, builtin)
    for oc in model.operatorCodes:
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
            oc.builtinCode = oc.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
            oc.customCode = custom
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_tflite_unknown_custom_op_gives_no_mac_count():
    from edgecnn.frameworks.tf import tflite_float

    data = _with_custom_op(tflite_float(F.color_model()), "MEAN", "SomeVendorOp")
    assert tflite_counts(data) == (None, COLOR_PARAMS)


def test_tflite_known_custom_and_uncounted_ops():
    op = {"op_name": "TFLite_Detection_PostProcess", "inputs": [0, 1, 2], "outputs": [3, 4, 5, 6]}
    assert _tflite_op_macs(op, {}) == 0
    # MediaPipe's transposed conv (selfie segmentation's head): input, weights (Cout, kh, kw, Cin), bias.
    assert _tflite_op_macs({"op_name": "Convolution2DTransposeBias", "inputs": [0, 1, 2], "outputs": [3]},
                           {0: (1, 128, 128, 16), 1: (1, 2, 2, 16), 2: (1,), 3: (1, 256, 256, 1)}) == 128 * 128 * 64
    assert _tflite_op_macs({**op, "op_name": "UNIDIRECTIONAL_SEQUENCE_LSTM"}, {}) is None
    assert _tflite_op_macs({"op_name": "BATCH_MATMUL", "inputs": [0, 1], "outputs": [2]},
                           {0: (2, 5, 7), 1: (2, 7, 3), 2: (2, 5, 3)}) == 2 * 5 * 3 * 7
    assert _tflite_op_macs({"op_name": "BATCH_MATMUL", "inputs": [0, 1], "outputs": [2]},  # adj_x
                           {0: (2, 7, 5), 1: (2, 7, 3), 2: (2, 5, 3)}) == 2 * 5 * 3 * 7


def test_tflite_unreadable(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    for model in (bad, b"garbage", tmp_path / "missing.tflite"):
        with pytest.raises(ModelError):
            tflite_counts(model)


# ------------------------------------------------------------------------ NCHW ONNX, free H and W


def _nchw_onnx(path):
    """Conv 3->8 k3 s2 p1, Relu, GlobalAveragePool, Reshape to (N, 8), Gemm 8->4 (weight as a Constant node)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([-1, 8], np.int64), "flat"),  # a shape operand: not a param
             numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Reshape", ["g", "flat"], ["f"]),
             helper.make_node("Constant", [], ["fc_w"], value=numpy_helper.from_array(
                 rng.normal(size=(4, 8)).astype(np.float32))),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "nchw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


NCHW_PARAMS = 8 * 3 * 3 * 3 + 8 + 4 * 8 + 4  # 260


def test_nchw_onnx_hand_counted(tmp_path):
    path = _nchw_onnx(tmp_path / "nchw.onnx")
    assert onnx_counts(path) == (None, NCHW_PARAMS)  # free H/W, no binding: unknown
    # 64x64 -> 32x32 output, 8 channels, 3*3*3 MACs each; then 8*4 for the Gemm.
    assert onnx_counts(path, [1, 3, 64, 64]) == (32 * 32 * 8 * 27 + 32, NCHW_PARAMS)
    assert onnx_counts(path, (1, 3, 65, 33)) == (33 * 17 * 8 * 27 + 32, NCHW_PARAMS)
    for shape in ([1, 3, 64], [1, 4, 64, 64], [1, 3, 0, 64]):
        with pytest.raises(ModelError):
            onnx_counts(path, shape)


def test_qdq_onnx_counts_like_float(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    float_path = _nchw_onnx(tmp_path / "nchw.onnx")
    batches = iter([{"x": np.random.default_rng(i).normal(size=(1, 3, 32, 32)).astype(np.float32)}
                    for i in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    qdq = tmp_path / "nchw_qdq.onnx"
    quantize_static(str(float_path), str(qdq), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    # int8 weights and int32 biases behind DequantizeLinear are params; scales and zero points are not.
    assert onnx_counts(qdq, [1, 3, 64, 64]) == onnx_counts(float_path, [1, 3, 64, 64])


def test_onnx_uncounted_ops_give_none(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    def save(nodes, name, opsets=(("", 17),)):
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4, 5]),
                                                helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 5, 6])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        path = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets]), str(path))
        return path

    assert onnx_counts(save([helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul")) == (4 * 6 * 5, 0)
    assert onnx_counts(save([helper.make_node("NotAnOnnxOp", ["a", "b"], ["y"])], "leftover"))[0] is None
    assert onnx_counts(save([helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik")], "einsum"))[0] \
        is None
    custom = helper.make_node("Mystery", ["a", "b"], ["y"], domain="vendor.ops")
    assert onnx_counts(save([custom], "custom", (("", 17), ("vendor.ops", 1))))[0] is None


def test_onnx_unreadable(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xfe definitely not a protobuf")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"\x08\x07")  # parses as a ModelProto with ir_version 7 and nothing else
    for path in (bad, empty, tmp_path / "missing.onnx"):
        with pytest.raises(ModelError):
            onnx_counts(path)


def _branch(node, name):
    from onnx import TensorProto, helper

    return helper.make_graph([node], name, [], [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)])


def test_onnx_control_flow(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    def counts(then_node, else_node):
        node = helper.make_node("If", ["c"], ["y"], then_branch=_branch(then_node, "then"),
                                else_branch=_branch(else_node, "else"))
        graph = helper.make_graph([node], "if", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                                 helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        path = tmp_path / "if.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return onnx_counts(path)[0]

    relu = lambda out: helper.make_node("Relu", ["a"], [out])  # noqa: E731
    assert counts(relu("t"), relu("e")) == 0
    # Only one branch runs: a MatMul in either leaves the count unknown rather than guessed.
    assert counts(helper.make_node("MatMul", ["a", "a"], ["t"]), relu("e")) is None


def test_onnx_grouped_conv_and_transposed_conv(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((8, 2, 3, 3), np.float32), "w")  # 4 -> 8 channels in 2 groups
    wt = numpy_helper.from_array(np.ones((8, 3, 2, 2), np.float32), "wt")  # 8 -> 6 channels in 2 groups
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], group=2, pads=[1] * 4),
             helper.make_node("ConvTranspose", ["c", "wt"], ["y"], group=2, strides=[2, 2])]
    graph = helper.make_graph(nodes, "groups", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, wt])
    path = tmp_path / "groups.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    # Conv: 10*10 positions x 8 outputs x (2 inputs x 9); ConvTranspose: 10*10 inputs x 8 channels x 3 x 4.
    assert onnx_counts(path) == (100 * 8 * 18 + 100 * 8 * 12, 8 * 2 * 9 + 8 * 3 * 4)


def test_onnx_local_functions_are_inlined(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # A model-local function, as torch.onnx's dynamo exporter writes one per module.
    block = helper.make_function("local", "Block", ["x", "w"], ["y"],
                                 [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
                                 [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Block", ["x", "w"], ["y"], domain="local")], "fn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")])
    model = helper.make_model(graph, functions=[block],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    path = tmp_path / "fn.onnx"
    onnx.save(model, str(path))
    assert onnx_counts(path) == (6 * 6 * 4 * 27, 4 * 27)


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_computed_reshape_of_an_old_opset(opset, tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    const = lambda name, values: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64)))
    # Paddle2ONNX's flatten before a classifier: Reshape to (Shape(x)[0:1], 200) computed in the graph.
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Cast", ["s"], ["s32"], to=TensorProto.INT32),
             const("start", [0]), const("end", [1]), helper.make_node("Slice", ["s32", "start", "end"], ["n32"]),
             helper.make_node("Cast", ["n32"], ["n"], to=TensorProto.INT64), const("k", [200]),
             helper.make_node("Concat", ["n", "k"], ["shape"], axis=-1), helper.make_node("Reshape", ["x", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    graph = helper.make_graph(nodes, "flatten", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 200, 1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((200, 2), np.float32), "w")])
    path = tmp_path / "flatten.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    assert onnx_counts(path) == (400, 400)  # the -1 batch is Paddle's way to write a free dim
