"""The emulated CI tier: the demo models as aarch64 builds on a53 and a72, against committed baselines.

Each variant (TFLite fp32 and int8, TVM fp32) is built for the target, run under
qemu with the target's core on a few images (outputs must equal the native run;
bench raises otherwise), and its guest instruction count and accuracy are compared
with ci/<target>.json. Refresh a baseline after an intended change with

    edgecnn bench --target a72 --emulate --backend tflite,tvm --format json -o ci/a72.json

Accuracy is scored natively on the whole demo val split (seconds), so one image more or less is
0.2-0.3 points; the gate allows 1 point because int8 calibration runs in float on the host CPU,
and another CPU's kernels can move a calibration range and with it a few borderline images.
"""

from pathlib import Path

import pytest

from edgecnn.bench.baseline import Thresholds, compare, load_baseline
from edgecnn.bench.pipeline import bench
from edgecnn.bench.plan import make_plan

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.emulated


@pytest.mark.parametrize("target", ["a53", "a72"])
def test_demo_models_against_baseline(emulator, target):
    from edgecnn.emulate import setup

    setup(target, with_tvm=True, log=lambda msg: None)  # the guest's TVM runtime (cached after the first)
    baseline = load_baseline(ROOT / "ci" / f"{target}.json")
    plan = make_plan(target, emulate=True, backends=["tflite", "tvm"], precisions=["fp32", "int8"])
    doc = bench(plan)
    rows = doc["results"]
    assert {(r["model"], r["backend"], r["precision"]) for r in rows} == {
        (m, b, p) for m in ("yolo_lite", "mobilenet_v2", "mobilenet_v1")
        for b, p in (("tflite", "fp32"), ("tflite", "int8"), ("tvm", "fp32"))}
    for r in rows:
        assert r["mode"] == "emulated" and r["latency_ms"] is None and r["fps"] is None
        assert r["emulated_instructions"] > 0 and r["predicted_latency_ms"] > 0
        assert r["emulated_check"]["images"] == 3
    regressions = compare(rows, baseline, Thresholds(max_map_drop=1.0, max_top1_drop=1.0), target=target)
    assert not regressions, "\n".join(str(r) for r in regressions)
