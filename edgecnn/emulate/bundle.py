"""Run any bundle under qemu on a target's core: float outputs and an instruction count per inference.

The guest runs the board runner's own Session (edgecnn.runner.sessions), so an
emulated run exercises the code and the aarch64 wheels the board will use. Each
inference's invoke() is counted on its own (guest/run_bundle.py), after warm-up,
with one thread, no ASLR, a fixed hash seed and fixed file names in a scratch
working directory: the same bundle and inputs give the same counts on every run
and on every machine.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecnn import errors
from edgecnn.artifacts import Bundle, load_bundle
from edgecnn.emulate.environment import require_environment
from edgecnn.emulate.run import GUEST_DIR, failure_message, resolve_target, run_python
from edgecnn.emulate.sysroot import guest_mount
from edgecnn.errors import DataError, ModelError, ToolError
from edgecnn.kinds import Arch, Backend
from edgecnn.targets import Target

GUEST_ERROR = "edgecnn-guest-error:"


@dataclass(frozen=True)
class EmulatedBundleRun:
    """What the emulated inferences of one bundle gave."""

    bundle: str  # the bundle folder's name
    target: str
    qemu_cpu: str
    outputs: list[list[np.ndarray]]  # per input: the model's outputs, float32
    instructions: list[int]  # guest instructions of each counted invoke(), one per input
    seconds: float  # wall-clock of the whole guest run (imports included); not a latency
    threads: int = 1
    # profile runs: per input, each guest thread's statistics (edgecnn.emulate.plugin.Counts.threads)
    profile: list[dict[int, dict[str, int]]] = field(default_factory=list)

    @property
    def mean_instructions(self) -> int:
        """Mean instructions per inference: the bench JSON's `emulated_instructions`."""
        return round(sum(self.instructions) / len(self.instructions))


def run_bundle_emulated(bundle: str | Path | Bundle, inputs: Sequence[np.ndarray], target: str | Target, *,
                        warmup: int = 1, timeout: float = 900, threads: int = 1,
                        plugin_args: Sequence[str] = ()) -> EmulatedBundleRun:
    """Run `bundle` on each preprocessed input batch (NHWC float, or the model's int type) under qemu.

    TVM bundles need the guest's TVM runtime (`edgecnn emulator setup --with-tvm`)
    and aarch64 code. An instruction the target's core lacks fails as
    "illegal instruction on <core> running <bundle>".
    With `plugin_args` (edgecnn.emulate.plugin.profile_args) each input's region also carries every guest
    thread's instruction classes, memory traffic and cache misses; `threads` > 1 runs the runtime's own
    thread pool (the count of record stays the calling thread's).
    """
    t = resolve_target(target)
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    m = b.manifest
    arrays = [np.asarray(x) for x in inputs]
    if not arrays:
        raise DataError("no inputs to run: give at least one preprocessed batch")
    if len(m.inputs) != 1:
        raise ModelError(f"bundle {b.path.name} has {len(m.inputs)} inputs; emulated runs take one-input models")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise DataError(f"warmup must be 0 or more, got {warmup!r}")
    if m.backend == Backend.TVM:
        if m.arch != Arch.AARCH64:
            raise ModelError(f"bundle {b.path.name} holds {m.arch} code; compile it for an aarch64 target "
                             f"to emulate it")
        if require_environment(t).tvm is None:
            raise ToolError("TVM bundles need the guest's TVM runtime: run `edgecnn emulator setup --with-tvm`")
    name = b.path.resolve().name
    with tempfile.TemporaryDirectory(prefix="edgecnn-bundle-") as tmp:
        # Fixed, short names in a scratch cwd: the guest's argv and paths shift its heap
        # layout, and with it the count, when they depend on where the files live.
        work = Path(tmp)
        os.symlink(b.path.resolve(), work / "bundle")
        names = [f"input{i}.npy" for i in range(len(arrays))]
        for file, x in zip(names, arrays):
            np.save(work / file, x, allow_pickle=False)
        args = ["bundle", "outputs.npz", str(warmup), *names]
        env = {"TVM_NUM_THREADS": str(threads)}
        if threads != 1:
            # Idle pool threads sleep (futex) instead of spinning: their counts are then their work.
            env.update(EDGECNN_THREADS=str(threads), OMP_WAIT_POLICY="passive", OMP_NUM_THREADS=str(threads))
        result = run_python(t, GUEST_DIR / "run_bundle.py", args, pythonpath=[guest_mount("src")], count=True,
                            check=False, timeout=timeout, what=name, cwd=work, env=env, plugin_args=plugin_args)
        if result.returncode == 2 and GUEST_ERROR in result.stderr:
            raise _guest_error(result.stderr, b)
        if result.returncode != 0:  # SIGILL, a crash, or a failed script: one line
            raise ToolError(failure_message(result.returncode, result.stderr, t, name) or f"{name} failed")
        regions = result.counts.regions if result.counts else []
        if len(regions) != len(arrays) or (result.counts and result.counts.errors):
            raise ToolError(f"expected {len(arrays)} counted inference(s) from {name}, the plugin saw {regions}")
        with np.load(work / "outputs.npz", allow_pickle=False) as npz:
            count = len(m.outputs)
            outputs = [[npz[f"{i}_{k}"] for k in range(count)] for i in range(len(arrays))]
    profile = result.counts.threads if result.counts and plugin_args else []
    return EmulatedBundleRun(name, t.name, t.qemu_cpu, outputs, list(regions), result.seconds, threads, profile)


def _guest_error(stderr: str, bundle: Bundle) -> errors.EdgecnnError:
    """The guest's "Kind: message" line as the same error class here, with the user's paths."""
    line = stderr.split(GUEST_ERROR, 1)[1].strip().splitlines()[0]
    kind, _, message = line.partition(": ")
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.EdgecnnError)):
        cls = ModelError  # MissingRuntime and other ModelError subclasses
    return cls(message.replace("bundle/", f"{bundle.path}/"))
