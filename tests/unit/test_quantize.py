"""edgecnn.quantize on tiny Keras models: both backends, the accuracy gate, fallback and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import AccuracyError, DataError, EdgecnnError, ModelError
from fixtures import colors as F


pytestmark = pytest.mark.usefixtures("private_cache")  # tests/conftest.py


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantize")
    return {
        "calib": F.make_calibration(root / "calib", 12),
        "val": F.make_val(root / "val"),
        "model": F.save_model(root / "m", F.color_model()),
        "fragile": F.save_model(root / "f", F.color_model(fragile=True), "fragile"),
        "root": root,
    }


def _quantize(*args, **kwargs):
    from edgecnn.quantize import quantize

    with pytest.warns(UserWarning, match="calibrating on 12 images"):
        return quantize(*args, **kwargs)


@pytest.mark.parametrize("backend, suffix", [("tflite", ".tflite"), ("onnx", ".onnx")])
def test_quantize_validates_and_writes(files, tmp_path, backend, suffix):
    out = tmp_path / "out"
    r = _quantize(files["model"], files["calib"], out, backend=backend, val=files["val"])
    assert r.output == out / f"colors-int8{suffix}" and r.output.is_file() and r.float_output.is_file()
    acc = r.accuracy
    assert acc["metric"] == "top1" and acc["fp32"]["top1"] == pytest.approx(12 / 13)  # d_none is never right
    assert abs(acc["drop_points"]) <= 8  # one image of 13 at most
    assert r.calibration == {"name": "calib", "images": 12} and r.validation["images"] == 13
    assert len(r.outputs) == 1 and r.outputs[0]["snr_db"] > 25 and r.outputs[0]["cosine"] > 0.99
    assert r.sensitivity and all(np.isfinite(s["snr_db"]) for s in r.sensitivity)
    assert r.float_layers == [] and any("at least 200" in w for w in r.warnings)
    report = json.loads(r.report.read_text())
    assert report["preprocessing"]["size"] == [32, 32] and report["quantization"]["backend"] == backend
    assert not list(out.glob(".tmp-*"))


def test_tflite_int8_model_is_really_integer(files, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edgecnn.quantize.tflite import float_ops

    r = _quantize(files["model"], files["calib"], tmp_path, val=files["val"], per_channel=False)
    data = r.output.read_bytes()
    it = Interpreter(model_content=data)
    assert it.get_input_details()[0]["dtype"] == np.int8 and it.get_output_details()[0]["dtype"] == np.int8
    assert float_ops(data) == []
    assert float_ops(r.float_output.read_bytes())  # the reference really is float


def test_onnx_is_qdq_with_selected_method(files, tmp_path):
    import onnx

    r = _quantize(files["model"], files["calib"], tmp_path, backend="onnx", method="entropy", val=files["val"])
    ops = {n.op_type for n in onnx.load(str(r.output)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert r.settings["method"] == "entropy"


@pytest.mark.parametrize("backend", ["tflite", "onnx"])
def test_max_drop_gate_raises_with_numbers_and_writes_nothing(files, tmp_path, backend):
    out = tmp_path / "out"
    with pytest.raises(AccuracyError, match=r"drops 61\.54 points: fp32 top-1 92\.31% -> int8 top-1 30\.77%"):
        _quantize(files["fragile"], files["calib"], out, backend=backend, val=files["val"], io="float",
                  max_drop=0.1)
    assert not out.exists()


@pytest.mark.parametrize("backend", ["tflite", "onnx"])
def test_fallback_keeps_sensitive_layers_in_float(files, tmp_path, backend):
    r = _quantize(files["fragile"], files["calib"], tmp_path, backend=backend, val=files["val"], io="float",
                  max_drop=0.1, fallback=True)
    assert r.accuracy["drop_points"] <= 0.1 and r.float_layers
    assert r.accuracy["int8"]["top1"] == r.accuracy["fp32"]["top1"]


def test_no_labelled_data_holds_out_calibration_images(files, tmp_path):
    from edgecnn.quantize import quantize

    with pytest.warns(UserWarning, match="accuracy not measured"):
        r = quantize(files["model"], files["calib"], tmp_path)
    assert r.accuracy["fp32"] is None and r.calibration["images"] == 11 and r.validation["images"] == 1
    with pytest.raises(DataError, match="--max-drop needs labelled validation data"):
        quantize(files["model"], files["calib"], tmp_path / "x", max_drop=1)


def test_validation_must_not_share_calibration_images(files, tmp_path):
    from edgecnn.quantize import quantize

    val = tmp_path / "val"
    calib = F.make_val(val)  # calibrate on the validation images themselves
    with pytest.raises(DataError, match="shares 13 image"):
        quantize(files["model"], calib, tmp_path / "out", val=val)


def _bad_input_cases(files, tmp: Path):
    empty = tmp / "empty"
    empty.mkdir()
    broken = tmp / "broken"
    F.make_calibration(broken, 3)
    (broken / "c001.png").write_bytes(b"not a png at all")
    notmodel = tmp / "notes.keras"
    notmodel.write_text("hello")
    gray = F.save_model(tmp / "g", F.color_model(channels=1), "gray")
    big = F.save_model(tmp / "b", F.color_model(size=64), "big")
    nosidecar = F.save_model(tmp / "n", F.color_model(), "bare", sidecar=False)
    return [
        (files["model"], empty, {}, DataError, "no images"),
        (files["model"], tmp / "missing", {}, DataError, "unknown calibration set"),
        (files["model"], broken, {}, DataError, "cannot decode image .*c001.png"),
        (notmodel, files["calib"], {}, ModelError, "not a .keras zip archive"),
        (tmp / "notes.txt", files["calib"], {}, ModelError, "model file not found"),
        (gray, files["calib"], {}, ModelError, "wants 1 channels"),
        (big, files["calib"], {}, ModelError, "does not match the preprocessing size 32x32"),
        (nosidecar, files["calib"], {}, ModelError, "no preprocessing for bare.keras"),
        (files["model"], files["calib"], {"method": "entropy"}, EdgecnnError, "minmax, percentile only, not entropy"),
        (files["model"], files["calib"], {"backend": "onnx", "io": "int8"}, EdgecnnError, "use --io float"),
        (files["model"], files["calib"], {"fallback": True}, EdgecnnError, "--fallback needs --max-drop"),
        ("mobilenet_v2:alpha=0.1", files["calib"], {}, ModelError, "alpha must be"),
    ]


def test_bad_input_is_one_clear_error_and_writes_nothing(files, tmp_path):
    from edgecnn.quantize import quantize

    for model, calib, kwargs, error, message in _bad_input_cases(files, tmp_path):
        out = tmp_path / "out"
        with pytest.raises(error, match=message) as info:
            quantize(model, calib, out, val=files["val"], **kwargs)
        assert "\n" not in str(info.value)
        assert not out.exists(), (model, calib)


def test_cli_gate_exit_1_one_line(files, tmp_path):
    r = subprocess.run([sys.executable, "-m", "edgecnn", "quantize", str(files["fragile"]), "--calib",
                        str(files["calib"]), "--val", str(files["val"]), "--io", "float", "--max-drop", "0.1",
                        "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: fragile tflite int8 drops 61.54 points") and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def _main(capsys, *args):
    from edgecnn.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_cli_shows_the_calibration_note_when_the_run_then_fails(files, tmp_path, capsys):
    code, err = _main(capsys, "quantize", files["fragile"], "--calib", files["calib"], "--val", files["val"],
                      "--io", "float", "--max-drop", "0.1", "-o", tmp_path / "out")
    lines = [ln for ln in err.splitlines() if ln.startswith(("Warning: ", "Error: "))]
    assert code == 1 and lines[-1].startswith("Error: fragile tflite int8 drops"), err
    assert [ln for ln in lines if ln.startswith("Warning: calibrating on 12 images")] == lines[:1], err
    assert not (tmp_path / "out").exists()


def test_cli_prints_each_note_once_on_success(files, tmp_path, capsys):
    code, err = _main(capsys, "quantize", files["model"], "--calib", files["calib"], "--val", files["val"],
                      "-o", tmp_path / "out")
    assert code == 0, err
    assert err.count("Warning: calibrating on 12 images") == 1, err


def test_val_and_calib_paths_are_refused_before_the_model_is_loaded(files, tmp_path, monkeypatch):
    import edgecnn.source
    from edgecnn.quantize import quantize

    monkeypatch.setattr(edgecnn.source, "load_source", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(DataError, match="^--val: data set not found: .*noval$"):
        quantize(files["model"], files["calib"], tmp_path / "out", val=tmp_path / "noval")
    with pytest.raises(DataError, match="is a file, not a folder of images"):
        quantize(files["model"], files["model"], tmp_path / "out")
    with pytest.raises(EdgecnnError, match="^--val-limit must be 1 or more, got 0$"):
        quantize(files["model"], files["calib"], tmp_path / "out", val_limit=0)


def test_cli_negative_max_drop_is_a_usage_error_exit_2(files, tmp_path, capsys):
    code, err = _main(capsys, "quantize", files["model"], "--calib", files["calib"], "--max-drop", "-1",
                      "-o", tmp_path / "out")
    assert code == 2 and "--max-drop" in err and not (tmp_path / "out").exists(), err


def test_cli_json(files, tmp_path):
    r = subprocess.run([sys.executable, "-m", "edgecnn", "quantize", str(files["model"]), "--calib",
                        str(files["calib"]), "--val", str(files["val"]), "--backend", "onnx", "--per-tensor",
                        "--format", "json", "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["backend"] == "onnx" and data["settings"]["per_channel"] is False
    assert Path(data["output"]).is_file()


def test_cli_choices_match_enums_and_api_is_lazy():
    from edgecnn.cli import cli
    from edgecnn.quantize.backends import BACKENDS, IOType, Method

    params = {p.name: p for p in cli.commands["quantize"].params}
    assert set(params["backend"].type.choices) == set(BACKENDS)
    assert list(params["method"].type.choices) == Method.values()
    assert list(params["io"].type.choices) == IOType.values()
    code = ("import sys, edgecnn; f = edgecnn.quantize; import edgecnn.quantize.validate; "
            "print(callable(f), callable(edgecnn.quantize), 'tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["True", "True", "False"]


def test_fallback_search_doubles_then_bisects_to_the_fewest_layers():
    from edgecnn.quantize import sensitivity as sens

    ranked = sens.rank({f"l{i}": float(i) for i in range(20)})
    tried = []

    def attempt(layers):  # inside the budget from 11 float layers on
        tried.append(len(layers))
        return sens.Attempt(layers, 0.0 if len(layers) >= 11 else 5.0)

    out = sens.search(ranked, attempt, 1.0, lambda a: "x")
    assert len(out.chosen.float_layers) == 11 and out.chosen.float_layers[0] == "l0"
    assert tried == [1, 2, 4, 8, 16, 12, 10, 11]
    with pytest.raises(AccuracyError, match="all 20 measured layers"):
        sens.search(ranked, lambda layers: sens.Attempt(layers, 5.0), 1.0, lambda a: "drops 5")


def test_percentile_ranges_narrow_activations_and_leave_weights(files):
    from tensorflow.lite.python import schema_py_generated as schema

    from edgecnn.quantize import tflite
    from edgecnn.quantize.calibration import build_calibration
    from edgecnn.source import load_source
    from edgecnn.data.calibration import load_calibration_set

    src = load_source(files["model"])
    data = build_calibration(load_calibration_set(files["calib"]), src.preprocessing)
    recorded = tflite.calibrate(src.keras_model, data)
    clipped = tflite.clip_ranges(recorded, data, 99.0)

    def ranges(model):
        m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
        g = m.subgraphs[0]
        return {t.name: (t.quantization.min[0], t.quantization.max[0], m.buffers[t.buffer].data is not None)
                for t in g.tensors if t.quantization is not None and t.quantization.min is not None}

    before, after = ranges(recorded), ranges(clipped)
    assert before.keys() == after.keys()
    narrowed = 0
    for name, (lo, hi, const) in before.items():
        lo2, hi2, _ = after[name]
        if const:
            assert (lo2, hi2) == (lo, hi)  # weights keep their ranges
            continue
        assert min(lo, 0.0) <= lo2 <= 0.0 <= hi2 <= max(hi, 0.0)  # never wider, always holds 0
        narrowed += (lo2, hi2) != (lo, hi)
    assert narrowed >= 2
    model = tflite.quantize(clipped, True, True)
    assert not tflite.float_ops(model)  # still a full-integer model
    with pytest.raises(EdgecnnError, match="percentile must be between 50 and 100"):
        tflite.clip_ranges(recorded, data, 100.0)
