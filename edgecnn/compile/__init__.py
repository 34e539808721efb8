"""Compile a model for a target into a bundle: model file(s) plus manifest.json, ready for the runner.

    from edgecnn.compile import compile_model
    result = compile_model("yolo_lite", "a72", backend="tvm", output_dir="build/yolo-a72-tvm")
    result.bundle.path, result.bundle.manifest.verification, result.cached

One function does the whole stage: resolve the target and the backend (default:
the target's first runtime), load the source model with its data contract,
look the content-hash key up in the bundle cache, else build with the backend
(COMPILERS), check the ELF machine of any library, compare outputs with the
source model on real images, and write the manifest. The bundle is built under
a temporary name in the cache and copied to `output_dir` the same way, so an
interrupted compile leaves nothing that looks like a bundle.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgecnn.artifacts import Backend, Bundle, Manifest, Precision, write_manifest
from edgecnn.compile import cache
from edgecnn.compile.tune import DEFAULT_TRIALS
from edgecnn.errors import EdgecnnError, TargetError

if TYPE_CHECKING:
    from edgecnn.compile.job import Compiler

__all__ = ["COMPILERS", "CompileResult", "DEFAULT_TRIALS", "compile_model", "compiler"]

# Backend name -> the module whose COMPILER (a compile.job.Compiler) builds it; imported on first use.
# A new backend is one module plus one line here (docs/architecture.md, "Compile backends").
COMPILERS: dict[str, str] = {
    Backend.TFLITE.value: "edgecnn.compile.tflite",
    Backend.ONNX.value: "edgecnn.compile.onnx",
    Backend.TVM.value: "edgecnn.compile.tvm",
    Backend.NCNN.value: "edgecnn.compile.ncnn",
}
# Detector post-processing for mAP: a low score threshold (COCO ranks every candidate), per-class NMS.
POSTPROCESS_DETECTION = {"conf_threshold": 0.005, "iou_threshold": 0.45, "max_detections": 100}


@dataclass
class CompileResult:
    """What compile_model produced; to_dict() is what `edgecnn compile --format json` prints."""

    bundle: Bundle
    cached: bool  # True: reused from cache_dir("bundles"), nothing was rebuilt
    seconds: float

    def to_dict(self) -> dict:
        return {"bundle": str(self.bundle.path), "cached": self.cached, "seconds": round(self.seconds, 2),
                "size_bytes": self.bundle.size_bytes, "manifest": self.bundle.manifest.to_dict()}


def compiler(backend: str) -> "Compiler":
    """The Compiler registered under `backend`; EdgecnnError naming the known ones."""
    if backend not in COMPILERS:
        raise EdgecnnError(f"unknown backend {backend!r}; known: {', '.join(COMPILERS)}")
    return importlib.import_module(COMPILERS[backend]).COMPILER


def supports(backend: str, precision: str) -> bool:
    """Whether `backend` builds `precision`, as the backend itself declares it."""
    return compiler(backend).supports(precision)


def compile_model(model: str | Path, target, *, backend: str | None = None, precision: str | None = None,
                  output_dir: str | Path | None = None, tune: bool = False, trials: int = DEFAULT_TRIALS,
                  calib: str | Path | None = None, weights: str | Path = "demo", verify: bool = True,
                  contract: dict | None = None, log: Callable[[str], None] | None = None) -> CompileResult:
    """Compile `model` for `target` into a verified bundle; reuse the cached one when nothing changed.

    model: zoo reference (NAME or NAME:key=value; `weights` demo/random/imagenet/.weights.h5), a
    .keras/.h5 file, an .onnx or a .tflite file (files take preprocessing etc. from a <model>.json
    sidecar). target: a name, alias, .toml path or Target. backend: tflite | onnx | tvm | ncnn, default the
    target's first backend. precision: fp32 | fp16 (tflite, ncnn) | int8 (tflite, onnx through
    edgecnn.quantize; ncnn through compile/ncnn_int8; or an already-int8 file); default: a model file's own precision (what the backend
    makes of it), fp32 for Keras models. tune/trials: MetaSchedule for tvm on the host.
    calib: calibration set for int8 (default for demo models: demo-<task>), also the verification
    images. output_dir: where the bundle folder goes (default: it stays in the cache).
    """
    from edgecnn.compile.job import Job, check_calibration
    from edgecnn.paths import check_cache_root, work_dir
    from edgecnn.source import load_source
    from edgecnn.targets import Target, get_target

    started = time.perf_counter()
    say = log or (lambda _msg: None)
    t = target if isinstance(target, Target) else get_target(str(target))
    backend = backend or t.backends[0]
    comp = compiler(backend)
    if backend not in t.backends:
        raise TargetError(f"target {t.name} cannot run the {backend} backend (its backends: {', '.join(t.backends)})")
    if precision is not None:
        if precision not in Precision.values():
            raise EdgecnnError(f"unknown precision {precision!r}; known: {', '.join(Precision.values())}")
        comp.refuse_precision(precision)  # decided by the arguments alone: before the model is loaded
    if tune and backend != Backend.TVM.value:
        raise EdgecnnError(f"--tune tunes TVM kernels; the {backend} backend has nothing to tune (use --backend tvm)")
    if output_dir is not None:
        cache.check_output_dir(Path(output_dir))
    check_cache_root()
    say(f"loading {model}")
    source = load_source(model, weights, contract=contract)
    if precision is None:  # a file passes through at its own precision (fp16, int8) without a flag
        precision = comp.made_from(source)
        comp.refuse_precision(precision)
    job = Job(source, t, backend, precision, calib, tune, trials, say)
    comp.check(job)
    check_calibration(job)
    key = cache.bundle_key(bundle_key_parts(job, comp))
    bundle, cached = cache.lookup(key), True
    if bundle is None:
        cached = False
        with cache.building(key) as folder, work_dir("compile") as work:
            _build(job, comp, key, folder, Path(work), verify)
        bundle = cache.lookup(key)
        if bundle is None:  # the folder was renamed into place a moment ago
            raise EdgecnnError(f"bundle {cache.bundle_path(key)} vanished right after it was written")
        if job.tune:
            _alias_after_tuning(bundle, job, comp)
    else:
        say(f"cached bundle {bundle.path}")
    if output_dir is not None:
        bundle = cache.copy_out(bundle, Path(output_dir))
    return CompileResult(bundle, cached, time.perf_counter() - started)


def _alias_after_tuning(bundle, job, comp) -> None:
    """File a tuned bundle under the key of the database it was built with, too.

    The key is taken before tuning (database as it was), but the next identical call sees the
    database as tuning left it; without this alias that call would build the same bundle again.
    """
    import dataclasses
    import shutil

    from edgecnn.artifacts import write_manifest

    after = cache.bundle_key(bundle_key_parts(job, comp))
    if after == bundle.manifest.cache_key or cache.lookup(after) is not None:
        return
    with cache.building(after) as folder:
        for name in bundle.manifest.files.values():
            shutil.copy2(bundle.path / name, folder / name)
        write_manifest(folder, dataclasses.replace(bundle.manifest, cache_key=after))


def bundle_key_parts(job, comp) -> dict:
    """Everything that decides the bundle's bytes (cache.bundle_key adds the compile code version)."""
    parts = {"source": job.source.sha256, "backend": job.backend, "precision": job.precision,
             # The cost model and cache sizes describe the board's timing, not the code built for it.
             "target": {k: v for k, v in job.target.to_dict().items() if k not in ("source", "cost", "cache")},
             "tools": comp.tools(job), "verify_images": str(job.calib) if job.calib else None,
             **comp.key_parts(job)}
    if job.precision == Precision.INT8.value and job.source.precision != Precision.INT8.value:
        from edgecnn.artifacts import file_sha256

        # The quantizer's code and calibration images decide the int8 bytes too.
        parts["quantize_code"] = file_sha256(Path(__file__).resolve().parent.parent / "quantize")
        parts["calib"] = _calib_digest(job)
    return parts


def _calib_digest(job) -> str:
    from edgecnn.data.calibration import load_calibration_set

    from edgecnn.compile.verify import demo_image_set

    calib = job.calib if job.calib is not None else demo_image_set(job.source.task)
    try:
        cset = load_calibration_set(calib)
    except EdgecnnError:
        return str(calib)  # quantize() reports it with its own message
    return cset.name + ":" + ",".join(f"{p.name}:{p.stat().st_size}" for p in cset.images)


def _build(job, comp, key: str, folder: Path, work: Path, verify: bool) -> None:
    """Build into `folder` (a temporary name until the caller's block ends), verify, write the manifest."""
    from edgecnn.compile import verify as v

    src, t = job.source, job.target
    built = comp.build(job, folder, work)
    checks: dict = {}
    gpu_arch = t.tvm.get("arch") if t.tvm.get("kind") == "cuda" else None
    elf = v.check_elf(folder, built.files, t.arch, gpu_arch)
    if elf:
        checks["elf"] = elf
    if not verify:
        checks.update(v.skipped("verify=False (--no-verify)"))
    else:
        mode, run, reason = comp.runner(folder, built, t)
        if run is None:
            job.log(f"verification skipped: {reason}")
            checks.update(v.skipped(reason))
        else:
            job.log(f"verifying outputs against the source model ({mode})")
            count = v.EMULATED_IMAGES if mode == "emulated" else v.HOST_IMAGES
            checks.update(v.verify_outputs(job, built, run, mode, count))
            if mode == "host" and not t.is_host and not elf:
                checks["note"] = f"portable {job.backend} file: verified on this machine with the bytes {t.name} loads"
    checks.update({k: built.build[k] for k in ("quantization",) if k in built.build})
    manifest = Manifest(
        name=src.name, target=t.name, arch=t.arch, backend=job.backend, precision=job.precision,
        files=built.files, inputs=built.inputs, outputs=built.outputs, task=src.task,
        preprocessing=src.preprocessing.to_dict(), classes=src.classes, head=src.head,
        postprocess=dict(POSTPROCESS_DETECTION) if src.task == "detection" else None, backend_options=built.backend_options,
        source={"ref": src.ref, "format": src.kind, "sha256": src.sha256, "weights": src.weights},
        macs=src.macs, params=src.params, tools=built.tools, verification=checks, cache_key=key,
        build={k: val for k, val in built.build.items() if k != "quantization"},
        input_step=_input_step(src.preprocessing, built.inputs))
    write_manifest(folder, manifest)


def _input_step(prep, inputs) -> dict | None:
    """The pixel-to-input step of a one-image-input model with an integer input and known quantisation."""
    import numpy as np

    from edgecnn.runner.tensors import pixel_step_kind, pixel_table

    if len(inputs) != 1 or np.dtype(inputs[0].dtype).kind not in "iu" or inputs[0].scale is None:
        return None
    spec = inputs[0]
    table = pixel_table(prep.scale, prep.offset, np.dtype(spec.dtype), spec.scale, spec.zero_point or 0)
    return {"kind": pixel_step_kind(table), "dtype": spec.dtype}
