"""Fixtures shared by every test tier (tests/unit, tests/emulated).

The helpers behind them are the `fixtures` package beside this file; tests import
it directly (`from fixtures import colors`) for the functions they call
themselves. This conftest sits outside any package, so pytest's default import
mode puts tests/ on sys.path before it loads the test modules.
"""

from __future__ import annotations

import pytest

from fixtures import bundles as _bundles
from fixtures import sshd as _sshd


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """{"tflite-fp32", "tflite-int8", "onnx-fp32", "tflite-det"} -> bundle folder; copy one before changing it."""
    return _bundles.build_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A running sshd on 127.0.0.1 that lets the current user in with a fresh key (see fixtures.sshd.start)."""
    with _sshd.start(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A cache of the test's own (tmp_path/cache): no bundle from another test, and no emulator, so aarch64
    TVM checks are skipped; TensorFlow's C++ log quiet. Modules use it with
    `pytestmark = pytest.mark.usefixtures("private_cache")`."""
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
