"""The committed demo models have really learned, measured on the demo val split.

The thresholds are the foundation issue's: top-1 >= 0.90 for the MobileNets,
COCO mAP@0.5 >= 0.60 for YOLO-Lite. The figures must also reproduce what
tools/train_demo.py recorded next to the weights.
"""

import pytest

from edgecnn import zoo
from edgecnn.data import demo
from edgecnn.runner import metrics

THRESHOLDS = {"mobilenet_v2": ("top1", 0.90), "yolo_lite": ("map50", 0.60),
              "mobilenet_v1": ("top1", 0.90),
              # Not a foundation demo model: trained 10 epochs (0.898) as the int8 hard case
              # (hard-swish, squeeze-excite) for quantize's --fallback; a regression bound.
              "mobilenet_v3_small": ("top1", 0.85)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_demo_model_accuracy(name):
    spec = zoo.get_spec(name)
    assert spec.demo_weights and zoo.demo_available(name), f"run python tools/train_demo.py --models {name}"
    meta = zoo.demo_metadata(name)
    model = zoo.load(name, weights="demo")
    result = metrics.evaluate(model.predict_on_batch, meta, demo.demo_dataset(spec.task, "val"))
    key, minimum = THRESHOLDS[name]
    assert result[key] >= minimum
    assert result[key] == pytest.approx(meta["metrics"]["val"][key], abs=0.005)


def test_every_demo_preset_has_a_threshold():
    assert {s.name for s in zoo.list_models() if s.demo_weights} == set(THRESHOLDS)


def test_demo_weights_are_small():
    total = sum(p.stat().st_size for p in zoo.WEIGHTS_DIR.glob("*.weights.h5"))
    assert 0 < total < 20 * 2**20
