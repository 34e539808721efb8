"""Parameter and multiply-accumulate (MAC) counts of a Keras model, computed from its layers.

MACs are counted for one image (batch 1) from each layer's kernel shape and its
output (or, for transposed convolutions, input) spatial size:

- Conv1D/2D/3D (groups included): out_positions * prod(kernel.shape),
  kernel = (*k, in_channels / groups, filters).
- DepthwiseConv1D/2D: out_positions * prod(kernel.shape) (depth_multiplier included).
- SeparableConv1D/2D: the depthwise part plus the 1x1 pointwise part, both at the output size.
- Conv2DTranspose/Conv1DTranspose/Conv3DTranspose: in_positions * prod(kernel.shape).
- Dense: in_features * units, times the leading (non-batch) dimensions of its output.

Every other layer (batch norm, activations, pooling, additions, squeeze-excite
multiplies, bias additions, resizing) contributes 0, which is the convention
behind the published MobileNet figures. Nested models (a Functional or
Sequential model used as a layer) are walked recursively. Each layer is counted
once at its own symbolic shape, so a layer called on several inputs (weight
sharing) is counted once.
"""

from __future__ import annotations

from math import prod

from edgecnn.errors import ModelError


def count_params(model) -> int:
    """Number of scalars in all weights (trainable and not, e.g. batch-norm statistics)."""
    seen: set[int] = set()
    total = 0
    for w in model.weights:
        if id(w) in seen:  # a shared weight is stored once
            continue
        seen.add(id(w))
        total += prod(int(d) for d in w.shape)
    return total


def count_macs(model) -> int:
    """Multiply-accumulates for one image, summed over the layers listed in the module docstring."""
    return sum(_layer_macs(layer) for layer in _walk(model))


def layer_macs(model) -> list[tuple[str, int]]:
    """(layer name, MACs) for every layer that does multiply-accumulates, in graph order."""
    return [(layer.name, m) for layer in _walk(model) if (m := _layer_macs(layer))]


def _walk(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer is not model:
            yield from _walk(layer)
        else:
            yield layer


def _positions(layer, tensor_attr: str) -> int:
    """Spatial positions of a conv layer's output (or input), whatever its data_format."""
    shape = tuple(getattr(layer, tensor_attr).shape)[1:]
    spatial = shape[1:] if getattr(layer, "data_format", "channels_last") == "channels_first" else shape[:-1]
    if any(d is None for d in spatial):
        raise ModelError(f"cannot count MACs: layer {layer.name!r} has an unknown spatial size {shape}; "
                         "build the model with a fixed input size")
    return prod(spatial)


def _layer_macs(layer) -> int:
    from keras import layers as L

    if isinstance(layer, L.Dense):
        lead = tuple(layer.output.shape)[1:-1]
        if any(d is None for d in lead):
            raise ModelError(f"cannot count MACs: layer {layer.name!r} has unknown leading dimensions")
        return prod(lead) * prod(int(d) for d in layer.kernel.shape)
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        depthwise = prod(int(d) for d in layer.depthwise_kernel.shape)
        pointwise = prod(int(d) for d in layer.pointwise_kernel.shape)
        return _positions(layer, "output") * (depthwise + pointwise)
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return _positions(layer, "output") * prod(int(d) for d in layer.kernel.shape)
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        # Every input position scatters a full kernel into the output.
        return _positions(layer, "input") * prod(int(d) for d in layer.kernel.shape)
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        return _positions(layer, "output") * prod(int(d) for d in layer.kernel.shape)
    return 0
