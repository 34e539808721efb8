"""The CLI as users meet it: real subprocesses, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edgecnn", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and "edgecnn, version" in r.stdout
    for cmd in ([], ["targets"], ["targets", "show"], ["zoo"], ["zoo", "show"]):
        r = run(*cmd, "--help")
        assert r.returncode == 0 and "Usage:" in r.stdout, cmd


def test_help_does_not_import_heavy_frameworks():
    code = ("import sys; from edgecnn.cli import cli; from click.testing import CliRunner; "
            "CliRunner().invoke(cli, ['targets']); "
            "print(sorted(m for m in ('tensorflow', 'tvm', 'onnxruntime', 'keras') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_targets_list_and_show_json():
    r = run("targets", "--format", "json")
    assert r.returncode == 0
    names = [t["name"] for t in json.loads(r.stdout)]
    assert {"a53", "a72", "a76", "jetson-nano", "jetson-orin", "host"} <= set(names)
    r = run("targets", "show", "rpi4", "--format", "json")
    a72 = json.loads(r.stdout)
    assert a72["name"] == "a72" and a72["tvm"]["mcpu"] == "cortex-a72" and a72["qemu_cpu"] == "cortex-a72"
    r = run("targets", "show", "a72")
    assert r.returncode == 0 and "cortex-a72" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["targets", "show", "pi9"], "Error: unknown target 'pi9'"),
    (["targets", "show", "/nope/board.toml"], "Error: target file not found"),
    (["targets", "--format", "xml"], "Error: Invalid value for '--format'"),
    (["frobnicate"], "Error: No such command 'frobnicate'"),
    (["zoo", "show", "resnet50"], "Error: unknown model 'resnet50'"),
    (["zoo", "show", "mobilenet_v2:alpha=0.1"], "Error:"),
    (["zoo", "show", "missing.onnx"], "Error:"),
])
def test_bad_input_is_one_line_and_nonzero(args, message):
    r = run(*args)
    assert r.returncode != 0
    assert r.stderr.strip().startswith(message), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_bad_target_file_names_file_and_key(tmp_path):
    f = tmp_path / "board.toml"
    f.write_text('name = "b"\ncores = "four"\n')
    r = run("targets", "show", str(f))
    assert r.returncode == 1 and str(f) in r.stderr and "Error:" in r.stderr


def test_corrupt_model_file(tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"\x00not a model at all" * 10)
    r = run("zoo", "show", str(f))
    assert r.returncode == 1 and r.stderr.startswith("Error:") and str(f) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_zoo_json_lists_models_with_computed_stats(tmp_path):
    import os

    env = {**os.environ, "EDGECNN_CACHE": str(tmp_path)}
    r = run("zoo", "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    models = {m["name"]: m for m in json.loads(r.stdout)}
    assert {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "yolo_lite",
            "yolo_lite_mobilenet"} <= set(models)
    for m in models.values():
        assert m["params"] > 0 and m["macs"] > 0 and len(m["input_shape"]) == 3
    assert models["yolo_lite"]["input_shape"] == [224, 224, 3]
    assert models["yolo_lite"]["task"] == "detection"
