"""What a user reads: edgecnn's own lines only (no framework log noise), and tables that survive a CI log.

Everything runs as a real subprocess with stdout and stderr on pipes, which is
what CI gives: the frameworks write their noise from C++ straight to file
descriptor 2, and rich sees no terminal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgecnn.logfilter import LOG_ENV, is_noise
from fixtures import colors

ROOT = Path(__file__).resolve().parents[2]

# Lines TF 2.21 / ai-edge-litert 2.3 printed on this project's commands before the filter.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796157381.782892    4969 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To "
    "turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796157407.792647    5327 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
    "W0000 00:00:1796157602.255864    8701 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.",
    "I0000 00:00:1796157602.256220    8701 reader.cc:83] Reading SavedModel from: /tmp/tmp4911ickx",
    "I1201 20:43:01.280016    8701 loader.cc:471] SavedModel load for tags { serve }; Status: success: OK.",
    "E0000 00:00:1796157602.2    8701 cuda_dnn.cc:8310] Unable to register cuDNN factory",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "fully_quantize: 0, inference_type: 6, input_inference_type: INT8, output_inference_type: INT8",
]
KEPT = [
    "Error: unknown target 'pi9'",
    "Warning: calibrating on 8 images; at least 200 are recommended",
    "  tflite: converting mobilenet_v1 (fp32)",
    "F0000 00:00:1796157602.2    8701 tensor.cc:12] Check failed: dims == 4",  # fatal: what explains an abort
    "ERROR: Didn't find op for builtin opcode 'CONV_2D' version '9'",
    "Segmentation fault",
]

# Writes noise and real lines from "C++" (os.write on descriptor 2) and from Python, inside the filter.
SCRIPT = r"""
import os, sys
from edgecnn.logfilter import native_logs
with native_logs():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nnative line kept\n")
    print("python line kept", file=sys.stderr)
    os.write(2, b"I0000 00:00:1796157381.782892    4969 port.cc:153] oneDNN custom operations are on.\n")
    os.write(2, b"no newline at the end")
    print("stdout untouched")
"""


def _env(extra: dict | None) -> dict:
    """This environment without EDGECNN_DEBUG and COLUMNS (as CI has it), plus `extra`. Without
    TF_CPP_MIN_LOG_LEVEL too, as a user's shell has it: an in-process test that entered edgecnn's log filter
    left it set in this process (logfilter.LOG_ENV), and --verbose could then show no TensorFlow line."""
    dropped = ("EDGECNN_DEBUG", "COLUMNS", *LOG_ENV)
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, **(extra or {})}


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env(env))


def _edgecnn(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgecnn", *args], capture_output=True, text=True, timeout=600,
                          env=_env(env))


@pytest.mark.parametrize("line", NOISE)
def test_framework_lines_are_noise(line):
    assert is_noise(line) and is_noise(line.encode())


@pytest.mark.parametrize("line", KEPT)
def test_edgecnn_lines_and_real_errors_are_kept(line):
    assert not is_noise(line)


def test_filter_drops_noise_and_passes_everything_else():
    done = _python(SCRIPT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stdout untouched\n"
    assert sorted(done.stderr.splitlines()) == ["native line kept", "no newline at the end", "python line kept"]


def test_debug_lets_every_line_through():
    done = _python(SCRIPT, env={"EDGECNN_DEBUG": "1"})
    assert "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in done.stderr and "port.cc" in done.stderr


def test_a_line_written_just_before_an_abort_still_arrives():
    """The forwarder is a process of its own: the fatal line that explains a crash is not lost with it."""
    done = _python("import os\nfrom edgecnn.logfilter import native_logs\nwith native_logs():\n"
                   "    os.write(2, b'F0000 00:00:1.2 7 x.cc:1] Check failed: dims == 4\\n')\n    os.abort()\n")
    assert done.returncode == -6
    assert "Check failed: dims == 4" in done.stderr


def test_runner_stdout_is_the_json_and_stderr_has_no_delegate_banner(bundles):
    cmd = [sys.executable, "-m", "edgecnn.runner", str(bundles["tflite-fp32"]), "--runs", "1", "--warmup", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(None))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    (line,) = done.stdout.splitlines()
    assert json.loads(line)["backend"] == "tflite"
    # The banner is really printed, and really filtered: with EDGECNN_DEBUG it shows.
    debug = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env({"EDGECNN_DEBUG": "1"}))
    assert "XNNPACK delegate" in debug.stderr and json.loads(debug.stdout)["backend"] == "tflite"


def test_quantize_prints_only_edgecnn_lines(tmp_path):
    """TensorFlow import, converter, C++ quantizer and LiteRT all run; stderr holds edgecnn's progress and notes."""
    model = colors.save_model(tmp_path / "m", colors.color_model())
    calib = colors.make_calibration(tmp_path / "calib", 8)
    done = _edgecnn("quantize", str(model), "--calib", str(calib), "--val", str(colors.make_val(tmp_path / "val")),
                    "-o", str(tmp_path / "out"), env={"EDGECNN_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    foreign = [ln for ln in done.stderr.splitlines() if not ln.startswith(("  ", "Warning: "))]
    assert not foreign, done.stderr
    assert "colors -> int8 (tflite)" in done.stdout


def test_verbose_shows_the_frameworks_lines(tmp_path):
    model = colors.save_model(tmp_path / "m", colors.color_model())
    quiet = _edgecnn("zoo", "show", str(model))
    loud = _edgecnn("--verbose", "zoo", "show", str(model))
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert quiet.stderr == "" and quiet.stdout == loud.stdout
    assert any(is_noise(ln) for ln in loud.stderr.splitlines()), loud.stderr  # TensorFlow's import, unfiltered
    assert "--verbose" in _edgecnn("--help").stdout


# ---------------------------------------------------------------------------- tables in a CI log

def _table_rows(text: str) -> list[list[str]]:
    """The data rows of a rich table (lines between │ borders), each as its stripped cells."""
    return [[c.strip() for c in ln.strip().strip("│").split("│")] for ln in text.splitlines() if ln.startswith("│")]


def test_targets_table_in_a_pipe_keeps_one_line_per_target():
    names = [t["name"] for t in json.loads(_edgecnn("targets", "--format", "json").stdout)]
    for env in (None, {"COLUMNS": "150"}):  # the wide default, and the width CI says it has
        done = _edgecnn("targets", env=env)
        assert done.returncode == 0 and "…" not in done.stdout, done.stdout
        rows = _table_rows(done.stdout)
        assert [r[0] for r in rows] == names, done.stdout  # a wrapped cell would add a row with an empty name
        assert all(re.fullmatch(r"\d+", r[3]) for r in rows)


BENCH = r"""
from edgecnn import render, report
doc = {"edgecnn": "x", "target": "a72", "mode": "emulated", "results": [
    {"model": model, "backend": "tflite", "precision": "int8", "pruning": {"method": "channel", "ratio": 0.3},
     "mode": "emulated", "threads": 1, "size_bytes": 1234567, "macs": 1234567890,
     "accuracy": {"metric": "map50_95", "map50_95": 0.4843, "map50": 0.7}, "latency_ms": None, "fps": None,
     "emulated_instructions": 123456789012, "predicted_latency_ms": 12.3456}
    for model in ("yolo_lite", "mobilenet_v2_0.35")]}
render.console().print(report.rich_table(doc))
"""


def test_bench_table_in_a_pipe_splits_no_cell():
    done = _python(BENCH)
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    rows = _table_rows(done.stdout)
    assert [r[0] for r in rows] == ["yolo_lite", "mobilenet_v2_0.35"], done.stdout
    for r in rows:
        assert r[1:] == ["tflite", "int8", "channel:0.3", "1", "1205.6", "1234.6", "map50_95 0.484",
                         "123,456,789,012", "12.35"], done.stdout
