"""Run a .tflite model under qemu with a target's core: outputs and instruction count.

The count covers one `invoke()` of the calling thread, after warm-up, with one
thread, no ASLR and a fixed hash seed, so the same model and input give the same
number on every run: the CI performance signal in emulated mode.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecnn.emulate.run import GUEST_DIR, failure_message, resolve_target, run_python
from edgecnn.errors import DataError, ModelError, ToolError
from edgecnn.targets import Target


@dataclass(frozen=True)
class EmulatedInference:
    """What one emulated inference gave."""

    target: str
    qemu_cpu: str
    outputs: list[np.ndarray]
    instructions: int  # guest instructions of the counted invoke()
    seconds: float  # wall-clock of the whole guest run (imports included); not a latency


def run_tflite(model: str | Path, inputs: str | Path | Sequence[str | Path], target: str | Target, *,
               warmup: int = 1, timeout: float = 900) -> EmulatedInference:
    """Run `model` on the input .npy file(s) (one per model input, in order) under qemu."""
    t = resolve_target(target)
    model = Path(model)
    if not model.is_file():
        raise ModelError(f"model file not found: {model}")
    if model.suffix != ".tflite":
        raise ModelError(f"{model.name}: expected a .tflite file")
    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    for p in paths:
        if not p.is_file():
            raise DataError(f"input file not found: {p}")
    if warmup < 0:
        raise DataError(f"warmup must be 0 or more, got {warmup}")
    with tempfile.TemporaryDirectory(prefix="edgecnn-tflite-") as tmp:
        # The guest's argv shifts its stack and heap layout, and with them the count
        # by a few instructions; fixed names in a scratch working directory keep the
        # count independent of where the model and inputs live.
        work = Path(tmp)
        os.symlink(model.resolve(), work / "model.tflite")
        names = [f"input{i}.npy" for i in range(len(paths))]
        for name, p in zip(names, paths):
            os.symlink(p.resolve(), work / name)
        out = work / "outputs.npz"
        args = ["model.tflite", out.name, str(warmup), *names]
        result = run_python(t, GUEST_DIR / "run_tflite.py", args, count=True, check=False, timeout=timeout,
                            what=model.name, cwd=work)
        if result.returncode == 2 and "edgecnn-guest-error:" in result.stderr:
            message = result.stderr.split("edgecnn-guest-error:", 1)[1].strip().splitlines()[0]
            for name, p in zip(names, paths):
                message = message.replace(name, str(p))  # the user's file, not the staged name
            raise DataError(message)
        if result.returncode != 0:  # SIGILL, a crash, or a failed script: one line
            raise ToolError(failure_message(result.returncode, result.stderr, t, model.name) or "failed")
        if result.counts is None or len(result.counts.regions) != 1 or result.counts.errors:
            raise ToolError(f"expected one counted region from {model.name}, the plugin saw "
                            f"{result.counts.regions if result.counts else 'nothing'}")
        with np.load(out, allow_pickle=False) as npz:
            outputs = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    return EmulatedInference(t.name, t.qemu_cpu, outputs, result.counts.regions[0], result.seconds)
