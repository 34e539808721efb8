"""ncnn bundles under qemu through the board runner's NcnnSession: outputs as on the host, an instruction count
per inference, and fp16 arithmetic only on the core that has it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgecnn.artifacts import load_bundle
from edgecnn.compile import compile_model
from edgecnn.emulate import run_bundle_emulated
from edgecnn.runner.sessions import open_session
from fixtures import colors as QF
from fixtures import model_files as F

pytestmark = pytest.mark.emulated


def inputs(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(QF.color_image(rng, i % 3).astype(np.float32) / 255)[None] for i in range(n)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return F.classifier(tmp_path_factory.mktemp("ncnn-emulated") / "m")


def test_a72_bundle_runs_under_qemu_with_a_count(emulator, model, tmp_path):
    bundle = compile_model(model, "a72", backend="ncnn", output_dir=tmp_path / "a72").bundle
    assert bundle.manifest.backend_options["fp16_arithmetic"] is False
    xs = inputs()
    first = run_bundle_emulated(bundle, xs, "a72")
    second = run_bundle_emulated(bundle, xs, "a72")
    assert first.qemu_cpu == "cortex-a72" and len(first.instructions) == len(xs)
    assert all(n > 10_000 for n in first.instructions)
    # ncnn's counts move by a few dozen instructions from run to run (seen: 63 of 5.1 M for MobileNetV1).
    assert np.allclose(first.instructions, second.instructions, rtol=1e-3, atol=0)
    host = open_session(load_bundle(bundle.path), threads=1)
    for x, got in zip(xs, first.outputs):
        assert len(got) == 1 and got[0].dtype == np.float32 and got[0].shape == (1, 4)
        assert np.allclose(got[0], host(x)[0], atol=1e-5, rtol=0)
        assert got[0].argmax() == host(x)[0].argmax()


def test_fp16_bundle_on_the_a76_and_the_a53(emulator, model, tmp_path):
    """The same fp16 files: the a76 computes in fp16 (ARMv8.2), the a53 in fp32 from fp16 storage."""
    xs = inputs(1)
    runs, host = {}, None
    for target in ("a76", "a53"):
        bundle = compile_model(model, target, backend="ncnn", precision="fp16", output_dir=tmp_path / target).bundle
        runs[target] = run_bundle_emulated(bundle, xs, target)
        if host is None:  # the files are the same for both targets: one host run is the reference
            host = open_session(load_bundle(bundle.path), threads=1)(xs[0])[0]
    for target, run in runs.items():
        got = run.outputs[0][0]
        assert run.instructions[0] > 10_000 and got.shape == host.shape
        assert np.allclose(got, host, atol=1e-2 * max(1.0, float(np.abs(host).max())), rtol=0), target


def test_the_manifests_fp16_arithmetic_switch_reaches_ncnn(emulator, model, tmp_path):
    """The a76 bundle with fp16 arithmetic turned off in its manifest runs other kernels (another count)."""
    bundle = compile_model(model, "a76", backend="ncnn", precision="fp16", output_dir=tmp_path / "on").bundle
    off = tmp_path / "off"
    shutil.copytree(bundle.path, off)
    manifest = json.loads((off / "manifest.json").read_text())
    manifest["backend_options"]["fp16_arithmetic"] = False
    (off / "manifest.json").write_text(json.dumps(manifest))
    xs = inputs(1)
    on_run, off_run = run_bundle_emulated(bundle, xs, "a76"), run_bundle_emulated(off, xs, "a76")
    assert abs(on_run.instructions[0] - off_run.instructions[0]) > 0.1 * on_run.instructions[0]
    assert np.allclose(on_run.outputs[0][0], off_run.outputs[0][0], atol=0.05, rtol=0)
