"""What one compile works on (the source model, resolved target and options) and what a backend hands back.

The source is an edgecnn.source.SourceModel; its content hash (weights, graph
and data contract) is the first part of the bundle cache key, so a retrained
model or an edited sidecar never reuses an old bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgecnn.artifacts import TensorSpec
from edgecnn.errors import ModelError
from edgecnn.source import SourceModel
from edgecnn.targets import Target

Log = Callable[[str], None]


@dataclass
class Job:
    """One compile request, resolved: everything a backend's build() needs."""

    source: SourceModel
    target: Target
    backend: str
    precision: str
    calib: str | Path | None = None
    tune: bool = False
    trials: int = 0
    log: Log = field(default=lambda _msg: None)


@dataclass
class Built:
    """What a backend wrote into the bundle folder and what the manifest must say about it."""

    files: dict[str, str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    backend_options: dict[str, Any]  # Manifest.backend_options: what the runner must honour
    tools: dict[str, str]
    build: dict[str, Any] = field(default_factory=dict)  # quantization / tuning facts
    reference: Any = None  # predictor (N,H,W,3) -> outputs that verification compares against; None: the source


class Compiler:
    """A compile backend (docs/architecture.md, "Compile backends"); compile.COMPILERS holds one of each.

    `precisions` is the one statement of what the backend builds: compile_model,
    bench and the CLI read it. `precision_advice` says, for a precision it does not
    build, why and which backend does.
    """

    name: str = ""
    precisions: tuple[str, ...] = ()
    precision_advice: dict[str, str] = {}
    formats: tuple[str, ...] = ("keras",)  # source kinds it builds without converting to another format

    def supports(self, precision: str) -> bool:
        return precision in self.precisions

    def made_from(self, source: SourceModel) -> str:
        """The precision this backend builds from `source` when none is asked for: a file's own."""
        return source.precision if source.kind != "keras" else "fp32"

    def refuse_precision(self, precision: str) -> None:
        """ModelError when the backend does not build `precision`, with the advice."""
        if not self.supports(precision):
            raise ModelError(self.precision_advice.get(
                precision, f"the {self.name} backend builds {', '.join(self.precisions)}, not {precision}"))

    def __init__(self, module: Any = None):
        # The backend module's check/tools/build/host_runner functions are its steps, looked up at call
        # time (so a test can replace one); a backend with no module overrides the methods instead.
        self.module = module

    def check(self, job: Job) -> None:
        """Refuse what this backend cannot build, before any heavy work."""
        self.module.check(job)

    def tools(self, job: Job) -> dict[str, str]:
        """Versions of every tool that decides the bundle's bytes."""
        return self.module.tools(job)

    def key_parts(self, job: Job) -> dict[str, Any]:
        """What besides source, target, precision and tools decides the bundle's bytes."""
        return {}

    def build(self, job: Job, out: Path, work: Path) -> Built:
        """Write the bundle's files into `out` (a temporary folder until the manifest is written)."""
        return self.module.build(job, out, work)

    def host_runner(self, folder: Path, built: Built) -> Callable:
        """A predictor (N,H,W,C) -> outputs running the built files on this machine."""
        return self.module.host_runner(folder, built)

    def runner(self, folder: Path, built: Built, target) -> tuple[str, Callable | None, str]:
        """(mode, run, reason) for verification. Portable files (.tflite, .onnx) are the same bytes on every
        machine, so this machine checks the board's file."""
        return "host", self.host_runner(folder, built), ""


def check_file_precision(src: SourceModel, precision: str, backend: str, converts_to: tuple[str, ...] = ()) -> None:
    """A given .onnx/.tflite keeps its own precision, except what this backend makes of an fp32 file.

    An fp32 file can always become int8 (edgecnn.quantize calibrates it); `converts_to` lists what
    else the backend's converter writes from fp32 (onnx2tf's fp16 for the tflite backend).
    """
    if src.kind == "keras" or src.precision == precision:
        return
    if src.precision == "fp32" and (precision == "int8" or precision in converts_to):
        return
    raise ModelError(f"{Path(src.ref).name} is already {src.precision}; compile it with --precision {src.precision}"
                     + ("" if src.precision != "fp32" else f" or quantize its Keras source for {precision}")
                     + f" ({backend} takes the file as it is)")


def check_calibration(job: Job) -> None:
    """int8 from a float model needs calibration images; only demo models may use the demo set.

    Checked before the bundle key is computed, because that key hashes the calibration images and the
    demo set would be generated for it.
    """
    from edgecnn.errors import DataError

    src = job.source
    if job.precision == "int8" and src.precision != "int8" and job.calib is None and not src.demo:
        raise DataError(f"int8 needs calibration images for {src.name}: pass --calib (a named set under "
                        "calibration/ or a folder of images)")


def quantize_int8(job: Job, backend: str, work: Path) -> tuple[Path, dict]:
    """int8 through edgecnn.quantize (calibrated and accuracy-validated there); returns the file and its figures.

    Demo-weight zoo models calibrate on the demo set of their task by default;
    anything else needs a calibration set, because ranges from the wrong images
    would quietly ruin accuracy. The result is kept by content (quantized_key):
    the same model, images and tools give the same int8 file for every board of
    one CPU architecture, so an a53 bundle reuses the a72's quantization (its
    warnings are said again) instead of calibrating and validating once more.
    """
    import json
    import shutil
    import warnings

    from edgecnn.errors import EdgecnnWarning
    from edgecnn.paths import atomic_dir, cache_dir
    from edgecnn.quantize import quantize

    src = job.source
    check_calibration(job)
    kept = cache_dir("quantized") / quantized_key(job, backend)
    if (kept / INFO_FILE).is_file():
        info = json.loads((kept / INFO_FILE).read_text())
        job.log(f"quantize: the int8 model made for {info['made_for']} (same model, images and tools), from the cache")
        for msg in info["quantization"]["warnings"]:
            warnings.warn(msg, EdgecnnWarning, stacklevel=2)
        return kept / info["file"], {"quantization": info["quantization"]}
    calib = job.calib if job.calib is not None else f"demo-{src.task}"
    # Its notes are warned as they are made (the CLI prints them then, even when the quantize fails).
    result = quantize(src, calib, work / "quantized", backend=backend, weights=src.weights or "demo",
                      arch=job.target.arch, log=lambda msg: job.log(f"quantize: {msg}"))
    info = {"quantization": {"calibration": result.calibration, "validation": result.validation,
                             "accuracy": result.accuracy, "outputs": result.outputs,
                             "settings": result.settings, "warnings": result.warnings}}
    with atomic_dir(kept) as tmp:
        shutil.copyfile(result.output, tmp / Path(result.output).name)
        (tmp / INFO_FILE).write_text(json.dumps({"file": Path(result.output).name, "made_for": job.target.name,
                                                 **info}, default=str))
    return result.output, info


INFO_FILE = "quantized.json"


def quantized_key(job: Job, backend: str) -> str:
    """The bundle key's parts that decide the int8 file: the board only by its CPU architecture."""
    from edgecnn.compile import bundle_key_parts, cache, compiler

    parts = {k: v for k, v in bundle_key_parts(job, compiler(backend)).items() if k not in ("target", "verify_images")}
    return cache.bundle_key({**parts, "arch": job.target.arch, "for": "quantized"})
