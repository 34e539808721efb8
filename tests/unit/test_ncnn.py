"""The ncnn backend on the host: Keras, ONNX and TFLite sources through pnnx, the runner's NcnnSession, and ncnn
int8 made by edgecnn.compile.ncnn_int8 (int8 source files refused)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecnn.artifacts import load_bundle
from edgecnn.compile import compile_model, compiler
from edgecnn.errors import DataError, ModelError, ToolError
from edgecnn.runner.sessions import NcnnSession, open_session, predict
from fixtures import colors as QF
from fixtures import model_files as F

PARAM, BIN = "model.ncnn.param", "model.ncnn.bin"


pytestmark = pytest.mark.usefixtures("private_cache")  # tests/conftest.py


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ncnn")
    return {"model": F.classifier(root / "m"), "onnx": F.nchw_classifier(root / "onnx"),
            "tflite": F.tflite_files(root / "tflite"), "root": root}


def images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([QF.color_image(rng, i % 3) for i in range(n)]).astype(np.float32) / 255


def layers(bundle_dir: Path) -> list[str]:
    """The layer types of an ncnn .param (after the magic number and the counts line)."""
    return [line.split()[0] for line in (bundle_dir / PARAM).read_text().splitlines()[2:] if line.strip()]


def test_keras_model_for_the_host(files, tmp_path):
    import keras

    out = tmp_path / "bundle"
    r = compile_model(files["model"], "host", backend="ncnn", output_dir=out)
    b = load_bundle(out)
    m = b.manifest
    assert m.backend == "ncnn" and m.precision == "fp32" and m.files == {"param": PARAM, "bin": BIN}
    assert [(s.name, s.shape, s.dtype, s.layout) for s in m.inputs] == [("in0", [1, 3, 32, 32], "float32", "NCHW")]
    assert [(s.name, s.shape) for s in m.outputs] == [("out0", [1, 4])]
    assert m.backend_options["light_mode"] is True and m.backend_options["threads"] >= 1
    assert not any(m.backend_options[k] for k in ("fp16_storage", "fp16_packed", "fp16_arithmetic"))
    assert {"ncnn", "pnnx", "tf2onnx"} <= set(m.tools) and r.bundle.size_bytes > 0
    ver = m.verification
    assert ver["status"] == "passed" and ver["mode"] == "host" and ver["images"] == 4
    assert ver["max_abs_diff"] < 1e-4 and ver["outputs"][0]["top1_agreement"] == 1.0
    # The runner's session, fed NHWC images as every session is, gives what the Keras model gives.
    session = open_session(b, threads=1)
    assert isinstance(session, NcnnSession) and session.threads == 1
    x = images(5)
    got = predict(session, x)
    want = keras.models.load_model(files["model"])(x, training=False).numpy()
    assert len(got) == 1 and got[0].dtype == np.float32 and got[0].shape == (5, 4)
    assert np.allclose(got[0], want, atol=1e-4) and (got[0].argmax(1) == np.arange(5) % 3).all()
    with pytest.raises(DataError, match="images are given NHWC"):
        session(np.zeros((1, 3, 32, 32), np.float32))


def test_run_bundle_times_the_ncnn_session(files, tmp_path):
    from edgecnn.runner.run import run_bundle

    out = tmp_path / "bundle"
    compile_model(files["model"], "host", backend="ncnn", output_dir=out)
    result = run_bundle(out, runs=5, warmup=1, threads=1)
    assert result["backend"] == "ncnn" and result["threads"] == 1 and result["inputs"] == "synthetic"
    assert result["latency_ms"]["p50"] > 0 and result["fps"] > 0


def test_fp16_options_follow_the_cores_and_the_files_are_portable(files, tmp_path):
    built = {t: load_bundle(compile_model(files["model"], t, backend="ncnn", precision="fp16",
                                          output_dir=tmp_path / t).bundle.path) for t in ("a72", "a76")}
    a72, a76 = (built[t].manifest for t in ("a72", "a76"))
    assert a72.precision == a76.precision == "fp16" and a72.backend_options["threads"] == 4
    # The a76 (ARMv8.2 fp16) may compute in fp16; the a72 stores fp16 but computes in fp32.
    assert a76.backend_options["fp16_arithmetic"] is True and a72.backend_options["fp16_arithmetic"] is False
    assert all(m.backend_options["fp16_storage"] and m.backend_options["fp16_packed"] for m in (a72, a76))
    for name in (PARAM, BIN):
        assert (built["a72"].path / name).read_bytes() == (built["a76"].path / name).read_bytes()
    for m in (a72, a76):
        assert m.verification["status"] == "passed" and m.verification["mode"] == "host"
        assert "portable ncnn file" in m.verification["note"]
    fp32 = compile_model(files["model"], "a72", backend="ncnn", output_dir=tmp_path / "fp32").bundle
    assert (fp32.path / BIN).stat().st_size > (built["a72"].path / BIN).stat().st_size  # fp16 weights


def test_nchw_onnx_file(files, tmp_path):
    from edgecnn.frameworks.ort import predictor

    out = tmp_path / "bundle"
    compile_model(files["onnx"], "host", backend="ncnn", output_dir=out)
    m = load_bundle(out).manifest
    assert m.source["format"] == "onnx" and "tf2onnx" not in m.tools
    assert m.inputs[0].layout == "NCHW" and m.inputs[0].shape == [1, 3, 32, 32]
    assert m.verification["status"] == "passed"
    x = images(3, seed=1)
    got = predict(open_session(load_bundle(out), threads=1), x)[0]
    assert np.allclose(got, predictor(files["onnx"], layout="NCHW")(x)[0], atol=1e-4)


@pytest.mark.parametrize("kind", ["fp32", "fp16"])
def test_tflite_files_keep_their_precision(files, tmp_path, kind):
    out = tmp_path / "bundle"
    r = compile_model(files["tflite"][kind], "a72", backend="ncnn", output_dir=out)
    m = r.bundle.manifest
    # tf2onnx keeps TFLite's NHWC input; pnnx turns the graph's transpose into a Permute layer.
    assert m.precision == kind and m.inputs[0].layout == "NHWC" and m.inputs[0].shape == [1, 32, 32, 3]
    assert "Permute" in layers(out) and m.verification["status"] == "passed"
    if kind == "fp16":
        with pytest.raises(ModelError, match="already fp16"):
            compile_model(files["tflite"][kind], "a72", backend="ncnn", precision="fp32")


def test_zero_padding_without_a_convolution_after_it(tmp_path):
    """A Pad that onnxslim cannot fold into a convolution still becomes an ncnn layer (pnnx needs its mode)."""
    import keras

    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(inp)
    x = keras.layers.MaxPooling2D(3, strides=2)(x)
    x = keras.layers.Conv2D(4, 1)(x)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "m" / "padded.keras"
    path.parent.mkdir()
    model.save(path)
    F.sidecar(path)
    out = tmp_path / "bundle"
    compile_model(path, "host", backend="ncnn", output_dir=out)
    assert "Padding" in layers(out) and "Pad" not in layers(out)
    assert load_bundle(out).manifest.verification["status"] == "passed"


def test_int8_bundle_round_trip(files, tmp_path):
    """int8 from a float Keras model: calibrated on the given images, every conv/fc layer int8, run by the session."""
    calib = QF.make_calibration(tmp_path / "calib", 24)
    out = tmp_path / "bundle"
    r = compile_model(files["model"], "host", backend="ncnn", precision="int8", calib=calib, output_dir=out)
    m = load_bundle(out).manifest
    assert m.precision == "int8" and m.backend_options["int8_inference"] is True
    assert not any(m.backend_options[k] for k in ("fp16_storage", "fp16_packed", "fp16_arithmetic"))
    lines = [ln.split() for ln in (out / PARAM).read_text().splitlines()[2:]]
    quantizable = [ln for ln in lines if ln[0] in ("Convolution", "ConvolutionDepthWise", "InnerProduct")]
    assert [ln[0] for ln in quantizable] == ["Convolution", "InnerProduct"]
    assert all(any(t in ("8=2", "8=102") for t in ln) for ln in quantizable)
    q = m.verification["quantization"]
    assert q["calibration"] == {"name": "calib", "images": 24} and q["settings"]["method"] == "mse"
    assert q["layers"] == {"int8_layers": 2, "requantized": 0, "float_layers": []}
    assert any("24 images" in w for w in q["warnings"])  # fewer than edgecnn recommends, and said so
    assert m.verification["status"] == "passed" and m.verification["outputs"][0]["top1_agreement"] == 1.0
    # The .bin holds both layers' weights as int8 (ncnn's tag 0x000D4B38), then per-channel and input scales.
    from edgecnn.compile import ncnn_int8

    _, weights = ncnn_int8.read_model(out / PARAM, out / BIN)
    assert [w[0].tag for w in weights if w] == [ncnn_int8.TAG_INT8] * 2
    # (the 1x1 convolution has no bias: the colour model's is zero and the conversion drops it)
    assert [[b.count for b in w] for w in weights if w] == [[9, 3, 1], [12, 4, 4, 1]]
    assert r.bundle.manifest.tools["pnnx"] and not r.cached
    session = open_session(load_bundle(out), threads=1)
    assert session._net.opt.use_int8_inference
    got = predict(session, images(6, seed=4))[0]
    assert got.shape == (6, 4) and (got.argmax(1) == np.arange(6) % 3).all()
    again = compile_model(files["model"], "host", backend="ncnn", precision="int8", calib=calib)
    assert again.cached and (again.bundle.path / BIN).read_bytes() == (out / BIN).read_bytes()


def test_int8_from_a_float_tflite_file(files, tmp_path):
    """A .tflite keeps its NHWC input (pnnx's Permute first): calibration feeds images the way the session does."""
    r = compile_model(files["tflite"]["fp32"], "a72", backend="ncnn", precision="int8",
                      calib=QF.make_calibration(tmp_path / "calib", 12))
    m = r.bundle.manifest
    assert m.precision == "int8" and m.inputs[0].layout == "NHWC" and "Permute" in layers(r.bundle.path)
    assert m.verification["status"] == "passed" and m.verification["quantization"]["layers"]["int8_layers"] == 2
    assert m.backend_options["threads"] == 4 and m.backend_options["fp16_arithmetic"] is False


def test_int8_needs_calibration_images_and_refuses_int8_files(files, bundles, tmp_path):
    assert compiler("ncnn").precisions == ("fp32", "fp16", "int8") and compiler("ncnn").supports("int8")
    with pytest.raises(DataError, match=r"int8 needs calibration images for .*--calib"):
        compile_model(files["model"], "a72", backend="ncnn", precision="int8", output_dir=tmp_path / "b")
    assert not (tmp_path / "b").exists()
    with pytest.raises(DataError, match=r"calibration set 'demo-detection' is for detection, but .* classification"):
        compile_model(files["model"], "host", backend="ncnn", precision="int8", calib="demo-detection")
    int8_file = tmp_path / "colors_int8.tflite"  # a full-integer .tflite (tests/conftest.py's bundles)
    int8_file.write_bytes((bundles["tflite-int8"] / "model.tflite").read_bytes())
    F.sidecar(int8_file)
    with pytest.raises(ModelError) as e:
        compile_model(int8_file, "a72", backend="ncnn", precision="int8")
    assert "\n" not in str(e.value)
    assert str(e.value) == ("colors_int8.tflite is an int8 model; pnnx converts float graphs: run it with "
                            "--backend tflite as it is, or give the float model")


def test_missing_pnnx_is_one_tool_error(files, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pnnx" else real(name, *a))
    with pytest.raises(ToolError, match="pnnx, which is not installed.*tools/setup.sh"):
        compile_model(files["model"], "host", backend="ncnn")


def test_session_refuses_a_manifest_naming_another_blob(files, tmp_path):
    out = tmp_path / "bundle"
    compile_model(files["model"], "host", backend="ncnn", output_dir=out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["outputs"][0]["name"] = "logits"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="manifest names blob 'logits'"):
        open_session(load_bundle(out))
    (out / BIN).write_bytes(b"")
    with pytest.raises(ModelError, match="ncnn cannot load"):
        open_session(load_bundle(out))


@pytest.mark.slow
def test_demo_mobilenet_v2_zero_padding_converts(tmp_path):
    """The issue's case: MobileNetV2's ZeroPadding2D, exported NHWC, left Pad layers ncnn refused to load."""
    out = tmp_path / "bundle"
    r = compile_model("mobilenet_v2", "host", backend="ncnn", output_dir=out)
    assert r.bundle.manifest.verification["status"] == "passed"
    kinds = layers(out)
    # Padding and the depthwise batch norms (tf2onnx's Mul/Add on constants) folded into the convolutions:
    # what is left of BinaryOp is the 10 residual additions.
    assert "Pad" not in kinds and "MemoryData" not in kinds and kinds.count("BinaryOp") == 10
    assert kinds.count("ConvolutionDepthWise") == 17
