"""Emulated bench rows: the aarch64 bundle under qemu with the target's core, checked against the same inputs
run on this machine, with its guest instruction count as the performance figure.

latency_ms and fps are null: wall-clock under qemu says nothing about the board. Accuracy on the whole split
comes from `reference` run natively: the identical artifact where it is portable, else a host build of the
same source (the caller decides which; edgecnn.bench.pipeline).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np

from edgecnn.errors import ModelError

# Emulated runs check this many images (qemu is 250-450x slower than the board).
EMULATED_SAMPLE = 3
# Float outputs of the same artifact on x86 and aarch64 differ only by kernel choice (FMA, blocking).
EMULATED_ATOL = {"fp32": 1e-3, "fp16": 1e-2, "int8": None}  # int8: by quantization steps, see outputs_match
INT8_FLOAT_OUTPUT_ATOL = 0.05  # relative to max(1, |reference|): a wrong build is off by far more


def guest_run(bundle, target, data: str | None, limit: int | None, threads: int | None, label: str,
              log: Callable[[str], None]) -> tuple[list, Any]:
    """The qemu half of an emulated row: (the sample of inputs, its EmulatedRun).

    Needs nothing of the caller's state, so bench runs several at once (one qemu per core: instruction
    counts and the cache model's misses are the same however busy the machine is).
    """
    from edgecnn.bench.fidelity import inputs_for
    from edgecnn.emulate.bundle import run_bundle_emulated
    from edgecnn.emulate.plugin import profile_args

    sample = inputs_for(bundle, data, min(EMULATED_SAMPLE, limit or EMULATED_SAMPLE))[1]
    guest_threads = threads or 1
    log(f"{label}: {len(sample)} image(s) under qemu -cpu {target.qemu_cpu}, {guest_threads} thread(s)")
    plugin_args = profile_args(target.cache.l1, target.cache.l2) if target.cost and target.cache else ()
    return sample, run_bundle_emulated(bundle, sample, target, threads=guest_threads, plugin_args=plugin_args)


@contextmanager
def guest_pool(plan) -> Iterator[Callable | None]:
    """Emulated benches: submit(variant, bundle, data) -> future of its qemu run, one qemu per core; else None.

    On the way out by an error or an interrupt, queued runs are dropped and running qemu processes killed.
    """
    from edgecnn.kinds import BenchMode

    if plan.mode is not BenchMode.EMULATED or len(plan.variants) < 2:
        yield None
        return
    import os
    from concurrent.futures import ThreadPoolExecutor

    from edgecnn.emulate.run import stop_guests

    pool = ThreadPoolExecutor(max_workers=min(len(plan.variants), os.cpu_count() or 1),
                              thread_name_prefix="edgecnn-qemu")

    def submit(v, bundle, data: str | None):
        return pool.submit(guest_run, bundle, plan.target, data, plan.limit, plan.threads,
                           f"{v.model} {v.backend} {v.precision}", lambda _msg: None)

    try:
        yield submit
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        stop_guests()
        raise
    pool.shutdown()


def run_emulated(bundle, reference, portable: bool, source, target, data: str | None, limit: int | None,
                 threads: int | None, label: str, log: Callable[[str], None], guest=None) -> dict[str, Any]:
    """The row's measured fields for `bundle` on `target` under qemu; `reference` runs here for accuracy.

    guest: a future of guest_run's result when bench started the qemu run already; else it runs here.
    """
    from edgecnn.bench.cached import cached_evaluation
    from edgecnn.bench.fidelity import fidelity
    from edgecnn.runner.run import run_bundle
    from edgecnn.runner.sessions import open_session

    log(f"{label}: accuracy on this machine ({'same artifact' if portable else 'host build of the same model'})")
    native = cached_evaluation(reference, data, limit, threads,
                               lambda: run_bundle(reference, data=data, limit=limit, runs=1, warmup=0, threads=threads))
    sample, emu = guest.result() if guest is not None else guest_run(bundle, target, data, limit, threads, label,
                                                                     log)
    session = open_session(reference, threads=1)
    worst = outputs_match([session(x) for x in sample], emu.outputs, bundle.manifest)
    instructions = int(round(float(np.median(list(emu.instructions)))))
    return {
        "latency_ms": None, "fps": None, "load_ms": None, "first_inference_ms": None, "peak_rss_mb": None,
        "threads": threads or 1, "images": native.get("images"), "accuracy": native.get("accuracy"),
        "inputs": native.get("inputs"), "predictions": native.get("predictions"),
        "fidelity": fidelity(reference, source, data, "same artifact" if portable else "host build"),
        "emulated_instructions": instructions,
        **prediction(target, bundle.manifest.backend, emu.profile),
        "emulated_check": {"images": len(sample), "max_abs_diff": worst, "qemu_cpu": target.qemu_cpu,
                           "accuracy_from": "same artifact, native" if portable else "host build, native"},
    }


def prediction(target, backend: str, profile: list) -> dict[str, Any]:
    """predicted_latency_ms and how far to trust it, from the last counted inference's profile (the caches
    warm, as in a benchmark loop) and the board's fitted cost model; nulls without a model."""
    from edgecnn.emulate.cost import features, predict_ms

    cost = target.cost
    if cost is None or not profile:
        return {"predicted_latency_ms": None}
    feats = features(list(profile[-1].values()))
    scale = (f"fitted on published {cost.runtime} figures" if backend == cost.runtime else
             f"{backend} counts on a scale fitted to published {cost.runtime} figures: no published {backend} "
             "figure checks it")
    return {"predicted_latency_ms": round(predict_ms(cost.weights_ns, feats), 3),
            "prediction": {"error_band": {"median": cost.median_error, "worst": cost.worst_error},
                           "scale": scale, "features": {k: int(v) for k, v in feats.items()}}}


def prediction_note(cost) -> str:
    """The bench note that says what predicted_latency_ms is and how far it was off where it was checked."""
    return (f"predicted_latency_ms: a prediction, not a measurement: the guest profile (instruction classes, cache "
            f"misses, waits) weighted by the cost model in the target's TOML, fitted on {cost.reference}; on "
            f"networks left out of that fit it was off by {cost.median_error:.0%} (median), "
            f"{cost.worst_error:.0%} (worst)")


def outputs_match(host: list, guest: list, manifest) -> float:
    """Largest |host - guest| over the sample; raises when past tolerance (the ARM build is wrong)."""
    from edgecnn.runner.metrics import output_agreement

    worst = 0.0
    for h_out, g_out in zip(host, guest):
        for spec, h, g in zip(manifest.outputs, h_out, g_out):
            # One image at a time: each output is judged against its own magnitude.
            fig = output_agreement(np.asarray(h)[None], np.asarray(g)[None])
            diff, scale = fig.max_abs_diff, fig.scale
            worst = max(worst, diff)
            atol = EMULATED_ATOL.get(manifest.precision)
            if atol is None and spec.scale:  # int8 output: allow one quantization step of it
                atol = spec.scale * 1.01 + 1e-6
            elif atol is None:
                # int8 inside, float output (ONNX QDQ): x86's onnxruntime and the ARM one fuse different ops
                # into int8 kernels, so their roundings differ by a few steps of inner layers.
                atol = INT8_FLOAT_OUTPUT_ATOL
            if diff > atol * scale:
                raise ModelError(f"{manifest.name} ({manifest.backend} {manifest.precision}) on "
                                 f"{manifest.target}: emulated outputs differ from the host run by {diff:.3g} "
                                 f"(tolerance {atol * scale:.3g}); the aarch64 build computes something else")
    return worst
