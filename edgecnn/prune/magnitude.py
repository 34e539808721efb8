"""Magnitude sparsity on Keras 3: the smallest weights of conv/dense kernels become exact zeros.

tensorflow-model-optimization needs tf-keras, so this is a small mask-based
implementation of its recipe. During fine-tuning a callback raises the sparsity
on the polynomial schedule of Zhu & Gupta (2017) (TF-MOT's PolynomialDecay):

    s(t) = s_f + (s_0 - s_f) * (1 - (t - t_begin) / (t_end - t_begin)) ** 3

recomputes the masks every `frequency` steps and multiplies them into the
kernels after every batch, so the optimizer's updates never revive a pruned
weight. The weights themselves carry the zeros, so "stripping" the masks is a
no-op and the result is an ordinary Keras model.

Pruned kernels: Conv (not grouped), Dense and separable pointwise kernels, but
not the layers that produce a model output (classifier, detector head: few
weights, all of them decisive) nor a first conv on a 3-channel image. XNNPACK's
sparse fp32 path (sparse inference) runs 1x1 convolutions from the
EXPERIMENTAL_SPARSITY encoding; depthwise kernels are tiny and stay dense.
"""

from __future__ import annotations

import gzip

import numpy as np

# Share of the schedule's steps over which sparsity grows; the rest fine-tunes at the target.
RAMP_SHARE = 0.7


def target_layers(model) -> list:
    """The layers whose kernels are sparsified (see the module docstring)."""
    from keras import layers as L

    outputs = _output_producers(model)
    chosen = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
            continue
        if not isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D, L.Dense, L.SeparableConv1D, L.SeparableConv2D)):
            continue
        kernel = _kernel(layer)
        if layer.name in outputs or kernel.shape[-2] <= 3 or getattr(layer, "groups", 1) != 1:
            continue
        chosen.append(layer)
    return chosen


def _kernel(layer):
    return layer.pointwise_kernel if hasattr(layer, "pointwise_kernel") else layer.kernel


def _output_producers(model) -> set[str]:
    """Names of the weighted layers nearest to each model output (walking back through weightless ones)."""
    found, stack, seen = set(), list(model.outputs), set()
    while stack:
        t = stack.pop()
        op, node_index, _ = t._keras_history
        if id(op) in seen:
            continue
        seen.add(id(op))
        if getattr(op, "kernel", None) is not None or hasattr(op, "pointwise_kernel"):
            found.add(op.name)
            continue
        if op._inbound_nodes:
            stack.extend(op._inbound_nodes[node_index].input_tensors)
    return found


def polynomial_sparsity(step: int, target: float, begin: int, end: int, initial: float = 0.0,
                        power: int = 3) -> float:
    """Sparsity at optimizer step `step`: `initial` before `begin`, `target` from `end` on."""
    if end <= begin:
        return target
    p = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return target + (initial - target) * (1 - p) ** power


def compute_masks(kernels: list[np.ndarray], sparsity: float, scope: str = "global") -> list[np.ndarray]:
    """Boolean keep-masks removing exactly round(sparsity * n) smallest |w| (globally or per kernel)."""
    if scope == "layer":
        return [compute_masks([k], sparsity, "global")[0] for k in kernels]
    flat = np.concatenate([np.abs(k).ravel() for k in kernels])
    drop = int(round(sparsity * flat.size))
    keep = np.ones(flat.size, bool)
    if drop > 0:
        keep[np.argpartition(flat, drop - 1)[:drop]] = False
    masks, start = [], 0
    for k in kernels:
        masks.append(keep[start:start + k.size].reshape(k.shape))
        start += k.size
    return masks


def apply_sparsity(layers: list, sparsity: float, scope: str = "global") -> None:
    """Zero the smallest weights of `layers` in place, to `sparsity` (one shot)."""
    kernels = [_kernel(layer) for layer in layers]
    for var, mask in zip(kernels, compute_masks([np.asarray(v.numpy()) for v in kernels], sparsity, scope)):
        var.assign(np.asarray(var.numpy()) * mask)


def sparsity_callback(layers: list, target: float, total_steps: int, scope: str = "global",
                      frequency: int = 20):
    """A keras Callback growing sparsity on the polynomial schedule over RAMP_SHARE of `total_steps`.

    The step is the optimizer's iteration count, so a run resumed by
    BackupAndRestore continues on the same schedule.
    """
    import keras

    end = max(1, int(total_steps * RAMP_SHARE))
    kernels = [_kernel(layer) for layer in layers]

    class GrowSparsity(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.masks = None

        def _update(self, step: int) -> None:
            s = polynomial_sparsity(step, target, 0, end)
            self.masks = compute_masks([np.asarray(v.numpy()) for v in kernels], s, scope)

        def on_train_begin(self, logs=None):
            self._update(int(self.model.optimizer.iterations.numpy()))
            self._apply()

        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if step % frequency == 0 or step >= end:
                self._update(step)
            self._apply()

        def _apply(self):
            for var, mask in zip(kernels, self.masks):
                var.assign(np.asarray(var.numpy()) * mask)

    return GrowSparsity()


def measured_sparsity(layers: list) -> float:
    """Share of exact zeros over the kernels of `layers`."""
    zeros = total = 0
    for layer in layers:
        k = np.asarray(_kernel(layer).numpy())
        zeros += int(np.sum(k == 0))
        total += k.size
    return zeros / total if total else 0.0


def tflite_sparsity(keras_model, min_elements: int = 1024) -> dict:
    """Convert twice (plain fp32, and with Optimize.EXPERIMENTAL_SPARSITY) and report what survived.

    zero_share: exact zeros among the float weight buffers of >= min_elements in the plain
    flatbuffer (did the converter keep the zeros, e.g. through batch-norm folding?);
    sparse_tensors: weight tensors the sparsity-optimized flatbuffer stores in a sparse encoding
    (what XNNPACK's sparse path reads); sizes raw and gzipped.
    """
    import tensorflow as tf
    from tensorflow.lite.tools import flatbuffer_utils

    from edgecnn.frameworks.tf import convert, tflite_converter, tflite_float

    plain = tflite_float(keras_model)
    c = tflite_converter(keras_model)
    c.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    sparse = convert(c, "sparsity encoding")
    fb = flatbuffer_utils.read_model_from_bytearray(bytearray(plain))
    zeros = total = 0
    for sub in fb.subgraphs:
        for t in sub.tensors:
            data = fb.buffers[t.buffer].data if t.buffer < len(fb.buffers) else None
            if data is None or t.type != 0 or len(data) < 4 * min_elements:  # type 0 = FLOAT32
                continue
            w = np.frombuffer(bytes(data), np.float32)
            zeros += int(np.sum(w == 0))
            total += w.size
    sfb = flatbuffer_utils.read_model_from_bytearray(bytearray(sparse))
    n_sparse = sum(1 for sub in sfb.subgraphs for t in sub.tensors if t.sparsity is not None)
    return {"zero_share": round(zeros / total, 4) if total else 0.0, "sparse_tensors": n_sparse,
            "tflite_bytes": len(plain), "tflite_gzip_bytes": len(gzip.compress(plain, 9)),
            "sparse_tflite_bytes": len(sparse), "sparse_tflite_gzip_bytes": len(gzip.compress(sparse, 9)),
            "_plain": plain, "_sparse": sparse}
