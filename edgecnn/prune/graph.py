"""Channel dependency groups of a Keras 3 functional model, found by walking its graph.

A *group* is a set of channels that must be pruned together: every layer that
creates them (a producer: Conv, Dense, SeparableConv) and every layer they flow
through unchanged (BatchNormalization, depthwise convs, activations, pooling,
padding) sees the same channel indices. Elementwise merges (Add, Multiply
including a broadcast squeeze-excite gate, Subtract, Maximum, ...) tie the groups
of their inputs into one. Concatenate on the channel axis does not tie anything:
its output is described as the list of its inputs' groups, so consumers know
each group's offset.

Each tensor is described by a list of group ids in channel order ("segments").
Groups that cannot shrink are *fixed*, with the reason: channels of the model's
input and outputs (a classifier's classes, a detector head's anchors x (5+C)),
and channels that feed a layer which is not channel-local (Reshape, Flatten of a
spatial map, softmax over channels, LayerNormalization, a depth multiplier).
A layer kind not listed here is a ModelError naming it, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from edgecnn.errors import ModelError

# Unary elementwise activations (Activation layer or keras.ops): channel-local, so pass-through.
_ELEMENTWISE_ACTIVATIONS = {
    "relu", "relu6", "sigmoid", "hard_sigmoid", "swish", "silu", "hard_swish", "hard_silu", "tanh", "elu",
    "selu", "gelu", "linear", "leaky_relu", "mish", "softplus", "softsign", "exponential", "celu", "glu",
}
# keras.ops on tensors that appear as graph nodes (e.g. MobileNetV3's `relu6(x + 3) * (1 / 6)`).
_OP_BINARY = {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power"}
_OP_UNARY = {"Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu", "LeakyRelu", "Gelu", "Elu", "Selu",
             "Softplus", "Softsign", "Tanh", "Abs", "Negative", "Exp", "Sqrt", "Square", "Absolute", "Clip"}


@dataclass
class Group:
    """Channels that are pruned together. `fixed` says why they cannot be (None: prunable)."""

    id: int
    size: int
    producers: list[str] = field(default_factory=list)  # layers whose kernels create these channels
    fixed: str | None = None


@dataclass
class LayerInfo:
    """How one layer sees channels: segments of its (first) input and of its output, and its role."""

    name: str
    role: str  # "producer" | "channelwise" | "merge" | "concat" | "barrier" | "input" | "passthrough"
    inputs: list[list[int]]  # segments of each tensor input
    output: list[int]


@dataclass
class ChannelGraph:
    """Groups and per-layer channel views; `root(g)` resolves merged groups."""

    groups: dict[int, Group]
    layers: dict[str, LayerInfo]
    _parent: dict[int, int]

    def root(self, g: int) -> int:
        while self._parent[g] != g:
            self._parent[g] = self._parent[self._parent[g]]
            g = self._parent[g]
        return g

    def group(self, g: int) -> Group:
        return self.groups[self.root(g)]

    def roots(self, segments: list[int]) -> list[int]:
        return [self.root(g) for g in segments]

    def prunable(self) -> list[Group]:
        """The groups that may shrink, in creation order."""
        return [g for gid, g in self.groups.items() if self.root(gid) == gid and g.fixed is None]


def _channels(tensor) -> int:
    dim = tuple(tensor.shape)[-1]
    if dim is None:
        raise ModelError(f"tensor {getattr(tensor, 'name', '?')} has an unknown channel count")
    return int(dim)


class _Builder:
    def __init__(self):
        self.groups: dict[int, Group] = {}
        self.parent: dict[int, int] = {}
        self.layers: dict[str, LayerInfo] = {}

    def new(self, size: int, producer: str | None = None, fixed: str | None = None) -> int:
        gid = len(self.groups)
        self.groups[gid] = Group(gid, size, [producer] if producer else [], fixed)
        self.parent[gid] = gid
        return gid

    def root(self, g: int) -> int:
        while self.parent[g] != g:
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra == rb:
            return
        ga, gb = self.groups[ra], self.groups[rb]
        if ga.size != gb.size:  # cannot happen in a model Keras built; a bug if it does
            raise ModelError(f"channel groups of {ga.producers} and {gb.producers} differ in size")
        self.parent[rb] = ra
        ga.producers += gb.producers
        ga.fixed = ga.fixed or gb.fixed

    def fix(self, segments: list[int], why: str) -> None:
        for g in segments:
            grp = self.groups[self.root(g)]
            grp.fixed = grp.fixed or why


def analyze(model) -> ChannelGraph:
    """Walk a functional model's graph and return its channel groups (ModelError for unsupported layers)."""
    import keras

    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ModelError("channel pruning needs a Keras functional model (keras.Model(inputs, outputs))")
    b = _Builder()
    segs: dict[int, list[int]] = {}  # id(KerasTensor) -> segments
    for depth in sorted(model._nodes_by_depth, reverse=True):  # inputs first
        for node in model._nodes_by_depth[depth]:
            op = node.operation
            if len(op._inbound_nodes) > 1:
                raise ModelError(f"layer {op.name!r} is called more than once (shared weights); channel pruning "
                                 "needs every layer called once")
            ins = [segs[id(t)] for t in node.input_tensors]
            outs = node.outputs
            if len(outs) != 1:
                raise ModelError(f"layer {op.name!r} ({type(op).__name__}) has {len(outs)} outputs; "
                                 "channel pruning supports single-output layers")
            info = _visit(b, op, node, ins, outs[0])
            b.layers[op.name] = info
            segs[id(outs[0])] = info.output
    for t in model.outputs:
        b.fix(segs[id(t)], "model output")
    return ChannelGraph(b.groups, b.layers, b.parent)


def _visit(b: _Builder, op, node, ins: list[list[int]], out) -> LayerInfo:
    from keras import layers as L

    name, cls = op.name, type(op).__name__
    n_out = _channels(out) if len(tuple(out.shape)) > 1 else 1
    if getattr(op, "data_format", "channels_last") == "channels_first":
        raise ModelError(f"layer {name!r} ({cls}) is channels_first; channel pruning supports channels_last models")

    def info(role: str, output: list[int]) -> LayerInfo:
        return LayerInfo(name, role, ins, output)

    def barrier(why: str) -> LayerInfo:
        for s in ins:
            b.fix(s, why)
        return info("barrier", [b.new(n_out, fixed=why)])

    if isinstance(op, L.InputLayer):
        return info("input", [b.new(n_out, fixed="model input")])
    if isinstance(op, _model_class()):
        raise ModelError(f"layer {name!r} is a nested model; rebuild it flat (call its layers directly)")
    if isinstance(op, (L.Conv1D, L.Conv2D, L.Conv3D)) and not isinstance(op, _transpose_classes()):
        if op.groups != 1:
            return barrier(f"feeds grouped conv {name!r}")
        return _producer(b, op, ins, out, n_out)
    if isinstance(op, (L.SeparableConv1D, L.SeparableConv2D)):
        if op.depth_multiplier != 1:
            return barrier(f"feeds {name!r} with depth_multiplier {op.depth_multiplier}")
        return _producer(b, op, ins, out, n_out)
    if isinstance(op, L.Dense):
        return _producer(b, op, ins, out, n_out)
    if isinstance(op, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        if op.depth_multiplier != 1:
            return barrier(f"feeds {name!r} with depth_multiplier {op.depth_multiplier}")
        return info("channelwise", ins[0])
    if isinstance(op, L.BatchNormalization):
        if op.axis not in (-1, len(tuple(out.shape)) - 1):
            return barrier(f"feeds {name!r} normalizing axis {op.axis}")
        return info("channelwise", ins[0])
    if isinstance(op, L.PReLU):
        return info("channelwise", ins[0])
    if isinstance(op, L.Activation) or isinstance(op, L.Softmax):
        act = getattr(getattr(op, "activation", None), "__name__", "softmax")
        if act in _ELEMENTWISE_ACTIVATIONS:
            return info("passthrough", ins[0])
        return barrier(f"feeds {name!r} ({act} across channels)")
    if isinstance(op, _passthrough_classes()):
        return info("passthrough", ins[0])
    if isinstance(op, (L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
                       L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D)):
        return info("passthrough", ins[0])
    if isinstance(op, L.Flatten):
        spatial = tuple(node.input_tensors[0].shape)[1:-1]
        if all(d == 1 for d in spatial):  # (1, 1, C) -> (C,): the channels keep their order
            return info("passthrough", ins[0])
        return barrier(f"feeds {name!r} (Flatten of a {spatial} map)")
    if isinstance(op, L.Rescaling):
        if all(prod(getattr(v, "shape", ())) <= 1 and not isinstance(v, (list, tuple)) for v in (op.scale, op.offset)):
            return info("passthrough", ins[0])
        return barrier(f"feeds {name!r} (per-channel rescaling)")
    if isinstance(op, (L.Reshape, L.Permute, L.RepeatVector, L.LayerNormalization, L.Normalization,
                       L.UnitNormalization, L.GroupNormalization, L.Conv1DTranspose, L.Conv2DTranspose,
                       L.Conv3DTranspose)):
        return barrier(f"feeds {name!r} ({cls})")
    if isinstance(op, L.Concatenate):
        rank = len(tuple(out.shape))
        if op.axis in (-1, rank - 1):
            return info("concat", [g for s in ins for g in s])
        return _merge(b, info, ins, node, out, name)
    if isinstance(op, (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)):
        return _merge(b, info, ins, node, out, name)
    if not isinstance(op, L.Layer):  # a keras.ops call recorded in the graph
        if cls in _OP_BINARY:
            if len(ins) == 1:
                for arg in node.arguments.args:
                    if not _is_tensor(arg) and getattr(arg, "ndim", 0) not in (0,):
                        raise ModelError(f"op {name!r} ({cls}) applies a non-scalar constant; channel pruning "
                                         "cannot slice it")
                return info("passthrough", ins[0])
            return _merge(b, info, ins, node, out, name)
        if cls in _OP_UNARY:
            return info("passthrough", ins[0])
        if cls in ("Softmax", "LogSoftmax"):
            return barrier(f"feeds {name!r} ({cls})")
    raise ModelError(f"channel pruning cannot handle layer {name!r} ({cls}); supported: convolutions, Dense, "
                     "depthwise/separable convs, BatchNormalization, activations, pooling, padding, "
                     "Add/Multiply/Concatenate and elementwise ops")


def _producer(b: _Builder, op, ins, out, n_out) -> LayerInfo:
    act = getattr(getattr(op, "activation", None), "__name__", "linear")
    g = b.new(n_out, producer=op.name)
    if act not in _ELEMENTWISE_ACTIVATIONS:
        b.fix([g], f"{op.name!r} applies {act} across channels")
    return LayerInfo(op.name, "producer", ins, [g])


def _merge(b: _Builder, info, ins, node, out, name) -> LayerInfo:
    """Elementwise merge: inputs with the output's channel count are tied; 1-channel inputs broadcast."""
    n_out = _channels(out)
    tied = [s for s, t in zip(ins, node.input_tensors) if _channels(t) == n_out and n_out > 1]
    first = tied[0] if tied else ins[0]
    sizes = lambda s: [b.groups[b.root(g)].size for g in s]  # noqa: E731
    if all(len(s) == len(first) and sizes(s) == sizes(first) for s in tied):
        for s in tied[1:]:
            for x, y in zip(first, s):
                b.union(x, y)
        return info("merge", first)
    # Concatenations with different splits meeting in one Add: their channels cannot be pruned consistently.
    for s in tied:
        b.fix(s, f"{name!r} adds tensors whose channels come from different concatenations")
    return info("merge", first)


def _is_tensor(x) -> bool:
    import keras

    return isinstance(x, keras.KerasTensor)


def _model_class():
    import keras

    return keras.Model


def _transpose_classes():
    from keras import layers as L

    return (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)


def _passthrough_classes():
    from keras import layers as L

    return (L.ReLU, L.LeakyReLU, L.ELU, L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
            L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization, L.Identity,
            L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D,
            L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D,
            L.AveragePooling3D, L.UpSampling1D, L.UpSampling2D, L.UpSampling3D)
