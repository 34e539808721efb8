"""Emulated tier: real qemu-aarch64 runs. The session fixture makes (or reuses) the
environment through the same API as `edgecnn emulator setup`."""

import pytest

from edgecnn.errors import ToolError


@pytest.fixture(scope="session")
def emulator():
    """The ready environment (sysroot, aarch64 wheels, plugin, views); fails with the set-up's message."""
    from edgecnn.emulate import setup
    from edgecnn.emulate.environment import is_ready

    try:
        pieces = setup(log=lambda msg: None)
    except ToolError as e:
        pytest.fail(f"emulator set-up failed: {e}", pytrace=False)
    if not is_ready(pieces):
        missing = ", ".join(p.name for p in pieces if p.required and not p.ok)
        pytest.fail(f"emulator set-up left pieces missing: {missing}", pytrace=False)
    return pieces
