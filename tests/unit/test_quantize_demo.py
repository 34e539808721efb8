"""edgecnn.quantize on the real demo models (their committed weights): int8 close to fp32, 4x smaller.

Slow (a real conversion and validation each). The weights must exist: a missing
demo model fails here rather than skipping, so CI notices.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path_factory.getbasetemp() / "demo-cache"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.mark.slow
@pytest.mark.parametrize("name, calib, metric, max_ratio", [
    ("mobilenet_v2", "demo-classification", "top1", 0.45),
    ("yolo_lite", "demo-detection", "map50", 0.3),
])
def test_demo_model_int8_stays_close_to_fp32(tmp_path, name, calib, metric, max_ratio):
    from edgecnn.quantize import quantize

    r = quantize(name, calib, tmp_path, val_limit=100)
    acc = r.accuracy
    assert r.calibration["images"] >= 200 and not r.warnings
    assert r.validation["labelled"] and r.validation["images"] == 100
    assert acc["fp32"][metric] > 0.3  # the demo weights are trained, not random
    # 100 images: one image is 1 point of top-1, so allow a few points of sampling noise.
    assert acc["fp32"][metric] - acc["int8"][metric] <= 0.03
    assert r.size_bytes["ratio"] <= max_ratio
    assert min(o["cosine"] for o in r.outputs) > 0.98


@pytest.mark.slow
def test_mobilenet_v3_fallback_gets_inside_one_point_with_every_layer_int8(tmp_path):
    # The known hard case: min/max ranges cost MobileNetV3-Small about 2.6 top-1 points; --fallback's
    # percentile ranges bring it inside 1 point before any layer has to stay float.
    from edgecnn.quantize import quantize

    r = quantize("mobilenet_v3_small", "demo-classification", tmp_path, max_drop=1.0, fallback=True)
    assert r.validation["images"] == 500
    assert r.accuracy["drop_points"] <= 1.0 and r.float_layers == []
    assert r.settings["method"] == "percentile" and r.fallback_steps
    assert r.size_bytes["ratio"] <= 0.31
