"""Timing discipline: variants timed side by side in interleaved rounds, and notes when the figures are shaky."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgecnn.bench import timing
from edgecnn.runner.interleave import time_interleaved


def test_interleaved_rounds_give_each_bundle_its_runs_and_round_p50s(bundles):
    paths = [bundles["tflite-fp32"], bundles["onnx-fp32"]]
    results = time_interleaved(paths, runs=7, warmup=1, rounds=3, threads=1)
    assert len(results) == 2
    for r in results:
        assert r["runs"] == 7 and r["rounds"] == 3 and len(r["round_p50_ms"]) == 3  # 3 + 2 + 2 invokes
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and r["fps"] == pytest.approx(1000 / lat["p50"])
        spread = (max(r["round_p50_ms"]) - min(r["round_p50_ms"])) / sorted(r["round_p50_ms"])[1]
        assert r["round_spread"] == pytest.approx(spread, abs=0.02)  # from unrounded p50s and r["clock"] == "wall" and r["threads"] == 1
    cpu = time_interleaved(paths[:1], runs=2, warmup=0, rounds=5, cpu_time=True)[0]
    assert cpu["clock"] == "cpu" and cpu["rounds"] == 2  # never more rounds than runs


def test_interleave_command_prints_json_and_refuses_bad_bundles_in_one_line(bundles, tmp_path):
    cmd = [sys.executable, "-m", "edgecnn.runner.interleave", str(bundles["tflite-fp32"]), "--runs", "3",
           "--warmup", "0", "--rounds", "3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["runs"] == 3
    done = subprocess.run(cmd[:3] + [str(tmp_path / "none")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.startswith("Error: ") and "Traceback" not in done.stderr


def _row(name: str, p50: float, p90: float, spread: float, threads: int = 2) -> dict:
    return {"model": name, "backend": "tflite", "precision": "fp32", "threads": threads,
            "latency_ms": {"p50": p50, "p90": p90}, "timing": {"round_spread": spread}}


def test_notes_name_load_spread_and_tails(monkeypatch):
    monkeypatch.setattr(timing.os, "cpu_count", lambda: 2)
    quiet = timing._notes([_row("a", 1.0, 1.1, 0.02)], 0.3, 0.4, cpu_time=False)
    assert len(quiet) == 1 and "interleaved rounds" in quiet[0] and "wall time" in quiet[0]
    noisy = timing._notes([_row("a", 1.0, 4.5, 0.30), _row("b", 2.0, 2.1, 0.01)], 3.1, 0.5, cpu_time=True)
    text = " | ".join(noisy)
    assert "load average was 3.10 on 2 cores" in text and "CPU time" in text
    assert "a tflite fp32 (30%)" in text and "b tflite" not in text.split("spread more")[1].split("|")[0]
    assert "p90 4.5x p50" in text and "try --threads 1" in text
    one_thread = timing._notes([_row("a", 1.0, 4.5, 0.0, threads=1)], None, None, cpu_time=False)
    assert not any("long tails" in n for n in one_thread)  # one thread: a long tail is not wake-up noise


def test_int8_not_faster_than_its_fp32_twin_is_said_with_what_the_cpu_lacks(monkeypatch):
    from edgecnn import targets

    def twin(model, p50, precision, backend="tflite"):
        return {**_row(model, p50, p50, 0.0, threads=1), "precision": precision, "backend": backend}

    rows = [twin("m", 1.0, "fp32"), twin("m", 1.48, "int8"), twin("m", 1.0, "fp32", "onnx"),
            twin("m", 0.7, "int8", "onnx"), twin("n", 2.0, "fp32"), twin("other", 1.9, "int8")]
    monkeypatch.setattr(targets, "host_int8_dot", lambda: None)
    said = [n for n in timing._notes(rows, None, None, cpu_time=False) if "not faster" in n]
    assert len(said) == 1 and "m tflite (int8/fp32 1.48)" in said[0] and "onnx" not in said[0]
    assert "other" not in said[0] and "no 8-bit dot-product" in said[0]  # an int8 row without a twin: no claim
    monkeypatch.setattr(targets, "host_int8_dot", lambda: "avx512_vnni")
    said = [n for n in timing._notes(rows, None, None, cpu_time=False) if "not faster" in n]
    assert "has 8-bit dot products (avx512_vnni)" in said[0]
    assert not [n for n in timing._notes(rows[2:4], None, None, cpu_time=False) if "not faster" in n]


def test_the_cpu_int8_dot_product_flag_is_read_from_cpuinfo(tmp_path, monkeypatch):
    from edgecnn import targets

    real = Path.read_text
    for text, want in (("flags : sse avx2 fma\n", None), ("flags : avx2 avx_vnni\n", "avx_vnni"),
                       ("Features : fp asimd asimddp\n", "asimddp")):
        monkeypatch.setattr(Path, "read_text", lambda self, *a, _t=text, **k:
                            _t if str(self) == "/proc/cpuinfo" else real(self, *a, **k))
        assert targets.host_int8_dot() == want


def test_default_threads_are_stable_ones(monkeypatch):
    monkeypatch.setattr(timing.os, "cpu_count", lambda: 2)
    threads, note = timing.default_threads(None)
    assert threads == 1 and "2 cores" in note
    assert timing.default_threads(2) == (2, None)
    monkeypatch.setattr(timing.os, "cpu_count", lambda: 8)
    assert timing.default_threads(None) == (None, None)


def test_bench_rows_are_timed_side_by_side(bundles, tmp_path, monkeypatch):
    """Two variants in one native bench: both latencies come from the same interleaved run."""
    from edgecnn.bench.pipeline import bench
    from edgecnn.bench.plan import make_plan

    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    plan = make_plan("host", models=["mobilenet_v1"], backends=["tflite", "onnx"], precisions=["fp32"], runs=6,
                     warmup=1, limit=4, threads=1)
    doc = bench(plan)
    assert len(doc["results"]) == 2
    for row in doc["results"]:
        assert row["timing"]["interleaved_with"] == 1 and row["timing"]["runs"] == 6
        assert len(row["timing"]["round_p50_ms"]) == 5 and row["threads"] == 1
        assert row["fps"] == pytest.approx(1000 / row["latency_ms"]["p50"])
    assert any("timed side by side" in n for n in doc["notes"])
    with pytest.raises(Exception, match="--cpu-time applies to native runs"):
        make_plan("a72", models=["mobilenet_v1"], precisions=["fp32"], cpu_time=True)


def test_end_to_end_stages_are_timed_beside_the_invoke(bundles, tmp_path):
    """decode -> preprocess -> feed -> invoke -> fetch -> NMS per image: the FPS a camera loop gets."""
    from fixtures.bundles import make_detection_set

    from edgecnn.runner.run import STAGES, run_bundle

    r = run_bundle(bundles["tflite-det"], data=make_detection_set(tmp_path / "det"), runs=3, warmup=1)
    e2e = r["end_to_end"]
    assert e2e["images"] == r["images"] == 4 and set(e2e["mean_ms"]) == set(STAGES)
    assert all(v >= 0 for v in e2e["mean_ms"].values()) and e2e["mean_ms"]["decode"] > 0
    assert e2e["total_ms"] == pytest.approx(sum(e2e["mean_ms"].values()), abs=1e-3)
    assert e2e["total_ms"] > e2e["mean_ms"]["invoke"] and e2e["fps"] == pytest.approx(1000 / e2e["total_ms"], rel=1e-3)


def test_emulated_check_of_an_int8_model_with_float_outputs_allows_kernel_rounding():
    """ONNX QDQ int8 has float outputs: x86 and ARM onnxruntime round inner layers differently (the demo
    MobileNetV2 differed by 0.0196); a wrong aarch64 build is off by far more and still fails."""
    from types import SimpleNamespace

    import numpy as np

    from edgecnn.bench.emulated import outputs_match as _outputs_match
    from edgecnn.errors import ModelError

    manifest = SimpleNamespace(precision="int8", outputs=[SimpleNamespace(scale=None)], name="m", backend="onnx",
                               target="a72")
    host = [[np.array([0.1, 0.7, 0.2], np.float32)]]
    assert _outputs_match(host, [[np.array([0.1, 0.7196, 0.1804], np.float32)]], manifest) == pytest.approx(0.0196, abs=1e-6)
    with pytest.raises(ModelError, match="computes something else"):
        _outputs_match(host, [[np.array([0.7, 0.1, 0.2], np.float32)]], manifest)
