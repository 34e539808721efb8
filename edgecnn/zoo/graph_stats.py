"""MACs and parameter counts of ONNX and TFLite files, read from the graph itself.

MACs follow edgecnn.zoo.stats (the published MobileNet convention): one per weight use
in convolutions, transposed convolutions and matrix products, for one image (a free
batch is bound to 1); bias additions, batch norm, activations, pooling and element-wise
ops count 0. A Keras model and its ONNX and TFLite exports get the same MACs exactly.

- ONNX: onnx's own shape inference (with data propagation) on a copy whose free input
  dims are bound; graphs older than opset 17 are lifted with onnx's version converter
  when that is what it takes to propagate computed Reshape shapes. Counted: Conv,
  ConvTranspose, Gemm, MatMul (batched), ConvInteger, MatMulInteger, QLinearConv,
  QLinearMatMul, and onnxruntime's FusedConv/FusedGemm.
- TFLite: LiteRT's op list; shapes from the file where fixed, else from LiteRT running
  the model once on zeros. Counted: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
  TRANSPOSE_CONV, BATCH_MATMUL and MediaPipe's Convolution2DTransposeBias.

A count is None, never a guess, when it cannot be known: a MAC op whose shapes stay
symbolic (a free H/W nobody bound), an op that does multiply-accumulates edgecnn does
not count (Einsum, LSTM, CONV_3D, attention...), an op of unknown meaning (custom
domain or custom op), or a control-flow op whose body holds any of those.

Params are the elements of the constant tensors the graph computes with, as the file
stores them: weights, biases and per-channel constants such as an unfused batch-norm
scale. Not params: int32/int64 shape and index operands (Reshape's shape,
TRANSPOSE_CONV's output shape), quantization scales and zero points, and option
operands (Clip's bounds, Pad's value, Resize's scales). An integer constant counts only
in a weight slot (int8 weights, the int32 bias of a quantized conv, DequantizeLinear's
input), so fp32, fp16 and int8 files of one model have the same params; a float16
weight stored once and dequantized counts once. Against count_params of the Keras
source the figure differs by what the converter changed: a batch norm folded into the
conv before it leaves C biases of its 4C scalars (tf2onnx keeps a depthwise conv's BN
scale as a Mul: C more), the TFLite converter stores a zero bias for a conv that had
none (a separable conv's depthwise stage), and converters store identical constants
once (untrained models, whose biases are all zeros).
"""

from __future__ import annotations

from functools import cache
from math import prod
from pathlib import Path
from typing import Sequence

from edgecnn.errors import ModelError

# ONNX ops (default domain) that do multiply-accumulates and are not counted: their presence makes MACs None.
_ONNX_UNCOUNTED = frozenset({"Einsum", "LSTM", "GRU", "RNN", "Attention", "DeformConv"})
# onnxruntime's contrib ops that do multiply-accumulates and are not counted; its other contrib ops do none.
_MS_UNCOUNTED = frozenset({
    "Attention", "MultiHeadAttention", "GroupQueryAttention", "DecoderAttention", "QAttention", "FusedMatMul",
    "QGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulNBits", "MatMulBnb4", "MatMulFpQ4",
    "NhwcConv", "NhwcFusedConv", "QLinearConv", "ConvTransposeWithDynamicPads", "GemmFastGelu", "GemmFloat8"})
_ONNX_DOMAINS = ("", "ai.onnx")
_MS_DOMAIN = "com.microsoft"
_CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})

# (op, input index) slots where an integer constant is a weight (ONNX).
_INT_WEIGHT_SLOTS = frozenset({("DequantizeLinear", 0), ("QLinearConv", 3), ("QLinearConv", 8),
                               ("QLinearMatMul", 3), ("ConvInteger", 1), ("MatMulInteger", 1)})
# (op, input indices) where a float constant is an option or quantization parameter, not a weight (ONNX).
_OPTION_SLOTS = {"QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2}, "QLinearConv": {1, 2, 4, 5, 6, 7},
                 "QLinearMatMul": {1, 2, 4, 5, 6, 7}, "ConvInteger": {2, 3}, "MatMulInteger": {2, 3},
                 "Clip": {1, 2}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "Upsample": {1}, "Range": {0, 1, 2}}

# TFLite builtin ops that do multiply-accumulates and are not counted.
_TFLITE_UNCOUNTED = frozenset({
    "CONV_3D", "CONV_3D_TRANSPOSE", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM",
    "RNN", "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN", "SVDF", "STABLEHLO_CONVOLUTION",
    "STABLEHLO_DOT_GENERAL", "STABLEHLO_COMPOSITE", "WHILE", "IF", "CALL_ONCE", "CUSTOM", "DELEGATE"})
# Custom ops that do no multiply-accumulates (SSD post-processing, MediaPipe's pooling and landmark ops).
_TFLITE_CUSTOM_FREE = frozenset({"TFLite_Detection_PostProcess", "MaxPoolingWithArgmax2D", "MaxUnpooling2D",
                                 "Landmarks2TransformMatrix", "TransformLandmarks", "TransformTensorBilinear"})
# TFLite (op, input index) of biases (int32 in a quantized op).
_TFLITE_BIAS_SLOTS = frozenset({("CONV_2D", 2), ("DEPTHWISE_CONV_2D", 2), ("FULLY_CONNECTED", 2),
                                ("TRANSPOSE_CONV", 3), ("Convolution2DTransposeBias", 2)})


# ---------------------------------------------------------------------------------------------- ONNX

def onnx_counts(path: str | Path, input_shape: Sequence[int] | None = None) -> tuple[int | None, int | None]:
    """(MACs of one run, params) of an ONNX file; either is None when it cannot be determined.

    `input_shape` gives the full shape of the model's single input (e.g. [1, 3, 224, 224])
    and binds its free dims; a free batch dim (the first) is bound to 1 without it. A
    shape that contradicts a fixed dim, or an `input_shape` for a model with several
    inputs, is a ModelError, as is a file onnx cannot read.
    """
    import onnx
    import onnx.inliner

    work = _load_onnx(Path(path))
    if work.functions:
        # Model-local functions (torch.onnx's dynamo exports) hide their Convs and constants from the main graph.
        work = onnx.inliner.inline_local_functions(work)
    params = _onnx_params(work)
    _bind_inputs(work.graph, input_shape, path)
    # The exporter's own shape annotations may hold symbolic names for dims that binding just fixed.
    del work.graph.value_info[:]
    macs = _inferred_macs(work)
    opset = next((o.version for o in work.opset_import if o.domain in _ONNX_DOMAINS), _DATA_PROP_OPSET)
    if macs is None and opset < _DATA_PROP_OPSET:
        # onnx propagates shape values (Shape -> Slice -> Concat -> Reshape, as Paddle and PyTorch
        # exports compute their Reshape targets) only for Reshape-14 and later: lift old graphs with
        # onnx's own version converter and infer again.
        try:
            macs = _inferred_macs(onnx.version_converter.convert_version(work, _DATA_PROP_OPSET))
        except (onnx.version_converter.ConvertError, RuntimeError, ValueError):
            pass  # an op the converter cannot lift: the count stays unknown
    return macs, params


_DATA_PROP_OPSET = 17


def _inferred_macs(model) -> int | None:
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError):
        return None
    return _onnx_macs(model.graph)


def _load_onnx(path: Path):
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise ModelError(f"ONNX model not found: {path}")
    try:
        # Only dims are needed, and external weights may be missing or large.
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as e:
        raise ModelError(f"cannot read ONNX model {path}: {_first_line(e)}") from e
    if not model.graph.node:
        # protobuf reads an empty file, or a few stray bytes, as an empty model: that is no model to count.
        raise ModelError(f"cannot read ONNX model {path}: it holds no graph")
    return model


def _real_inputs(graph):
    weights = {init.name for init in graph.initializer}
    return [v for v in graph.input if v.name not in weights]


def _bind_inputs(graph, input_shape, path) -> None:
    inputs = _real_inputs(graph)
    if input_shape is not None:
        if len(inputs) != 1:
            raise ModelError(f"{path}: input_shape binds a single input, but the model has {len(inputs)} "
                             f"({', '.join(v.name for v in inputs)})")
        dims = inputs[0].type.tensor_type.shape.dim
        shape = [int(d) for d in input_shape]
        if len(shape) != len(dims) or any(d <= 0 for d in shape):
            raise ModelError(f"{path}: input_shape {shape} does not fit input {inputs[0].name!r} of rank {len(dims)}")
        for i, (dim, size) in enumerate(zip(dims, shape)):
            if _fixed(dim) and dim.dim_value != size:
                raise ModelError(f"{path}: input {inputs[0].name!r} has a fixed size {dim.dim_value} at dim {i}, "
                                 f"not {size}")
            dim.dim_value = size
    for v in inputs:
        dims = v.type.tensor_type.shape.dim
        if len(dims) and not _fixed(dims[0]):
            dims[0].dim_value = 1  # MACs are for one image


def _fixed(dim) -> bool:
    # Paddle2ONNX and others write a free dim as dim_value -1 (or 0) rather than a dim_param.
    return dim.HasField("dim_value") and dim.dim_value > 0


def _shapes(graph) -> dict[str, tuple[int, ...] | None]:
    """Every tensor's shape after inference; None where any dim is still unknown."""
    out: dict[str, tuple[int, ...] | None] = {}
    for v in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = v.type.tensor_type
        if v.type.WhichOneof("value") != "tensor_type" or not t.HasField("shape"):
            out.setdefault(v.name, None)
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in t.shape.dim]
        out[v.name] = None if None in dims else tuple(dims)
    for init in graph.initializer:
        out[init.name] = tuple(init.dims)
    return out


def _onnx_macs(graph) -> int | None:
    shapes = _shapes(graph)
    return _total(_node_macs(node, shapes) for node in graph.node)


def _node_macs(node, shapes) -> int | None:
    """MACs of one node; None when it does work that is not counted or its shapes are unknown."""
    import onnx

    op, domain = node.op_type, node.domain
    if domain in _ONNX_DOMAINS and op in _CONTROL_FLOW:
        bodies = [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
        bodies += [g for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for g in a.graphs]
        # A body's work runs a data-dependent number of times (or in one branch of two): free of MAC ops or unknown.
        return 0 if all(_graph_mac_free(g) for g in bodies) else None
    if domain in _ONNX_DOMAINS:
        if op in _ONNX_UNCOUNTED or not onnx.defs.has(op):
            return None  # uncounted work, or a name no ONNX opset defines (a failed export's leftover)
        weight = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}.get(op)
        kind = "conv" if weight is not None else None
        if op == "ConvTranspose":
            kind, weight = "convT", 1
        elif op == "Gemm":
            kind = "gemm"
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
            kind = "matmul"
    elif domain == _MS_DOMAIN:
        if op in _MS_UNCOUNTED:
            return None
        kind, weight = {"FusedConv": ("conv", 1), "FusedGemm": ("gemm", None)}.get(op, (None, None))
    else:
        return None  # a custom domain: its ops may do anything
    if kind is None:
        return 0
    get = lambda i: shapes.get(node.input[i]) if i < len(node.input) and node.input[i] else None  # noqa: E731
    y = shapes.get(node.output[0])
    if kind == "conv":
        w = get(weight)
        return None if y is None or w is None else prod(y) * prod(w[1:])
    if kind == "convT":
        x, w = get(0), get(weight)
        return None if x is None or w is None else prod(x) * prod(w[1:])
    a = get(0)
    if y is None or a is None or not a:
        return None
    if kind == "gemm":
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        return prod(y) * (a[0] if trans_a else a[-1])
    return prod(y) * a[-1]  # MatMul: every output element is a K-long dot product, batch dims broadcast


def _graph_mac_free(graph) -> bool:
    """True when no node of a (sub)graph, nested bodies included, does multiply-accumulates."""
    return all(_node_macs(node, {}) == 0 for node in graph.node)


def _graphs(graph):
    import onnx

    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _graphs(g)


def _onnx_params(model) -> int:
    """Elements of the constants (initializers and Constant nodes) that are weights, as the module docstring says."""
    import onnx

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
              onnx.TensorProto.DOUBLE}
    floats |= {getattr(onnx.TensorProto, n) for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
                                                      "FLOAT8E5M2FNUZ", "FLOAT4E2M1") if hasattr(onnx.TensorProto, n)}
    constants: dict[str, tuple[int, int]] = {}  # name -> (elem_type, elements)
    uses: dict[str, list[tuple[str, int]]] = {}
    for graph in _graphs(model.graph):
        for init in graph.initializer:
            constants[init.name] = (init.data_type, prod(init.dims))
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in _ONNX_DOMAINS and node.attribute:
                a = node.attribute[0]
                if a.name == "value":
                    constants[node.output[0]] = (a.t.data_type, prod(a.t.dims))
                elif a.name in ("value_float", "value_floats"):
                    constants[node.output[0]] = (onnx.TensorProto.FLOAT, max(len(a.floats), 1))
            for i, name in enumerate(node.input):
                if name:
                    uses.setdefault(name, []).append((node.op_type, i))
    total = 0
    for name, (dtype, n) in constants.items():
        slots = uses.get(name, [])
        if dtype in floats:
            weight = any(i not in _OPTION_SLOTS.get(op, ()) for op, i in slots)
        else:
            weight = any(slot in _INT_WEIGHT_SLOTS for slot in slots)
        total += n if weight else 0
    return total


# -------------------------------------------------------------------------------------------- TFLite

def tflite_counts(model: bytes | str | Path, input_shape: Sequence[int] | None = None
                  ) -> tuple[int | None, int | None]:
    """(MACs of one run, params) of a TFLite flatbuffer (bytes or path); None where unknown.

    Shapes are read from the file where its tensors have fixed shapes. Where a tensor a
    MAC op uses has a free dim (any -1 in its shape signature, e.g. the batch of every
    Keras export), the stored shape is only the converter's placeholder, so LiteRT runs
    the model once on zeros at batch 1 and its kernels give the real shapes. A free dim
    of the single input other than the batch needs `input_shape` (the full shape, e.g.
    [1, 192, 192, 3]); without it MACs are None. A free batch is bound to 1 (MACs per
    image) unless `input_shape` says otherwise. Works alike for fp32, fp16 and int8 files.
    ModelError for a file LiteRT cannot read or an `input_shape` that does not fit.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    what = "the TFLite model" if "model_content" in source else str(model)
    if "model_path" in source and not Path(model).is_file():
        raise ModelError(f"TFLite model not found: {model}")
    try:
        # Without the default delegates, so the op list shows the model's ops rather than one DELEGATE node.
        it = Interpreter(**source, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"cannot read {what}: {_first_line(e)}") from None
    ops = it._get_ops_details()  # noqa: SLF001 - LiteRT has no public op listing
    params = _tflite_params(it, ops, np)
    bound = _bound_inputs(it, input_shape, what)
    if any(_tflite_uncounted(op["op_name"]) for op in ops):
        return None, params
    mac_ops = [op for op in ops if op["op_name"] in _TFLITE_MAC_OPS]
    details = {d["index"]: d for d in it.get_tensor_details()}
    used = {int(i) for op in mac_ops for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0}
    if all(min(details[i]["shape_signature"], default=0) >= 0 for i in used):
        shapes = {i: tuple(int(x) for x in details[i]["shape"]) for i in used}
    elif bound is None or any(op["op_name"] in _TFLITE_DATA_DEPENDENT for op in ops):
        return None, params  # a free size nobody bound, or shapes that depend on the image itself
    else:
        shapes = _run_shapes(it, bound, input_shape is not None, what, np)
        if shapes is None:
            return None, params
    return _total(_tflite_op_macs(op, shapes) for op in mac_ops), params


# TFLite ops whose output size depends on the data: a run on zeros would not tell the sizes after them.
_TFLITE_DATA_DEPENDENT = frozenset({"WHERE", "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5", "UNIQUE"})
_TFLITE_MAC_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL",
                             "Convolution2DTransposeBias"})


def _tflite_uncounted(name: str) -> bool:
    """An op that does multiply-accumulates edgecnn does not count, or a custom op of unknown meaning."""
    if name in _TFLITE_MAC_OPS or name in _TFLITE_CUSTOM_FREE:
        return False
    return name in _TFLITE_UNCOUNTED or name not in _builtin_names()


def _bound_inputs(it, input_shape, what) -> list[tuple[dict, list[int]]] | None:
    """Each input with the shape to run it at (free batch -> 1); None while another free dim is unbound."""
    inputs = it.get_input_details()
    if input_shape is not None:
        if len(inputs) != 1:
            raise ModelError(f"{what}: input_shape binds a single input, but the model has {len(inputs)}")
        sig = [int(d) for d in inputs[0]["shape_signature"]]
        shape = [int(d) for d in input_shape]
        if len(shape) != len(sig) or any(d <= 0 for d in shape) or any(s >= 0 and s != d for s, d in zip(sig, shape)):
            raise ModelError(f"{what}: input_shape {shape} does not fit input {inputs[0]['name']!r} "
                             f"of shape {[d if d >= 0 else None for d in sig]}")
        return [(inputs[0], shape)]
    bound = []
    for d in inputs:
        shape = [int(x) for x in d["shape_signature"]]
        if shape and shape[0] < 0:
            shape[0] = 1  # MACs are for one image
        if min(shape, default=0) < 0:
            return None
        bound.append((d, shape))
    return bound


def _run_shapes(it, bound, explicit: bool, what, np) -> dict[int, tuple[int, ...]] | None:
    """Every tensor's shape after LiteRT ran the model once on zeros at the bound input shapes."""
    try:
        for d, shape in bound:
            it.resize_tensor_input(d["index"], shape, strict=False)
        it.allocate_tensors()
        for d, shape in bound:
            it.set_tensor(d["index"], np.zeros(shape, d["dtype"]))
        it.invoke()
    except (ValueError, RuntimeError) as e:
        if not explicit:
            return None  # e.g. a custom op this LiteRT cannot run: the count stays unknown
        raise ModelError(f"{what}: LiteRT cannot run it at input shape {bound[0][1]}: {_first_line(e)}") from None
    return {d["index"]: tuple(int(x) for x in d["shape"]) for d in it.get_tensor_details()}


def _tflite_op_macs(op, shapes) -> int | None:
    """MACs of one op from its tensors' shapes; 0 for ops without multiply-accumulates, None when unknown."""
    name = op["op_name"]
    if _tflite_uncounted(name):
        return None
    if name == "Convolution2DTransposeBias":
        # MediaPipe's custom transposed conv (segmentation heads): (input, weights (Cout, kh, kw, Cin), bias).
        name, op = "TRANSPOSE_CONV", {**op, "inputs": [-1, int(op["inputs"][1]), int(op["inputs"][0])]}
    ins, outs = [int(i) for i in op["inputs"]], [int(i) for i in op["outputs"]]
    get = lambda i: shapes.get(ins[i]) if i < len(ins) and ins[i] >= 0 else None  # noqa: E731
    y = shapes.get(outs[0]) if outs else None
    if name == "CONV_2D":  # filter (Cout, kh, kw, Cin / groups)
        w = get(1)
        return None if y is None or w is None else prod(y) * prod(w[1:])
    if name == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, Cin * multiplier)
        w = get(1)
        return None if y is None or w is None else prod(y) * prod(w[1:3])
    if name == "FULLY_CONNECTED":  # weights (units, in)
        w = get(1)
        return None if y is None or w is None else prod(y) * w[-1]
    if name == "TRANSPOSE_CONV":  # (output_shape, weights (Cout, kh, kw, Cin), input, bias)
        w, x = get(1), get(2)
        return None if x is None or w is None else prod(x[:-1]) * prod(w)
    if name == "BATCH_MATMUL":
        x = get(0)
        if y is None or x is None or len(x) < 2 or len(y) < 2:
            return None
        # adj_x is not in the op details: K is the dim of x that is not the output's M.
        k = x[-1] if x[-2] == y[-2] else x[-2]
        return prod(y) * k
    return 0


def _tflite_params(it, ops, np) -> int:
    """Elements of constant weight tensors: consumed, never produced, not a graph input (module docstring)."""
    produced = {int(i) for op in ops for i in op["outputs"]}
    graph_inputs = {d["index"] for d in it.get_input_details()}
    details = {d["index"]: d for d in it.get_tensor_details()}
    weights = (np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16)
    counted: set[int] = set()
    for op in ops:
        for slot, index in enumerate(int(i) for i in op["inputs"]):
            if index < 0 or index in produced or index in graph_inputs or index not in details:
                continue
            dtype = details[index]["dtype"]
            if dtype in weights or (dtype == np.int32 and (op["op_name"], slot) in _TFLITE_BIAS_SLOTS):
                counted.add(index)
    return sum(prod(int(x) for x in details[i]["shape"]) for i in counted)


@cache
def _builtin_names() -> frozenset[str]:
    """LiteRT's builtin op names; any other op name in a file is a custom op."""
    from ai_edge_litert import schema_py_generated as schema

    return frozenset(k for k in vars(schema.BuiltinOperator) if not k.startswith("_"))


def _total(counts) -> int | None:
    """The sum, or None as soon as one count is unknown (a partial sum would be a wrong number)."""
    total = 0
    for n in counts:
        if n is None:
            return None
        total += n
    return total


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
