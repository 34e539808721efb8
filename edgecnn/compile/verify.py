"""Check a freshly built bundle before it is called one: ELF machine, then outputs against the source.

- Every shared library in the bundle must be built for the target's machine;
  the ELF header is read here (e_machine 183 = AArch64, 62 = x86-64), so a
  mis-configured cross compiler is caught on the PC, not on the board.
- Outputs of the bundle on a few real images, preprocessed with the model's
  own preprocessing, are compared with the source model (Keras, ONNX or TFLite)
  on the same images: max |difference| and cosine similarity per output
  (edgecnn.runner.metrics.output_agreement; the limits are this module's).
  int8 and fp16 bundles get looser limits (int8: cosine only, after
  dequantization). Past the limit: AccuracyError.

Where the comparison runs is recorded, never assumed: "host" (host-arch files,
and .tflite/.onnx, which are the same bytes on every machine), "emulated"
(aarch64 TVM libraries under qemu with the target's core), or "skipped" with
the reason.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgecnn.errors import AccuracyError, ModelError
from edgecnn.runner.metrics import output_agreement

Predict = Callable[[np.ndarray], list[np.ndarray]]
ELF_MACHINES = {183: "aarch64", 62: "x86_64", 40: "arm", 3: "x86", 190: "cuda"}
HOST_IMAGES = 4
EMULATED_IMAGES = 2  # TVM under qemu: about a second an image for MobileNetV2-0.35

# (max |diff| relative to max |reference|, minimum cosine); int8 has no diff limit: its error is by design.
# int8 was already gated on accuracy by edgecnn.quantize; here the bundled bytes must agree with the float
# model's decisions: cosine of the raw outputs plus, for classifiers, top-1 agreement.
TOLERANCE = {"fp32": (1e-3, 0.9999), "fp16": (5e-2, 0.999), "int8": (None, 0.9)}
INT8_MIN_TOP1_AGREEMENT = 0.75


def elf_machine(path: Path) -> str:
    """The machine a shared library is built for, from its ELF header; ModelError if it is not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise ModelError(f"{path.name} is not an ELF shared library")
    endian = "<" if head[5] == 1 else ">"
    (machine,) = struct.unpack(endian + "H", head[18:20])
    return ELF_MACHINES.get(machine, f"e_machine {machine}")


def cubin_arch(path: Path) -> str:
    """The sm_xx a CUDA ELF (cubin) is built for; ModelError if it is not one.

    The SM number sits in e_flags: bits 0-7 up to ELF ABI version 7 (CUDA 12),
    bits 8-15 from version 8 (CUDA 13).
    """
    if elf_machine(path) != "cuda":
        raise ModelError(f"{path.name} is not a CUDA binary (cubin)")
    with open(path, "rb") as f:
        head = f.read(52)
    (flags,) = struct.unpack("<I", head[48:52])
    sm = (flags >> 8) & 0xFF if head[8] >= 8 else flags & 0xFF
    return f"sm_{sm}"


def check_elf(folder: Path, files: dict[str, str], arch: str, gpu_arch: str | None = None) -> dict | None:
    """ModelError when a library in the bundle is for another machine (or a cubin for another GPU).

    Returns a summary, or None when the bundle has no native code.
    """
    libs = {role: name for role, name in files.items() if name.endswith(".so")}
    cubins = {role: name for role, name in files.items() if name.endswith(".cubin")}
    if not libs and not cubins:
        return None
    for role, name in libs.items():
        machine = elf_machine(folder / name)
        if machine != arch:
            raise ModelError(f"{name} is built for {machine}, but the target runs {arch}: check the "
                             "cross compiler and the target's tvm table")
    summary: dict = {"machine": arch, "files": sorted(libs.values())}
    for role, name in cubins.items():
        sm = cubin_arch(folder / name)
        if gpu_arch is not None and sm != gpu_arch:
            raise ModelError(f"{name} holds kernels for {sm}, but the target's GPU is {gpu_arch}")
        summary.setdefault("gpu", {})[name] = sm
    return summary


def verification_images(source, calib, count: int) -> tuple[str, np.ndarray]:
    """A few real images in the model's preprocessing: the calibration set given, else the demo set of its task."""
    from edgecnn.data.calibration import load_calibration_set

    cset = load_calibration_set(calib if calib is not None else demo_image_set(source.task))
    paths = cset.images[:count]
    images = np.concatenate([source.preprocessing(p)[0] for p in paths]).astype(np.float32)
    return cset.name, images


def demo_image_set(task: str) -> str:
    """The demo calibration set whose images stand in for a model's own when none are given: its task's,
    and the detection scenes (photos-like, many objects) for models of any other task."""
    return "demo-classification" if task == "classification" else "demo-detection"


def source_predictor(source) -> Predict:
    """The source model itself, one image at a time, float outputs."""
    if source.kind == "keras":
        model = source.keras_model

        def run(batch: np.ndarray) -> list[np.ndarray]:
            outs = model(batch, training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            return [np.asarray(o, np.float32) for o in outs]

        return run
    if source.kind == "onnx":
        from edgecnn.frameworks.ort import predictor

        # The user's own file, not the intake copy the bundle was built from: that is what is verified.
        return predictor(source.file or source.path, layout=source.layout)
    from edgecnn.frameworks.litert import predictor

    return predictor(source.path.read_bytes())


def compare(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray], names: Sequence[str],
            precision: str, task: str) -> dict:
    """Per-output figures and the verdict; the worst output decides."""
    if len(reference) != len(outputs):
        raise AccuracyError(f"the bundle gives {len(outputs)} outputs, the source model {len(reference)}")
    rel_limit, cos_limit = TOLERANCE[precision]
    per_output, ok = [], True
    for name, ref, out in zip(names, reference, outputs):
        ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
        out = np.asarray(out, np.float64).reshape(len(out), -1)
        if ref.shape != out.shape:
            raise AccuracyError(f"output {name}: the bundle gives shape {out.shape[1:]}, the source {ref.shape[1:]}")
        fig = output_agreement(ref, out)
        item = {"name": name, "max_abs_diff": float(f"{fig.max_abs_diff:.3g}"), "cosine": round(fig.cosine, 6)}
        ok &= fig.cosine >= cos_limit and (rel_limit is None or fig.max_abs_diff <= rel_limit * fig.scale)
        if task == "classification":
            item["top1_agreement"] = round(float(np.mean(ref.argmax(1) == out.argmax(1))), 4)
            ok &= precision != "int8" or item["top1_agreement"] >= INT8_MIN_TOP1_AGREEMENT
        per_output.append(item)
    return {"passed": bool(ok), "outputs": per_output,
            "max_abs_diff": max(o["max_abs_diff"] for o in per_output),
            "cosine": min(o["cosine"] for o in per_output),
            "tolerance": {"max_abs_diff_relative": rel_limit, "min_cosine": cos_limit,
                          **({"min_top1_agreement": INT8_MIN_TOP1_AGREEMENT} if precision == "int8" else {})}}


def verify_outputs(job, built, run: Callable[[np.ndarray], list[np.ndarray]], mode: str, count: int) -> dict:
    """Run the bundle (through `run`) and the reference on the same images; AccuracyError past the limits."""
    image_set, images = verification_images(job.source, job.calib, count)
    reference = built.reference or source_predictor(job.source)
    ref_outs = reference(images)
    outs = run(images)
    figures = compare(ref_outs, outs, [o.name for o in built.outputs], job.precision, job.source.task)
    figures.update(status="passed" if figures["passed"] else "failed", mode=mode, images=len(images),
                   image_set=image_set)
    if not figures["passed"]:
        raise AccuracyError(f"the {job.backend} {job.precision} bundle does not match the source model on "
                            f"{len(images)} images ({mode}): max |diff| {figures['max_abs_diff']:g}, cosine "
                            f"{figures['cosine']:.5f} (limits {figures['tolerance']})")
    del figures["passed"]
    return figures


def skipped(reason: str) -> dict:
    """The record of a verification that did not run: never a pass."""
    return {"status": "skipped", "reason": reason}


def emulator_ready(target) -> str | None:
    """None when TVM libraries for this target can run under qemu here, else why not."""
    from edgecnn.emulate.environment import require_environment
    from edgecnn.errors import EdgecnnError

    if not target.can_emulate:
        return f"target {target.name} cannot be emulated: {target.emulation_problem()}"
    try:
        ready = require_environment(target)
    except EdgecnnError as e:
        return f"emulator not ready: {e}"
    if ready.tvm is None:
        return "emulator has no TVM runtime: run `edgecnn emulator setup --with-tvm`"
    return None
