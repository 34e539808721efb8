"""The board cost model (edgecnn.emulate.cost): the published tables it is fitted on, its fit, and its
leave-one-network-out check on the committed measurements (tools/cost_points.json), which fails when the
error grows past the band the targets' TOMLs report or past issue 17's goals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecnn.emulate import cost
from edgecnn.targets import get_target

REPO = Path(__file__).resolve().parents[2]
POINTS = json.loads((REPO / cost.POINTS_FILE).read_text())
# Issue 17's bar on the Pi 4 table: leave-one-out median |error| <= 20%, worst <= 35%.
GOAL_MEDIAN, GOAL_WORST = 0.20, 0.35


def test_published_tables_parse():
    table = cost.published()
    assert set(table) == {"a72", "a53", "a76"}
    assert table["a72"]["mobilenet"] == {4: 61.17, 1: 124.32}
    assert table["a72"]["vgg16_int8"] == {4: 394.23, 1: 869.84}
    assert len(table["a72"]) == 23 and table["a76"]["mobilenet_v2"] == {4: 10.52}


def test_bundle_precision_follows_benchncnn_defaults():
    assert cost.bundle_precision("mobilenet_int8", "a72") == "int8"
    assert cost.bundle_precision("mobilenet", "a72") == "fp32"
    assert cost.bundle_precision("mobilenet", "a76") == "fp16"  # ncnn's defaults on ARMv8.2


def test_features_take_the_busiest_thread_and_all_threads_memory():
    threads = [{"insn": 100, "vec_fmul": 60, "vec_imul": 0, "l1_miss": 5, "l2_miss": 2, "futex": 3,
                "load_bytes": 640, "store_bytes": 64},
               {"insn": 140, "vec_fmul": 70, "vec_imul": 10, "l1_miss": 7, "l2_miss": 4, "futex": 1,
                "load_bytes": 1280, "store_bytes": 0}]
    f = cost.features(threads)
    # The busiest thread (the second: more instructions) for multiplies, L2 misses and futex calls; all
    # threads' L1 misses, which the one shared L2 serves.
    assert {k: f[k] for k in cost.FEATURES} == {"vec_fmul": 70, "vec_imul": 10, "l1_miss_all": 12, "l2_miss": 4,
                                                "futex": 1}
    assert f["other"] == 60 and f["traffic"] == 31 and f["dram"] == 6  # reported, not weighed
    with pytest.raises(ValueError):
        cost.features([])


def test_nnls_recovers_non_negative_weights():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (20, 4))
    truth = np.array([0.5, 0.0, 2.0, 0.1])
    got = cost.nnls(a, a @ truth)
    assert np.allclose(got, truth, atol=1e-9)
    # An unconstrained solve would give a negative weight here; NNLS clamps it to zero.
    b = a @ np.array([1.0, -0.3, 0.0, 0.0])
    assert (cost.nnls(a, b) >= 0).all()


def _loo(board):
    fitted = cost.fit_board(POINTS, board)
    return fitted["points"], fitted, fitted["rows"]


def test_pi4_leave_one_out_meets_the_goal_and_the_reported_band():
    pts, _, rows = _loo("a72")
    networks = {p["network"].removesuffix("_int8") for p in pts}
    assert len(networks) >= 8, "the Pi 4 fit needs the benchncnn networks measured (tools/cost_points.py)"
    for threads in (1, 4):
        for precision in ("fp32", "int8"):
            sub = [r for r in rows if r["threads"] == threads and r["precision"] == precision]
            if not sub:
                continue
            s = cost.error_summary(sub)
            assert s["median"] <= GOAL_MEDIAN and s["worst"] <= GOAL_WORST, (threads, precision, s)
    band = get_target("a72").cost
    s = cost.error_summary(rows)
    assert s["median"] <= band.median_error + 1e-3 and s["worst"] <= band.worst_error + 1e-3


@pytest.mark.parametrize("board", ["a72", "a53", "a76"])
def test_toml_weights_are_the_fit_of_the_committed_points(board):
    target = get_target(board)
    if target.cost is None:
        pytest.skip(f"{board}: too few published networks measured to fit (tools/cost_fit.py says which)")
    pts, fitted, rows = _loo(board)
    for k, v in fitted["weights"].items():
        assert target.cost.weights_ns.get(k, 0.0) == pytest.approx(v, rel=1e-3, abs=1e-6), k
    s = cost.error_summary(rows)
    assert target.cost.median_error == pytest.approx(s["median"], abs=1e-3)
    assert target.cost.worst_error == pytest.approx(s["worst"], abs=1e-3)


def test_int8_over_fp32_is_predicted():
    """Every network with a published int8 figure, left out of the fit: the predicted int8/fp32 ratio goes
    the published way on every board (issue 17: the first fit put SqueezeNet-SSD int8 at 1 thread 4% slower
    than fp32, published 12% faster), and on the Pi 4 (a free fit) it is within 0.2 of the published one
    (an instruction count alone says 1.08 for MobileNetV1 on the A72, published 0.68 at 1 thread)."""
    table = cost.published()
    checked = 0
    for board in cost.BOARDS:
        _, fitted, rows = _loo(board)
        pred = {(r["network"], r["threads"]): r["predicted"] for r in rows}
        for (net, threads), p_int8 in pred.items():
            base = net.removesuffix("_int8")
            if net == base or (base, threads) not in pred:
                continue
            ratio = p_int8 / pred[(base, threads)]
            published_ratio = table[board][net][threads] / table[board][base][threads]
            assert (ratio < 1) == (published_ratio < 1), (board, net, threads, ratio, published_ratio)
            if fitted["method"] == "free":
                assert abs(ratio - published_ratio) <= 0.2, (board, net, threads, ratio, published_ratio)
            checked += 1
    assert checked >= 8  # the Pi 4's four int8 networks at 1 and 4 threads
