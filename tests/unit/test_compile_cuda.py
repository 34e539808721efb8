"""TVM CUDA bundles built without a GPU (the Jetson path): real NVRTC, real cubins, clear errors.

Running the kernels needs an NVIDIA GPU; tools/gpu_check.py does that on one. Here:
the bundle's parts (aarch64 host library, cubin for the board's sm_xx, manifest),
the runner's hand-over of the bundled cubin to TVM, and the errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecnn.artifacts import load_bundle, text_sha256
from edgecnn.compile import compile_model
from edgecnn.compile.verify import check_elf, cubin_arch, elf_machine
from edgecnn.errors import ModelError, ToolError
from fixtures import model_files as F

ROOT = Path(__file__).resolve().parents[2]
GPU_PC = ROOT / "tools" / "gpu_check" / "x86-h100.toml"


pytestmark = pytest.mark.usefixtures("private_cache")  # tests/conftest.py


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda")
    return {"model": F.classifier(root / "m"), "calib": F.Q.make_calibration(root / "calib", 12)}


@pytest.mark.parametrize("target, sm", [("jetson-orin", "sm_87"), ("jetson-nano", "sm_53")])
def test_jetson_bundle_holds_aarch64_host_code_and_a_cubin_for_the_board(files, tmp_path, target, sm):
    out = tmp_path / target
    compile_model(files["model"], target, backend="tvm", calib=files["calib"], output_dir=out)
    b = load_bundle(out)
    m = b.manifest
    assert m.files == {"model": "model.so", "kernels": "kernels.cubin"}
    assert elf_machine(b.file("model")) == "aarch64" and cubin_arch(b.file("kernels")) == sm
    k = m.backend_options["cuda_kernels"]
    assert m.backend_options["device"] == "cuda" and k["arch"] == sm and len(k["source_sha256"]) == 64
    assert m.tools["cuda (nvrtc)"] or m.tools.get("cuda (nvcc)")
    assert m.verification["elf"]["gpu"] == {"kernels.cubin": sm}
    assert m.verification["status"] == "skipped" and "GPU" in m.verification["reason"]  # never claimed


def test_cubin_for_another_gpu_is_refused(files, tmp_path):
    out = tmp_path / "orin"
    compile_model(files["model"], "jetson-orin", backend="tvm", calib=files["calib"], output_dir=out)
    m = load_bundle(out).manifest
    assert check_elf(out, m.files, "aarch64", "sm_87")["gpu"] == {"kernels.cubin": "sm_87"}
    with pytest.raises(ModelError, match="sm_87.*GPU is sm_53"):
        check_elf(out, m.files, "aarch64", "sm_53")
    with pytest.raises(ModelError, match="not a CUDA binary"):
        cubin_arch(out / "model.so")


def test_runner_hands_tvm_the_bundled_cubin_only_for_its_source(files, tmp_path):
    import tvm_ffi

    from edgecnn.runner.sessions import _serving_cuda_kernels

    out = tmp_path / "orin"
    compile_model(files["model"], "jetson-orin", backend="tvm", calib=files["calib"], output_dir=out)
    b = load_bundle(out)
    name = "tvm_callback_cuda_compile"
    original = tvm_ffi.get_global_func(name, allow_missing=True)
    tvm_ffi.register_global_func(name, lambda *_: b"before", override=True)
    source = "// the CUDA source model.so holds"
    with _serving_cuda_kernels(b, {**b.manifest.backend_options["cuda_kernels"], "source_sha256": text_sha256(source)}):
        served = tvm_ffi.get_global_func(name)
        assert bytes(served(source)) == b.file("kernels").read_bytes()
        with pytest.raises(Exception, match="was not built from"):
            served(source + " changed")
    assert bytes(tvm_ffi.get_global_func(name)(source)) == b"before"  # put back once the library is loaded
    if original is not None:
        tvm_ffi.register_global_func(name, original, override=True)


def test_cuda_bundle_on_a_machine_without_gpu_is_one_clear_error(files, tmp_path):
    from edgecnn.runner.sessions import open_session

    out = tmp_path / "gpu-pc"
    compile_model(files["model"], str(GPU_PC), backend="tvm", calib=files["calib"], output_dir=out)
    b = load_bundle(out)
    assert elf_machine(b.file("model")) == "x86_64" and cubin_arch(b.file("kernels")) == "sm_90"
    with pytest.raises(ModelError, match="CUDA"):  # no libcuda here: TVM's CUDA runtime or the GPU is missing
        open_session(b)(np.zeros((1, 32, 32, 3), np.float32))


def test_no_cuda_compiler_is_refused_before_any_work(files, tmp_path, monkeypatch):
    from edgecnn.compile import cuda

    monkeypatch.setattr(cuda, "_toolkit", lambda: None)
    monkeypatch.setattr(cuda, "_nvrtc_version", lambda: None)
    with pytest.raises(ToolError, match=r"jetson-orin builds CUDA kernels for sm_87.*edgecnn\[jetson\]"):
        compile_model(files["model"], "jetson-orin", backend="tvm", calib=files["calib"], output_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_toolchain_choice_follows_the_gpu_generation(monkeypatch):
    from edgecnn.compile import cuda

    toolkit = cuda.Toolchain("nvcc", Path("/opt/cuda-13"), "13.0")
    monkeypatch.setattr(cuda, "_toolkit", lambda: toolkit)
    monkeypatch.setattr(cuda, "_nvrtc_version", lambda: "12.9")
    assert cuda.find_toolchain("sm_87") == toolkit  # a toolkit that can build it wins
    assert cuda.find_toolchain("sm_53").mode == "nvrtc"  # CUDA 13 cannot build the Nano's Maxwell GPU
    monkeypatch.setattr(cuda, "_nvrtc_version", lambda: None)
    with pytest.raises(ToolError, match=r"no CUDA compiler here builds sm_53 \(nvcc 13.0"):
        cuda.find_toolchain("sm_53")
