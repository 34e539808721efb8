"""The board runner on tiny bundles: sessions per backend, int8 I/O, latency statistics, accuracy,
the `python -m edgecnn.runner` JSON, and one-line errors for broken bundles and missing runtimes."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.artifacts import Backend, TensorSpec, load_bundle
from edgecnn.errors import DataError, ModelError
from edgecnn.runner import sessions
from edgecnn.runner.run import run_bundle
from edgecnn.runner.sessions import SESSIONS, MissingRuntime, open_session, predict
from edgecnn.runner.stats import fps, latency_stats
from edgecnn.targets import host_arch
from fixtures import bundles as BF
from fixtures import colors as QF

ROOT = Path(__file__).resolve().parents[2]
# Imports the runner must never need on a board: a sitecustomize that makes them fail.
BLOCK = """
import sys
BLOCKED = {blocked!r}
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None
sys.meta_path.insert(0, _Blocked())
"""


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    return QF.make_val(tmp_path_factory.mktemp("val"))


def reference(x: np.ndarray) -> np.ndarray:
    """The colour model in numpy: identity 1x1 conv, global average pool, dense (gain 10, bias -5 on d_none)."""
    w = np.zeros((3, 4), np.float32)
    w[:3, :3] = np.eye(3) * 10
    return x.mean(axis=(1, 2)) @ w + np.array([0, 0, 0, -5], np.float32)


def images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([QF.color_image(rng, i % 3) for i in range(n)]).astype(np.float32) / 255


def test_every_backend_has_a_session():
    assert set(SESSIONS) == {b.value for b in Backend}
    assert all(SESSIONS[name].backend == name for name in SESSIONS)


@pytest.mark.parametrize("name", ["tflite-fp32", "onnx-fp32"])
def test_float_sessions_match_the_model(bundles, name):
    session = open_session(load_bundle(bundles[name]), threads=1)
    assert session.threads == 1 and session.backend == name.split("-")[0]
    x = images(3)
    out = predict(session, x)  # a batch of 3: image by image where the batch is fixed at 1
    assert len(out) == 1 and out[0].dtype == np.float32 and out[0].shape == (3, 4)
    assert np.allclose(out[0], reference(x), atol=1e-4)


def test_int8_session_quantizes_input_and_dequantizes_output(bundles):
    b = load_bundle(bundles["tflite-int8"])
    spec = b.manifest.inputs[0]
    assert spec.dtype == "int8" and spec.scale and b.manifest.outputs[0].dtype == "int8"
    session = open_session(b)
    x = images(1)
    y = session(x)[0]
    assert y.dtype == np.float32 and np.allclose(y, reference(x), atol=0.1)
    assert y.argmax() == reference(x).argmax()
    q = np.clip(np.rint(x / spec.scale + spec.zero_point), -128, 127).astype(np.int8)
    assert np.array_equal(session(q)[0], y)  # already-quantized input is taken as it is
    with pytest.raises(DataError, match="got int32, the model takes int8 or float"):
        session(q.astype(np.int32))


def test_wrong_input_shape_is_a_data_error(bundles):
    session = open_session(load_bundle(bundles["onnx-fp32"]))
    wanted = r"input 'input': got shape \(1, 16, 16, 3\), the model takes \(-1, 32, 32, 3\)"
    with pytest.raises(DataError, match=wanted):
        session(np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(DataError, match="takes 1 input"):
        session.feed()


def test_nchw_models_get_nhwc_images_transposed(bundles, tmp_path):
    b = load_bundle(bundles["onnx-fp32"])
    spec = dataclasses.replace(b.manifest.inputs[0], shape=[-1, 3, 32, 32], layout="NCHW")
    s = sessions.Session.__new__(sessions.Session)  # only the conversion: no runtime needed
    assert s._to_model(0, spec, images(2)).shape == (2, 3, 32, 32)
    with pytest.raises(DataError, match=r"got shape \(2, 3, 32, 32\).*\(images are given NHWC\)"):
        s._to_model(0, spec, images(2).transpose(0, 3, 1, 2))


def test_missing_runtime_says_what_to_install(bundles, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(MissingRuntime, match=r"^this bundle needs ai-edge-litert: pip install 'edgecnn\[runner\]'$"):
        open_session(load_bundle(bundles["tflite-fp32"]))


def test_thread_count(bundles):
    b = load_bundle(bundles["tflite-fp32"])
    assert sessions.resolve_threads(b, None) == 1  # the manifest's runtime.threads
    assert sessions.resolve_threads(b, 3) == 3
    for bad in (0, -1, True, 1.5):
        with pytest.raises(DataError, match="threads must be a positive integer"):
            sessions.resolve_threads(b, bad)


def test_latency_statistics():
    stats = latency_stats([1.0, 2.0, 3.0, 4.0, 10.0])
    assert stats == pytest.approx({"mean": 4.0, "p50": 3.0, "p90": 7.6, "p99": 9.76, "std": np.std([1, 2, 3, 4, 10])})
    assert latency_stats([2.5]) == {"mean": 2.5, "p50": 2.5, "p90": 2.5, "p99": 2.5, "std": 0.0}
    assert fps(4.0) == 250.0 and fps(0.0) is None
    for bad in ([], [1.0, float("nan")], [-1.0]):
        with pytest.raises(ValueError):
            latency_stats(bad)


BENCH_KEYS = {"latency_ms", "fps", "load_ms", "first_inference_ms", "peak_rss_mb", "size_bytes", "threads",
              "images", "accuracy", "backend", "precision", "built_for", "machine", "mode", "model"}


def test_run_bundle_without_data(bundles):
    r = run_bundle(bundles["onnx-fp32"], runs=7, warmup=2, threads=1)
    assert BENCH_KEYS <= set(r) and r["mode"] == "native" and r["runs"] == 7
    assert set(r["latency_ms"]) == {"mean", "p50", "p90", "p99", "std"}
    assert r["fps"] == pytest.approx(1000 / r["latency_ms"]["p50"])  # agrees with the p50 column
    assert r["fps_mean"] == pytest.approx(1000 / r["latency_ms"]["mean"])
    assert r["inputs"] == "synthetic" and r["machine"]["cores"] >= 1
    # built for an a72, run here: the result names both, and never calls this machine the a72
    assert r["built_for"] == "a72" and r["machine"]["arch"] == platform.machine() and "target" not in r
    assert r["load_ms"] > 0 and r["first_inference_ms"] > 0 and r["peak_rss_mb"] > 10
    assert r["size_bytes"] == (bundles["onnx-fp32"] / "model.onnx").stat().st_size
    assert r["images"] is None and r["accuracy"] is None and r["threads"] == 1
    json.dumps(r, allow_nan=False)
    with pytest.raises(DataError, match="runs must be an integer >= 1"):
        run_bundle(bundles["onnx-fp32"], runs=0)


def test_run_bundle_scores_a_data_set(bundles, val):
    r = run_bundle(bundles["tflite-int8"], data=val, runs=3, warmup=0)
    assert r["images"] == 13 and r["accuracy"]["metric"] == "top1"
    assert r["accuracy"]["top1"] == pytest.approx(12 / 13)  # d_none (no dominant colour) is never top-1
    assert len(r["predictions"]) == 13 and r["predictions"][0] == {"image": "v000.png", "top5": [0, 1, 2, 3]}
    assert run_bundle(bundles["tflite-fp32"], data=val, limit=4, runs=1)["images"] == 4


def test_detection_scores_coco_map_or_returns_detections(bundles, tmp_path, monkeypatch):
    coco = BF.make_detection_set(tmp_path / "det")
    r = run_bundle(bundles["tflite-det"], data=coco, runs=1, warmup=0)
    assert r["accuracy"] == {"metric": "map50_95", "map50_95": 1.0, "map50": 1.0}
    assert {"image_id", "category_id", "bbox", "score"} == set(r["predictions"][0])
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # a board without faster-coco-eval
    r = run_bundle(bundles["tflite-det"], data=coco, runs=1, warmup=0)
    assert r["accuracy"] is None and len(r["predictions"]) >= 4


def test_data_set_classes_are_matched_by_name(bundles, val, tmp_path):
    subset = tmp_path / "val"
    for name in ("c_blue", "a_red"):  # fewer classes than the model: labels still map by name
        shutil.copytree(val / name, subset / name)
    assert run_bundle(bundles["tflite-fp32"], data=subset, runs=1)["accuracy"]["top1"] == 1.0
    (subset / "zebra").mkdir()
    shutil.copy(next((val / "a_red").iterdir()), subset / "zebra" / "z.png")
    with pytest.raises(DataError, match="zebra are not among the model's"):
        run_bundle(bundles["tflite-fp32"], data=subset, runs=1)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgecnn.runner", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_cli_prints_one_json_object_without_tensorflow(bundles, val, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK.format(blocked={"tensorflow", "keras", "tvm", "click",
                                                                      "rich", "tf2onnx", "onnx"}))
    done = _cli(str(bundles["tflite-fp32"]), "--data", str(val), "--runs", "3", "--warmup", "1", "--threads", "1",
                env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r["backend"] == "tflite" and r["threads"] == 1 and r["images"] == 13 and r["runs"] == 3


def _broken(bundles, tmp_path, what: str) -> Path:
    b = tmp_path / what
    shutil.copytree(bundles["tflite-fp32"], b)
    if what == "no-manifest":
        (b / "manifest.json").unlink()
    elif what == "bad-json":
        (b / "manifest.json").write_text("{not json")
    elif what == "bad-field":
        data = json.loads((b / "manifest.json").read_text())
        data["backend"] = "caffe"
        (b / "manifest.json").write_text(json.dumps(data))
    elif what in ("bad-tensor", "bad-shape", "bad-file-name"):
        data = json.loads((b / "manifest.json").read_text())
        if what == "bad-tensor":
            data["inputs"] = ["image"]
        elif what == "bad-shape":
            data["outputs"][0]["shape"] = [1, "four"]
        else:
            data["files"]["model"] = 7
        (b / "manifest.json").write_text(json.dumps(data))
    elif what == "bad-model":
        (b / "model.tflite").write_bytes(b"\x00garbage" * 8)
    elif what == "no-model":
        (b / "model.tflite").unlink()
    return b


@pytest.mark.parametrize("what, message", [
    ("no-manifest", r"is not a bundle: no manifest.json \(make one with `edgecnn compile`\)"),
    ("bad-json", r"manifest.json: not valid JSON"),
    ("bad-field", r"manifest: backend must be one of tflite, onnx, tvm, ncnn, got 'caffe'"),
    ("bad-tensor", r"manifest: inputs\[0\] must be an object, got string \"image\""),
    ("bad-shape", r"manifest: outputs\[0\].shape must be a list of integers"),
    ("bad-file-name", r"manifest: files.model must be a string, got number 7"),
    ("bad-model", r"LiteRT cannot load .*model.tflite: "),
    ("no-model", r"model file 'model.tflite' is missing"),
])
def test_cli_bad_bundle_is_one_error_line(bundles, tmp_path, what, message):
    done = _cli(str(_broken(bundles, tmp_path, what)))
    assert done.returncode == 1 and done.stdout == ""
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(message, errors[0]), errors[0]


def test_cli_bad_arguments(bundles, tmp_path):
    done = _cli(str(bundles["tflite-fp32"]), "--data", str(tmp_path / "none"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"Error: data set not found: {tmp_path / 'none'}"
    done = _cli(str(bundles["tflite-fp32"]), "--runs", "x")
    assert done.returncode == 2 and "expected an integer" in done.stderr


def test_tvm_session_on_the_host(tmp_path):
    """A Relax library for this machine runs through the VM; an aarch64 one is refused here."""
    import tvm
    from tvm.script import relax as R

    @tvm.script.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 32, 32, 3), "float32")):
            with R.dataflow():
                y = R.nn.relu(R.mean(x, axis=[1, 2]))
                R.output(y)
            return y

    lib = tmp_path / "model.so"
    tvm.compile(Module, tvm.target.Target({"kind": "llvm"})).export_library(str(lib))
    inputs = [TensorSpec("x", [1, 32, 32, 3], "float32")]
    outputs = [TensorSpec("y", [1, 3], "float32", "")]
    b = BF.write_bundle(tmp_path / "tvm", "model.so", lib.read_bytes(), "tvm", "fp32", inputs, outputs,
                        backend_options={"device": "cpu", "entry": "main", "threads": 1}, arch=host_arch())
    x = images(1)
    assert np.allclose(open_session(load_bundle(b))(x)[0], np.maximum(x.mean(axis=(1, 2)), 0), atol=1e-6)
    assert run_bundle(b, runs=2, warmup=0)["backend"] == "tvm"
    arm = BF.write_bundle(tmp_path / "tvm-arm", "model.so", b"\x7fELF", "tvm", "fp32", inputs, outputs,
                          arch="aarch64" if host_arch() != "aarch64" else "x86_64")
    with pytest.raises(ModelError, match="code and this machine is .*: run it on the board, or emulated"):
        open_session(load_bundle(arm))


def test_emulated_illegal_instruction_names_the_bundle(bundles, monkeypatch):
    """No qemu needed: the guest run is replaced by what qemu reports on SIGILL."""
    from edgecnn.emulate import bundle as emulated
    from edgecnn.emulate.run import GuestResult

    seen = {}

    def sigill(target, script, args, **kwargs):
        seen.update(kwargs, script=script, args=args)
        return GuestResult(-4, "", "qemu: uncaught target signal 4 (Illegal instruction) - core dumped\n", 0.1)

    monkeypatch.setattr(emulated, "run_python", sigill)
    with pytest.raises(emulated.ToolError, match=r"^illegal instruction on cortex-a53 running colors-fp32-tflite$"):
        emulated.run_bundle_emulated(bundles["tflite-fp32"], images(1), "a53")
    # fixed names in the scratch cwd, edgecnn's package on the guest's PYTHONPATH, one thread
    assert seen["args"] == ["bundle", "outputs.npz", "1", "input0.npy"] and seen["count"] is True
    assert seen["pythonpath"] == ["/edgecnn/src"] and seen["script"].name == "run_bundle.py"
