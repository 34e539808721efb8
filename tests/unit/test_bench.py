"""`edgecnn bench`: planning, a real native run on this machine, the regression gate, and the SSH mode
against a loopback sshd. The demo MobileNetV1 (13 M MACs) keeps the real runs to seconds."""

from __future__ import annotations

import json
import sys

import pytest

from edgecnn.bench.plan import Mode, make_plan, parse_prune
from edgecnn.cli import main
from edgecnn.errors import DataError, TargetError


def _cli(capsys, *args):
    """Exit code (0 on success), stdout, and stderr without the progress bar's blank lines."""
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err.strip()


def test_default_plan_is_the_demo_models_on_the_preferred_backends():
    plan = make_plan("a72")
    assert plan.mode is Mode.EMULATED  # this x86 machine cannot run aarch64 code natively
    got = {(v.model, v.backend, v.precision) for v in plan.variants}
    assert got == {(m, "tflite", p) for m in ("yolo_lite", "mobilenet_v2", "mobilenet_v1") for p in ("fp32", "int8")}
    assert make_plan("host").mode is Mode.NATIVE
    assert make_plan("host", device="pi@board").mode is Mode.SSH


def test_every_combination_and_no_fake_tvm_int8():
    plan = make_plan("a72", models=["mobilenet_v2"], backends=["tflite", "tvm"], precisions=["fp32", "int8"],
                     prunes=["none", "channel:0.3"])
    got = {(v.backend, v.precision, v.prune) for v in plan.variants}
    assert len(plan.variants) == len(got) == 6
    assert got == {(b, p, pr) for pr in (None, "channel:0.3") for b, p in
                   (("tflite", "fp32"), ("tflite", "int8"), ("tvm", "fp32"))}
    assert any("tvm int8 left out" in n for n in plan.notes)


@pytest.mark.parametrize("kwargs, message", [
    ({"precisions": ["int4"]}, "unknown precision 'int4'"),
    ({"backends": ["tensorrt"]}, "cannot use backend 'tensorrt'"),
    ({"device": "pi@x", "emulate": True}, "exclude each other"),
    ({"prunes": ["channel:1.5"]}, "between 0 and 1"),
    ({"prunes": ["random:0.3"]}, "expected channel:R"),
    ({"limit": 0}, "--limit must be 1 or more"),
    ({"weights": "my.weights.h5", "precisions": ["int8"]}, "needs its own calibration images"),
    ({"ssh_options": ("-i", "k")}, "only with --device"),
    ({"device": "pi@:99999"}, r"--device 'pi@:99999' is not user@host\[:port\]"),
    ({"device": "pi@board:0"}, r"--device 'pi@board:0' is not user@host\[:port\].*1-65535"),
    ({"data": "/nonexistent/val"}, "--data: data set not found: /nonexistent/val"),
    ({"precisions": ["int8"], "calib": "/nonexistent/calib"}, "unknown calibration set '/nonexistent/calib'"),
    ({"backends": ["tvm"], "tune": 100}, "--tune needs --target host: .* a72 is not this machine"),
    ({"backends": ["tflite"], "tune": 100}, "--tune applies to the tvm backend"),
])
def test_plan_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        make_plan("a72", **kwargs)


def test_data_that_is_not_a_data_set_is_refused_by_the_plan(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a data set\n")
    with pytest.raises(DataError, match=r"--data: .*notes.txt: not a data set"):
        make_plan("host", models=["mobilenet_v1"], data=str(notes))


def test_unknown_model_name_is_refused_by_the_plan():
    from edgecnn.errors import ModelError

    with pytest.raises(ModelError, match="unknown model 'resnet50'; known models: .*mobilenet_v2"):
        make_plan("host", models=["resnet50"])


@pytest.mark.parametrize("option", ["--limit", "--runs", "--warmup", "--threads", "--max-map-drop",
                                    "--max-latency-increase"])
def test_out_of_range_numbers_are_usage_errors_exit_2(capsys, option):
    value = "-1" if option != "--max-latency-increase" else "-5%"
    code, _, err = _cli(capsys, "bench", "--target", "host", option, value if option != "--limit" else "0")
    assert code == 2 and err.startswith("Error: ") and option in err, err


def test_unknown_target_is_one_line(capsys):
    code, out, err = _cli(capsys, "bench", "--target", "pi9")
    assert code == 1 and err.startswith("Error: unknown target 'pi9'") and "Traceback" not in err
    with pytest.raises(TargetError):
        make_plan("pi9")


def test_parse_prune():
    assert parse_prune("none") is None and parse_prune("Channel:0.30") == "channel:0.3"


@pytest.fixture(scope="module")
def host_run(tmp_path_factory):
    """One real native bench of the demo MobileNetV1 (fp32 and int8) as JSON, through the CLI."""
    out = tmp_path_factory.mktemp("bench") / "host.json"
    main(["bench", "--target", "host", "--model", "mobilenet_v1", "--limit", "40", "--runs", "10",
          "--threads", "1", "--format", "json", "-o", str(out)])
    return out


@pytest.mark.slow
def test_native_bench_measures_latency_and_accuracy(host_run):
    doc = json.loads(host_run.read_text())
    assert doc["target"] == "host" and {r["precision"] for r in doc["results"]} == {"fp32", "int8"}
    for r in doc["results"]:
        assert r["mode"] == "native" and r["threads"] == 1 and r["images"] == 40
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and r["fps"] > 0 and r["load_ms"] > 0
        assert r["accuracy"]["metric"] == "top1" and r["accuracy"]["top1"] > 0.8
        assert r["emulated_instructions"] is None and r["size_bytes"] > 0 and 10e6 < r["macs"] < 20e6
        assert r["peak_rss_mb"] < 600, "the runner runs in its own process, without TensorFlow"


@pytest.mark.slow
def test_better_baseline_fails_the_gate(host_run, capsys, tmp_path):
    doc = json.loads(host_run.read_text())
    same = tmp_path / "same.json"
    same.write_text(json.dumps(doc))
    better = json.loads(host_run.read_text())
    for r in better["results"]:
        r["accuracy"]["top1"] += 0.02  # 2 points better than what this run will measure
    path = tmp_path / "better.json"
    path.write_text(json.dumps(better))
    code, out, err = _cli(capsys, "bench", "--target", "host", "--model", "mobilenet_v1", "--limit", "40",
                          "--runs", "10", "--threads", "1", "--max-latency-increase", "1000%", "--format", "csv",
                          "--baseline", str(path))
    assert code == 1
    assert err.count("Regression: mobilenet_v1 tflite") == 2 and "top1" in err
    assert "Error: 2 regression(s) against" in err
    code, out, err = _cli(capsys, "bench", "--target", "host", "--model", "mobilenet_v1", "--limit", "40",
                          "--runs", "10", "--threads", "1", "--max-latency-increase", "1000%", "--format", "csv",
                          "--baseline", str(same))
    assert code == 0 and "No regression" in err and out.startswith("model,backend,precision")


@pytest.mark.slow
def test_bench_over_ssh_on_a_loopback_board(sshd, capsys):  # noqa: F811
    code, out, err = _cli(capsys, "bench", "--target", "host", "--model", "mobilenet_v1", "--precision", "int8",
                          "--device", sshd.device, "--ssh-option=-F", f"--ssh-option={sshd.options[1]}",
                          "--remote-python", sys.executable, "--limit", "20", "--runs", "5", "--format", "json")
    assert code == 0, err
    (row,) = json.loads(out)["results"]
    assert row["mode"] == "ssh" and row["device"] == sshd.device and row["precision"] == "int8"
    assert row["fps"] > 0 and row["images"] == 20 and row["accuracy"]["top1"] > 0.8


def test_unreachable_board_is_one_line(capsys):
    code, out, err = _cli(capsys, "bench", "--target", "host", "--model", "mobilenet_v1", "--precision", "fp32",
                          "--device", "nobody@127.0.0.1:1", "--runs", "1", "--limit", "1")
    assert code == 1 and err.startswith("Error: mobilenet_v1 tflite fp32: cannot reach nobody@127.0.0.1")
    assert "Traceback" not in err


# ---------------------------------------------------------------- a user's own model: its own data only


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    from fixtures import colors

    root = tmp_path_factory.mktemp("user")
    return {"model": colors.save_model(root / "m", colors.color_model(), name="mine"),
            "calib": colors.make_calibration(root / "street", 12), "val": colors.make_val(root / "val")}


def test_user_model_int8_without_calib_fails_before_any_work(user_files, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    code, _, err = _cli(capsys, "bench", "--target", "host", "--model", str(user_files["model"]),
                        "--precision", "int8", "--data", str(user_files["val"]))
    assert code == 1 and err.startswith("Error: int8 for ") and "--calib" in err, err
    assert not (tmp_path / "cache").exists(), "nothing may be built or cached before the refusal"
    with pytest.raises(DataError, match="--calib"):
        make_plan("host", models=[str(user_files["model"])], precisions=["int8"], data=str(user_files["val"]))


def test_user_model_is_never_scored_on_demo_data(user_files, tmp_path, monkeypatch):
    """No --data: timed on synthetic inputs, accuracy null, said in the notes; a bare image folder: timing and
    fidelity on those images. Either way fidelity compares every output with the source model."""
    from edgecnn.bench.pipeline import bench

    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    model = str(user_files["model"])
    plan = make_plan("host", models=[model], precisions=["fp32"], backends=["tflite"], runs=3, warmup=1, threads=1)
    assert any("no --data, so timed on synthetic inputs" in n for n in plan.notes)
    row = bench(plan)["results"][0]
    assert row["accuracy"] is None and row["images"] is None and row["inputs"] == "synthetic"
    assert row["latency_ms"]["p50"] > 0 and row["fps"] == pytest.approx(1000 / row["latency_ms"]["p50"])
    fid = row["fidelity"]
    assert fid["inputs"] == "synthetic" and fid["from"] == "same artifact" and fid["images"] == 4
    assert len(fid["outputs"]) == 1 and fid["outputs"][0]["cosine"] > 0.9999

    folder = str(user_files["calib"])  # a flat folder of images: no labels
    plan = make_plan("host", models=[model], precisions=["fp32"], backends=["tflite"], data=folder, runs=3,
                     warmup=1, threads=1)
    assert any("without labels" in n for n in plan.notes)
    row = bench(plan)["results"][0]
    assert row["accuracy"] is None and row["inputs"] == "unlabelled" and row["images"] == 12
    assert row["fidelity"]["inputs"] == "data" and row["fidelity"]["outputs"][0]["cosine"] > 0.9999


@pytest.mark.slow
def test_user_model_int8_calibrates_on_its_own_set(user_files, tmp_path, monkeypatch):
    from edgecnn.artifacts import load_bundle
    from edgecnn.bench.pipeline import bench

    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    plan = make_plan("host", models=[str(user_files["model"])], precisions=["int8"], calib=str(user_files["calib"]),
                     data=str(user_files["val"]), runs=3, warmup=1, threads=1)
    row = bench(plan)["results"][0]
    quant = load_bundle(row["bundle"]).manifest.verification["quantization"]
    # 12 images: one is held out of calibration for the int8 fidelity check (no labelled --val in compile)
    assert quant["calibration"] == {"name": "street", "images": 11}
    assert row["accuracy"]["metric"] == "top1" and row["images"] == 13  # the user's val folder, not the demo split


def test_a_bundle_scored_once_on_a_data_set_is_not_scored_again(tmp_path, monkeypatch):
    # An emulated row scores its artifact natively on the whole split; the same bytes for another board (or
    # the host build behind every TVM row) must not be scored again, and anything that changes the score must.
    import os
    import types

    from edgecnn.bench.cached import cached_evaluation

    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))

    def bundle(name: str, target: str, model: bytes) -> types.SimpleNamespace:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.tflite").write_bytes(model)
        (folder / "manifest.json").write_text(json.dumps({"target": target, "backend": "tflite", "task": "x",
                                                          "files": {"model": "model.tflite"}}))
        return types.SimpleNamespace(path=folder)

    data = tmp_path / "val"
    data.mkdir()
    (data / "labels.json").write_text("{}")
    runs = []

    def score(value):
        return lambda: runs.append(value) or {"accuracy": {"top1": value}, "images": 3, "latency_ms": 1.0}

    a53, a72, other = bundle("a53", "a53", b"same"), bundle("a72", "a72", b"same"), bundle("o", "a72", b"other")
    first = cached_evaluation(a53, str(data), None, None, score(0.5))
    assert first == {"accuracy": {"top1": 0.5}, "images": 3} and runs == [0.5]  # only what a row keeps
    assert cached_evaluation(a72, str(data), None, None, score(0.9)) == first and runs == [0.5]
    assert cached_evaluation(other, str(data), None, None, score(0.7))["accuracy"]["top1"] == 0.7
    assert cached_evaluation(a53, str(data), 2, None, score(0.6))["accuracy"]["top1"] == 0.6  # another --limit
    (data / "labels.json").write_text('{"changed": 1}')
    os.utime(data / "labels.json", ns=(1, 1))
    assert cached_evaluation(a53, str(data), None, None, score(0.4))["accuracy"]["top1"] == 0.4
    assert runs == [0.5, 0.7, 0.6, 0.4]
