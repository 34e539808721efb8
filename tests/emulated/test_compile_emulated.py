"""A TVM a72 bundle of a tiny model runs under qemu (cortex-a72) and matches the host: compile's own
emulated verification, then the same library run again by the guest and compared with a host build."""

import numpy as np
import pytest

from fixtures import model_files as F

pytestmark = pytest.mark.emulated


@pytest.fixture(scope="module")
def tvm_runtime(emulator):
    from edgecnn.emulate import setup

    setup("a72", with_tvm=True, log=lambda msg: None)


def test_tvm_a72_bundle_runs_under_qemu_and_matches_host(tvm_runtime, tmp_path):
    from edgecnn.compile import compile_model
    from edgecnn.compile import tvm as tvm_backend
    from edgecnn.compile.job import Built
    from edgecnn.targets import get_target

    model = F.classifier(tmp_path / "m")
    calib = F.Q.make_calibration(tmp_path / "calib", 4)
    arm = compile_model(model, "a72", backend="tvm", calib=calib, output_dir=tmp_path / "a72")
    ver = arm.bundle.manifest.verification
    assert ver["status"] == "passed" and ver["mode"] == "emulated" and ver["elf"]["machine"] == "aarch64"
    assert ver["cosine"] > 0.9999
    host = compile_model(model, "host", backend="tvm", calib=calib, output_dir=tmp_path / "host")
    m = arm.bundle.manifest
    built = Built(m.files, m.inputs, m.outputs, m.backend_options, m.tools)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    guest = tvm_backend.emulated_runner(arm.bundle.path, built, get_target("a72"))(x)
    native = tvm_backend.host_runner(host.bundle.path, built)(x)
    assert np.allclose(guest[0], native[0], atol=1e-4)
