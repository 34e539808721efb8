"""The counting plugin's profile mode under real qemu: instruction classes, memory traffic and cache misses
per guest thread, for the demo MobileNetV1 (alpha 0.25, 128 px: about 5 M guest instructions) as an ncnn
bundle at 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

from edgecnn.compile import compile_model
from edgecnn.emulate import run_bundle_emulated
from edgecnn.emulate.cost import features
from edgecnn.emulate.plugin import CLASSES, profile_args
from edgecnn.targets import get_target

pytestmark = pytest.mark.emulated


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return compile_model("mobilenet_v1", "a72", backend="ncnn", output_dir=tmp_path_factory.mktemp("b") / "a72").bundle


def xs(n=2):
    return [np.random.default_rng(i).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32) for i in range(n)]


def test_profile_classes_memory_and_caches(emulator, bundle):
    cache = get_target("a72").cache
    plain = run_bundle_emulated(bundle, xs(), "a72")
    run = run_bundle_emulated(bundle, xs(), "a72", plugin_args=profile_args(cache.l1, cache.l2))
    # Profiling observes the same guest: the count of record does not move (ncnn's own jitter aside).
    assert np.allclose(run.instructions, plain.instructions, rtol=1e-3)
    assert len(run.profile) == 2 and plain.profile == []
    for region, insn in zip(run.profile, run.instructions):
        assert len(region) == 1  # one thread
        (stats,) = region.values()
        assert stats["insn"] == insn == sum(stats[c] for c in CLASSES)
        assert stats["vec_fmul"] > 0 and stats["vec_imul"] == 0  # fp32 convolutions: FMLA, no integer GEMM
        assert stats["loads"] > 0 and stats["load_bytes"] >= stats["loads"]
        assert 0 < stats["l2_miss"] <= stats["l1_miss"] <= stats["loads"] + stats["stores"]
    # The model's 1.9 MB of weights overflow the Pi 4's 1 MB L2 at every inference; in a 64 MB L2 the second
    # inference finds them where the first one left them.
    big = run_bundle_emulated(bundle, xs(), "a72", plugin_args=profile_args(cache.l1, (64 << 20, 16)))
    small_second, big_second = (next(iter(r.profile[1].values())) for r in (run, big))
    assert big_second["l1_miss"] == small_second["l1_miss"]  # the same L1 model and the same accesses
    assert big_second["l2_miss"] < 0.5 * small_second["l2_miss"]


def test_two_threads_split_the_work(emulator, bundle):
    cache = get_target("a72").cache
    args = profile_args(cache.l1, cache.l2)
    one = run_bundle_emulated(bundle, xs(1), "a72", plugin_args=args).profile[0]
    two = run_bundle_emulated(bundle, xs(1), "a72", threads=2, plugin_args=args).profile[0]
    assert len(two) == 2 and len(one) == 1
    f1, f2 = features(list(one.values())), features(list(two.values()))
    # The convolutions' multiplies are shared out; the busiest thread does at most about two thirds of them.
    assert f2["vec_fmul"] < 0.7 * f1["vec_fmul"]
    assert sum(s["vec_fmul"] for s in two.values()) == pytest.approx(f1["vec_fmul"], rel=0.05)
    assert f2["futex"] > 0  # the pool's waits and wake-ups


def test_bad_cache_geometry_is_refused():
    with pytest.raises(ValueError, match="L1"):
        profile_args(None, (1 << 20, 16))
