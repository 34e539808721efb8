"""Structured channel pruning: rank channels, choose what to keep, rebuild a smaller dense model.

The dependency groups come from edgecnn.prune.graph. For every prunable group:

- importance per channel: the L1 or L2 norm of each producer's filter for that
  channel, or |gamma| of the BatchNormalization layers on the group; each layer's
  vector is divided by its mean so that tied producers (a residual stage) count
  alike and, for a global ranking, layers of different scale compare;
- scope "layer": every group loses `ratio` of its channels; "global": the lowest
  `ratio` of all prunable channels go, wherever they are;
- the kept count is rounded *up* to a multiple of 8 and is at least 8 (XNNPACK's
  fp32 and int8 kernels work on 8- or 16-channel tiles: 57 channels cost what 64
  do), so the removed share can be a little under `ratio`.

The smaller model is built from the original's config with new `filters`/`units`
and sliced weights (no masks), then checked against the original whose pruned
channels are cut off at their consumers: both must compute the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecnn.errors import ModelError
from edgecnn.prune.graph import ChannelGraph, analyze

MIN_CHANNELS = 8
MULTIPLE = 8


@dataclass
class ChannelPlan:
    """Kept channel indices per pruned group (root id), plus a summary per prunable group."""

    graph: ChannelGraph
    keep: dict[int, np.ndarray]
    summary: list[dict]  # {"producers", "before", "after"}

    @property
    def prunable_channels(self) -> int:
        return sum(s["before"] for s in self.summary)

    @property
    def removed_channels(self) -> int:
        return sum(s["before"] - s["after"] for s in self.summary)

    def tensor_keep(self, segments: list[int]) -> np.ndarray | None:
        """Kept indices of a tensor described by `segments`, or None when it keeps every channel."""
        parts, offset, changed = [], 0, False
        for g in segments:
            root = self.graph.root(g)
            size = self.graph.groups[root].size
            kept = self.keep.get(root)
            changed |= kept is not None
            parts.append((np.arange(size) if kept is None else kept) + offset)
            offset += size
        return np.concatenate(parts) if changed else None


def _out_kernel(layer) -> np.ndarray:
    """The weight whose last axis is the layer's output channels (pointwise part of a separable conv)."""
    return np.asarray((layer.pointwise_kernel if hasattr(layer, "pointwise_kernel") else layer.kernel).numpy())


def channel_importance(model, graph: ChannelGraph, importance: str = "l1") -> dict[int, np.ndarray]:
    """Per prunable group (root id): one score per channel, higher = more important.

    With importance "bn", groups without a BatchNormalization get no scores (they are not pruned);
    a model with no batch norm at all is a ModelError.
    """
    scores: dict[int, np.ndarray] = {}
    bn_slices: dict[int, list[np.ndarray]] = {}
    if importance == "bn":
        from keras import layers as L

        for layer in model.layers:
            if not isinstance(layer, L.BatchNormalization) or layer.gamma is None:
                continue
            info = graph.layers[layer.name]
            gamma, offset = np.abs(layer.gamma.numpy()), 0
            for g in info.inputs[0]:
                root, size = graph.root(g), graph.group(g).size
                bn_slices.setdefault(root, []).append(gamma[offset:offset + size])
                offset += size
    for grp in graph.prunable():
        total = np.zeros(grp.size)
        if importance == "bn":
            if grp.id not in bn_slices:
                continue  # no batch norm to rank by (a squeeze-excite conv): the group keeps its channels
            vectors = bn_slices[grp.id]
        else:
            vectors = []
            for name in grp.producers:
                k = _out_kernel(model.get_layer(name)).reshape(-1, grp.size)
                vectors.append(np.abs(k).sum(0) if importance == "l1" else np.sqrt((k * k).sum(0)))
        for v in vectors:
            total += v / (v.mean() + 1e-12)
        scores[grp.id] = total / len(vectors)
    return scores


def _kept_count(size: int, target: float) -> int:
    if size <= MIN_CHANNELS:
        return size
    rounded = int(np.ceil(max(target, 1) / MULTIPLE) * MULTIPLE)
    return min(size, max(MIN_CHANNELS, rounded))


def plan_channels(model, ratio: float, importance: str = "l1", scope: str = "global",
                  graph: ChannelGraph | None = None) -> ChannelPlan:
    """Choose the channels to keep in every prunable group of `model`."""
    graph = graph or analyze(model)
    groups = graph.prunable()
    if not groups:
        raise ModelError(f"{model.name} has no prunable channels (every channel feeds a fixed-size output)")
    scores = channel_importance(model, graph, importance)
    if not scores:
        raise ModelError(f"importance 'bn' needs BatchNormalization layers; {model.name} has none on its prunable "
                         "channels: use importance l1 or l2")
    skipped = [g for g in groups if g.id not in scores]
    groups = [g for g in groups if g.id in scores]
    if scope == "layer":
        targets = {g.id: g.size * (1 - ratio) for g in groups}
    else:
        flat = np.concatenate([scores[g.id] for g in groups])
        owner = np.concatenate([np.full(g.size, g.id) for g in groups])
        removed = owner[np.argsort(flat, kind="stable")[:int(round(ratio * len(flat)))]]
        targets = {g.id: g.size - int(np.sum(removed == g.id)) for g in groups}
    keep, summary = {}, []
    for g in groups:
        n = _kept_count(g.size, targets[g.id])
        if n < g.size:
            keep[g.id] = np.sort(np.argsort(-scores[g.id], kind="stable")[:n])
        summary.append({"producers": list(g.producers), "before": g.size, "after": n})
    summary += [{"producers": list(g.producers), "before": g.size, "after": g.size, "kept": "no batch norm"}
                for g in skipped]
    return ChannelPlan(graph, keep, summary)


def _take(a: np.ndarray, idx: np.ndarray | None, axis: int) -> np.ndarray:
    return a if idx is None else np.take(a, idx, axis=axis)


def _sliced_weights(layer, weights: list[np.ndarray], role: str, in_k, out_k) -> list[np.ndarray]:
    from keras import layers as L

    if role == "producer":
        if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
            dw, pw, *bias = weights
            return [_take(dw, in_k, -2), _take(_take(pw, in_k, -2), out_k, -1), *(_take(b, out_k, 0) for b in bias)]
        kernel, *bias = weights
        return [_take(_take(kernel, in_k, -2), out_k, -1), *(_take(b, out_k, 0) for b in bias)]
    if role == "channelwise":
        if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
            kernel, *bias = weights
            return [_take(kernel, in_k, -2), *(_take(b, in_k, 0) for b in bias)]
        if isinstance(layer, L.PReLU):
            return [w if w.shape[-1] == 1 else _take(w, in_k, -1) for w in weights]
        return [_take(w, in_k, 0) for w in weights]  # BatchNormalization: gamma, beta, mean, variance
    if in_k is not None or out_k is not None:
        raise RuntimeError(f"bug: layer {layer.name} ({role}) with weights would change its channels")
    return weights


def rebuild(model, plan: ChannelPlan):
    """A new, smaller keras.Model: the original's config with fewer filters/units and sliced weights."""
    import keras

    config = model.get_config()
    for lc in config["layers"]:
        lc.pop("build_config", None)  # built from the old shapes it would create the old kernels
        info = plan.graph.layers.get(lc["name"])
        if info is not None and info.role == "producer":
            out_k = plan.tensor_keep(info.output)
            if out_k is not None:
                lc["config"]["units" if "units" in lc["config"] else "filters"] = len(out_k)
    new = keras.Model.from_config(config)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        info = plan.graph.layers[layer.name]
        in_k = plan.tensor_keep(info.inputs[0]) if info.inputs else None
        out_k = plan.tensor_keep(info.output)
        new.get_layer(layer.name).set_weights(_sliced_weights(layer, weights, info.role, in_k, out_k))
    return new


def zero_pruned_inputs(model, plan: ChannelPlan):
    """A copy of `model` whose consumers ignore the pruned channels: the float reference of `rebuild`.

    Pruned channels only ever reach producers' inputs (everything between is
    channel-local), so zeroing those kernel rows makes them dead, exactly as in
    the rebuilt model.
    """
    import keras

    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    for info in plan.graph.layers.values():
        if info.role != "producer":
            continue
        in_k = plan.tensor_keep(info.inputs[0])
        if in_k is None:
            continue
        layer = copy.get_layer(info.name)
        weights = layer.get_weights()
        k = 1 if hasattr(layer, "pointwise_kernel") else 0
        dead = np.ones(weights[k].shape[-2], bool)
        dead[in_k] = False
        weights[k][..., dead, :] = 0
        layer.set_weights(weights)
    return copy


def check_rebuild(model, pruned, plan: ChannelPlan, seed: int = 0, rtol: float = 1e-4) -> float:
    """Relative max difference between `pruned` and the zeroed original on random inputs; raises past rtol."""
    shape = tuple(d or 1 for d in model.input_shape[1:])
    x = np.random.default_rng(seed).uniform(-1, 1, (2, *shape)).astype(np.float32)
    ref = np.asarray(zero_pruned_inputs(model, plan)(x, training=False))
    got = np.asarray(pruned(x, training=False))
    err = float(np.max(np.abs(ref - got)) / (np.max(np.abs(ref)) + 1e-6))
    if not err <= rtol:
        raise RuntimeError(f"bug: the rebuilt model differs from the original by {err:.2e} (relative)")
    return err


def prune_channels(model, ratio: float, importance: str = "l1", scope: str = "global"):
    """(pruned keras.Model, ChannelPlan): analyze, plan, rebuild and check, without fine-tuning."""
    plan = plan_channels(model, ratio, importance, scope)
    pruned = rebuild(model, plan)
    check_rebuild(model, pruned, plan)
    return pruned, plan
