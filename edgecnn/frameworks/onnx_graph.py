"""ONNX graph preparation at intake: the image input's layout, free dimensions bound, the graph simplified.

Exports from PyTorch and Paddle are channels-first and often have a free batch
and free height/width. Every backend here compiles for one image of one size,
and TVM's importer (and pnnx, onnx2tf) need static shapes, so intake writes a
copy with the input bound to (1, C, H, W) or (1, H, W, C) and simplified by
onnxslim (constant folding, shape inference, dead-node removal). onnxslim is
the simplifier Ultralytics' exporter uses; it is pure Python, so it installs
wherever onnx does. Quantized (QDQ) graphs are bound but not simplified:
folding would turn their int8 weights into float constants.
"""

from __future__ import annotations

from pathlib import Path

from edgecnn.errors import ModelError, ToolError

NHWC, NCHW = "NHWC", "NCHW"
LAYOUTS = (NHWC, NCHW)


def image_layout(shape: tuple, name: str, override: str | None = None) -> str:
    """NCHW when dim 1 holds the 1 or 3 channels and the last two are spatial; NHWC when the last does.

    `override` (the --layout option or the sidecar's preprocessing.layout) wins; a shape that fits
    both or neither needs it, and ModelError says so.
    """
    if override:
        layout = str(override).upper()
        if layout not in LAYOUTS:
            raise ModelError(f"{name}: layout must be NHWC or NCHW, got {override!r}")
        return layout
    if len(shape) != 4:
        return NHWC  # not an image batch: check_image_input says so with the shape
    first, last = shape[1] in (1, 3), shape[3] in (1, 3)
    if first and last:
        raise ModelError(f"{name}: input {_fmt(shape)} could be NCHW or NHWC; pass --layout NCHW or --layout NHWC")
    return NCHW if first else NHWC


def static_shape(shape: tuple, layout: str, size: tuple[int, int]) -> list[int]:
    """The input with batch 1 and free spatial dimensions set to `size` (h, w) from the preprocessing."""
    h, w = size
    dims = list(shape)
    spatial = (2, 3) if layout == NCHW else (1, 2)
    channel = 1 if layout == NCHW else 3
    bound = [1, 0, 0, 0]
    for axis, value in zip(spatial, (h, w)):
        bound[axis] = value if dims[axis] is None else int(dims[axis])
    bound[channel] = 3 if dims[channel] is None else int(dims[channel])
    return bound


def bind_and_simplify(path: Path, out: Path, shape: list[int], simplify: bool = True) -> list[str]:
    """Write `path` with its single image input bound to `shape` (and simplified) as `out`; returns notes."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError family; the file is bad input
        raise ModelError(f"cannot read ONNX model {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    weights = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ModelError(f"{path.name}: input has {len(dims)} dimensions, cannot bind it to {shape}")
    # Set each input dim itself: exporters reuse one symbol ("?") for height and width, so binding a
    # symbol graph-wide (onnxruntime's make_input_shape_fixed) would give both the same value.
    for dim, value in zip(dims, shape):
        dim.Clear()
        dim.dim_value = int(value)
    # The other symbolic dims (outputs, value_info) are forgotten, so shape inference gives the bound ones.
    for info in [*model.graph.output, *model.graph.value_info]:
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") or dim.dim_value < 0:
                dim.Clear()
    notes: list[str] = []
    if simplify:
        try:
            import onnxslim
        except ImportError:
            raise ToolError("simplifying ONNX graphs needs onnxslim: pip install onnxslim") from None
        try:
            model = onnxslim.slim(model)
        except Exception as e:  # noqa: BLE001 - onnxslim raises whatever its passes raise
            notes.append(f"onnxslim could not simplify {path.name} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else ''}); the bound graph is used as it is")
    else:
        model = onnx.shape_inference.infer_shapes(model)
    _name_nodes(model.graph)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return notes


def _name_nodes(graph) -> None:
    """Give unnamed nodes unique names (op type + index): quantizers exclude and report nodes by name."""
    taken = {n.name for n in graph.node if n.name}
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def cancel_transposes(model):
    """Re-run tf2onnx's transpose optimizer on a tf2onnx export whose own pass gave up; the proto, and how
    many Transpose nodes it removed.

    tf2onnx 1.17's transpose optimizer raises on an Add/Mul whose constant operand is 0-d (hard-swish's
    x + 3 in MobileNetV3) and then leaves every layout Transpose of an inputs_as_nchw export in place: 127 in
    Keras' MobileNetV3-Large, which pnnx turns into as many ncnn Permute layers. A 0-d constant broadcasts as
    a [1] one does, so reshaping them lets the pass finish.
    """
    from onnx import numpy_helper
    from tf2onnx.graph import GraphUtil

    before = sum(n.op_type == "Transpose" for n in model.graph.node)
    if before <= 1:  # the input's own transpose is fused into the first convolution by pnnx
        return model, 0
    for init in model.graph.initializer:
        if len(init.dims) == 0:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).reshape(1), init.name))
    optimized = GraphUtil.optimize_model_proto(model)
    after = sum(n.op_type == "Transpose" for n in optimized.graph.node)
    return (optimized, before - after) if after < before else (model, 0)
