"""Emulated ARM: an aarch64 sysroot, qemu-user runs pinned to a target's core, and
deterministic instruction counts from a TCG plugin.

    from edgecnn.emulate import setup, status, run_python, run_tflite, run_bundle_emulated

Nothing here needs Docker or binfmt_misc; the host needs the apt packages in
tools/apt-packages.txt. Heavy imports (numpy for run_tflite and run_bundle_emulated) happen on use.
"""

from __future__ import annotations

from edgecnn.emulate.environment import Piece, require_environment, setup, status
from edgecnn.emulate.run import GuestResult, run_guest, run_python


def run_tflite(*args, **kwargs):
    """See edgecnn.emulate.litert.run_tflite (imported lazily: it needs numpy)."""
    from edgecnn.emulate.litert import run_tflite as _run

    return _run(*args, **kwargs)


def run_bundle_emulated(*args, **kwargs):
    """See edgecnn.emulate.bundle.run_bundle_emulated (imported lazily: it needs numpy)."""
    from edgecnn.emulate.bundle import run_bundle_emulated as _run

    return _run(*args, **kwargs)


__all__ = ["Piece", "GuestResult", "require_environment", "run_bundle_emulated", "run_guest", "run_python",
           "run_tflite", "setup", "status"]
