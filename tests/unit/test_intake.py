"""A user's channels-first ONNX export with free batch/H/W (PyTorch, Paddle) through every stage.

The fixture is the colour classifier rebuilt as an NCHW ONNX graph with symbolic dims
(fixtures.model_files.nchw_classifier): intake binds it to (1, 3, 32, 32) from the sidecar's
size, and compile (onnx, tvm), quantize (onnx QDQ) and bench must each feed it NCHW and score it
like the NHWC Keras model it mirrors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecnn.artifacts import load_bundle
from fixtures import colors, model_files


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    root = tmp_path_factory.mktemp("intake")
    return {"model": model_files.nchw_classifier(root / "m"), "calib": colors.make_calibration(root / "calib", 12),
            "val": colors.make_val(root / "val")}


@pytest.mark.parametrize("backend", ["onnx", "tvm"])
def test_nchw_onnx_compiles_for_the_host_and_verifies(user, tmp_path, backend):
    from edgecnn.compile import compile_model

    r = compile_model(user["model"], "host", backend=backend, calib=user["calib"], output_dir=tmp_path / "b")
    m = r.bundle.manifest
    assert m.inputs[0].layout == "NCHW" and m.inputs[0].shape == [1, 3, 32, 32]
    assert m.verification["status"] == "passed" and m.verification["max_abs_diff"] < 1e-4
    assert m.source["ref"] == str(user["model"])


def test_runner_feeds_nchw_and_scores_like_the_keras_model(user, tmp_path):
    from edgecnn.compile import compile_model
    from edgecnn.runner.run import run_bundle

    from edgecnn.data.formats import load_dataset
    from edgecnn.data.preprocess import Preprocessing

    bundle = compile_model(user["model"], "host", backend="onnx", calib=user["calib"]).bundle
    result = run_bundle(bundle, data=user["val"], runs=3, warmup=1)
    # The same rule in numpy on NHWC images: mean colour -> 10 x identity, the "none" class at -5.
    prep = Preprocessing.from_dict(colors.PREPROCESSING)
    ds = load_dataset(user["val"])
    expected = np.mean([int(np.argmax(np.r_[prep(s.path)[0].mean(axis=(0, 1, 2)) * 10, -5.0])) == s.label
                        for s in ds.samples])
    assert result["images"] == 13 and result["accuracy"]["top1"] == pytest.approx(expected) and expected > 0.9


def test_nchw_onnx_quantizes_with_calibration_in_its_layout(user, tmp_path):
    from edgecnn.quantize import quantize

    r = quantize(user["model"], user["calib"], tmp_path / "q", backend="onnx", val=user["val"])
    assert r.accuracy["fp32"]["top1"] > 0.9 and r.accuracy["int8"]["top1"] >= r.accuracy["fp32"]["top1"] - 0.1
    assert r.outputs[0]["cosine"] > 0.99


def test_bench_takes_the_user_onnx_with_its_own_data(user, tmp_path):
    from edgecnn.bench.pipeline import bench
    from edgecnn.bench.plan import make_plan

    plan = make_plan("host", models=[str(user["model"])], backends=["onnx"], precisions=["fp32", "int8"],
                     data=str(user["val"]), calib=str(user["calib"]), runs=3, warmup=1, threads=1)
    rows = bench(plan)["results"]
    assert {r["precision"] for r in rows} == {"fp32", "int8"}
    for row in rows:
        assert row["accuracy"]["top1"] >= 0.9 and row["latency_ms"]["p50"] > 0
        assert load_bundle(row["bundle"]).manifest.inputs[0].layout == "NCHW"


def test_explicit_size_mismatch_and_ambiguous_layout_are_one_line(user, tmp_path):
    from edgecnn.errors import ModelError
    from edgecnn.source import load_source

    fixed = tmp_path / "fixed"
    fixed.mkdir()
    model = fixed / "fixed.onnx"
    import onnx

    m = onnx.load(str(user["model"]))
    for dim, value in zip(m.graph.input[0].type.tensor_type.shape.dim, (1, 3, 64, 64)):
        dim.ClearField("dim_param")
        dim.dim_value = value
    onnx.save(m, str(model))
    model_files.sidecar(model)  # the sidecar says 32x32, the graph says 64x64
    with pytest.raises(ModelError, match=r"\(1, 3, 64, 64\) \(NCHW\) does not match the preprocessing size 32x32"):
        load_source(model)
    side = json.loads(model.with_suffix(".json").read_text())
    side["preprocessing"]["size"] = [64, 64]
    model.with_suffix(".json").write_text(json.dumps(side))
    src = load_source(model)
    assert src.static_shape == [1, 3, 64, 64] and not any("bound" in n for n in src.notes)
    assert np.isfinite(src.params or 0)


def test_contract_from_options_without_a_sidecar(user, tmp_path, capsys):
    import shutil

    from edgecnn.cli import main

    bare = tmp_path / "bare" / "export.v2.0.onnx"  # dots in the name: the sidecar would be export.v2.0.json
    bare.parent.mkdir()
    shutil.copyfile(user["model"], bare)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(colors.CLASSES) + "\n")
    with pytest.raises(SystemExit) as e:
        main(["compile", str(bare), "--target", "host", "--backend", "onnx", "-o", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "--input-size" in err and "export.v2.0.json" in err, err
    main(["compile", str(bare), "--target", "host", "--backend", "onnx", "--input-size", "32x32",
          "--scale", str(1 / 255), "--classes", str(labels), "-o", str(tmp_path / "b"), "--format", "json"])
    manifest = json.loads(capsys.readouterr().out)["manifest"]
    assert manifest["preprocessing"]["size"] == [32, 32] and manifest["classes"] == colors.CLASSES
    assert manifest["inputs"][0]["layout"] == "NCHW" and manifest["verification"]["status"] == "passed"


def test_mean_std_become_scale_and_offset_and_bad_values_are_refused():
    from edgecnn.contract import from_options
    from edgecnn.errors import DataError

    pre = from_options({"mean": "0.5,0.5,0.5", "std": "0.25", "input_size": "48x192", "bgr": True})["preprocessing"]
    assert pre["size"] == [48, 192] and pre["color"] == "bgr"
    assert np.allclose(np.array(pre["scale"]) * 255, 4.0) and np.allclose(pre["offset"], -2.0)
    for bad, message in [({"mean": "123.7,116.3,103.5"}, "0..1 units"), ({"std": "0"}, "positive"),
                         ({"mean": "0.5", "scale": "0.1"}, "not both"), ({"input_size": "big"}, "HxW"),
                         ({"mean": "1,2"}, "three")]:
        with pytest.raises(DataError, match=message):
            from_options(bad)


def test_onnx_metadata_gives_size_and_class_names(user, tmp_path):
    """An Ultralytics export stores imgsz and names in metadata_props: enough without a sidecar."""
    import onnx

    from edgecnn.source import load_source

    m = onnx.load(str(user["model"]))
    for key, value in (("imgsz", "[32, 32]"), ("names", str(dict(enumerate(colors.CLASSES))))):
        m.metadata_props.add(key=key, value=value)
    path = tmp_path / "meta" / "yolo_like.onnx"
    path.parent.mkdir()
    onnx.save(m, str(path))
    with pytest.warns(UserWarning, match="pixels are scaled by 1/255"):
        src = load_source(path)
    assert src.preprocessing.size == (32, 32) and src.classes == colors.CLASSES


# ------------------------------------------------------------------ every format to every backend, converted


@pytest.fixture(scope="module")
def tflites(tmp_path_factory):
    return model_files.tflite_files(tmp_path_factory.mktemp("tflite"))


def test_pytorch_style_onnx_runs_on_litert_through_onnx2tf(user, tmp_path):
    from edgecnn.compile import compile_model

    m = compile_model(user["model"], "host", backend="tflite", calib=user["calib"]).bundle.manifest
    assert m.inputs[0].layout == "NHWC" and m.inputs[0].shape[1:] == [32, 32, 3]  # onnx2tf writes NHWC
    assert m.verification["status"] == "passed" and m.verification["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tflite_files_pass_through_and_convert_to_onnx(tflites, user, precision):
    from edgecnn.compile import compile_model

    same = compile_model(tflites[precision], "host", backend="tflite", precision=precision).bundle.manifest
    assert same.precision == precision and same.verification["status"] == "passed"
    onnx = compile_model(tflites[precision], "host", backend="onnx", calib=user["calib"]).bundle.manifest
    assert onnx.precision == "fp32" and onnx.verification["status"] == "passed"  # tf2onnx: fp16 -> fp32


def test_fp32_tflite_quantizes_to_int8_with_ai_edge_quantizer(tflites, user, tmp_path):
    from edgecnn.quantize import quantize

    r = quantize(tflites["fp32"], user["calib"], tmp_path / "q", backend="tflite", val=user["val"], per_channel=False)
    from edgecnn.frameworks.litert import precision

    assert precision(r.output) == "int8"  # a tiny model: the int8 file is not smaller, but it is integer
    assert r.accuracy["int8"]["top1"] >= r.accuracy["fp32"]["top1"] - 0.1 and r.outputs[0]["cosine"] > 0.99


def test_float16_tflite_asks_for_its_own_precision_and_int8_file_quantizing_is_refused(tflites, user):
    from edgecnn.compile import compile_model
    from edgecnn.errors import ModelError
    from edgecnn.quantize import quantize

    with pytest.raises(ModelError, match="already fp16; compile it with --precision fp16"):
        compile_model(tflites["fp16"], "host", backend="tflite", precision="fp32")
    assert compile_model(tflites["fp16"], "host", backend="tflite").bundle.manifest.precision == "fp16"  # no flag
    with pytest.raises(ModelError, match="quantize it with --backend onnx"):
        quantize(tflites["fp16"], user["calib"], "/tmp/edgecnn-never-written", backend="tflite")


def test_float16_tflite_quantizes_through_onnx(tflites, user, tmp_path):
    """The path the refusal names: tf2onnx to fp32 ONNX (checked against the file), then QDQ int8."""
    from edgecnn.quantize import quantize

    r = quantize(tflites["fp16"], user["calib"], tmp_path / "q", backend="onnx", val=user["val"])
    assert r.output.suffix == ".onnx" and r.output.is_file()
    assert r.accuracy["fp32"]["top1"] > 0.5 and r.accuracy["drop_points"] is not None
    assert all(o["cosine"] > 0.9 for o in r.outputs)


def test_bench_takes_tflite_and_onnx_files_at_their_own_precision(tflites, user):
    from edgecnn.bench.pipeline import bench
    from edgecnn.bench.plan import make_plan

    plan = make_plan("host", models=[str(tflites["fp16"]), str(user["model"])], data=str(user["val"]),
                     runs=3, warmup=1, threads=1)
    got = {(v.model, v.backend, v.precision) for v in plan.variants}
    # The float16 file passes through at fp16 on LiteRT; the ONNX export goes to onnxruntime as it is.
    assert got == {(str(tflites["fp16"]), "tflite", "fp16"), (str(user["model"]), "onnx", "fp32")}
    rows = bench(plan)["results"]
    for row in rows:
        assert row["latency_ms"]["p50"] > 0 and row["accuracy"]["top1"] > 0.9
        assert row["macs"] and row["macs"] > 0 and row["params"] > 0  # counted from the graph
