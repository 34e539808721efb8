"""Before/after figures for pruning: size, accuracy and TFLite latency measured side by side.

Latency of the two fp32 flatbuffers is taken in one process, with the same
thread count and XNNPACK (LiteRT's default CPU path), alternating which model
runs first in each round: on a shared machine the load drifts, and interleaving
makes both models see the same drift. The median is the figure to compare.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgecnn.paths import work_dir


def clean_copy(model):
    """The same network and weights without optimizer or compile state (what is saved and measured)."""
    import keras

    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def keras_bytes(model) -> bytes:
    """The .keras file of an uncompiled copy of `model`."""
    with work_dir("prune") as tmp:
        path = Path(tmp) / "model.keras"
        clean_copy(model).save(path)
        return path.read_bytes()


def _stats(times_s: list[float]) -> dict:
    ms = np.asarray(times_s) * 1e3
    return {"mean": round(float(ms.mean()), 4), "p50": round(float(np.median(ms)), 4),
            "p90": round(float(np.percentile(ms, 90)), 4), "min": round(float(ms.min()), 4),
            "std": round(float(ms.std()), 4)}


def latency_side_by_side(before: bytes, after: bytes, threads: int = 1, runs: int = 200, warmup: int = 10,
                         seed: int = 0) -> dict:
    """Interleaved invoke() timings of two TFLite models on the same random input; medians and speed-up."""
    from edgecnn.frameworks.litert import interpreter

    its = [interpreter(m, threads) for m in (before, after)]
    inp = its[0].get_input_details()[0]
    x = np.random.default_rng(seed).uniform(-1, 1, inp["shape"]).astype(np.float32)
    for it in its:
        it.set_tensor(it.get_input_details()[0]["index"], x)
        for _ in range(warmup):
            it.invoke()
    times: list[list[float]] = [[], []]
    for r in range(runs):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            its[k].invoke()
            times[k].append(time.perf_counter() - t0)
    b, a = _stats(times[0]), _stats(times[1])
    return {"backend": "tflite", "precision": "fp32", "threads": threads, "runs": runs, "before": b, "after": a,
            "speedup": round(b["p50"] / a["p50"], 3),
            "fps": {"before": round(1e3 / b["p50"], 2), "after": round(1e3 / a["p50"], 2)}}


def accuracy(model, metadata: dict, dataset) -> dict | None:
    """Accuracy of a Keras model on a labelled data set, as tools/train_demo.py and bench measure it."""
    if dataset is None:
        return None
    from edgecnn.runner.metrics import evaluate

    return evaluate(model.predict_on_batch, metadata, dataset)
