"""Report formats and the regression gate, on hand-made bench documents."""

import csv
import io
import json

import pytest

from edgecnn import report
from edgecnn.bench.baseline import Thresholds, compare, load_baseline
from edgecnn.errors import DataError


def _row(model="mobilenet_v2", backend="tflite", precision="int8", mode="native", top1=0.90, p50=5.0,
         instructions=None, pruning=None, metric="top1"):
    acc = ({"metric": "top1", "top1": top1, "top5": 0.99} if metric == "top1"
           else {"metric": "map50_95", "map50_95": top1, "map50": top1 + 0.3})
    return {"model": model, "weights": "demo", "backend": backend, "precision": precision, "pruning": pruning,
            "mode": mode, "threads": 2, "images": 500, "size_bytes": 300_000, "macs": 12_345_678,
            "latency_ms": None if p50 is None else {"mean": p50, "p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3,
                                                   "std": 0.1},
            "fps": None if p50 is None else 1000 / p50, "emulated_instructions": instructions,
            "predicted_latency_ms": None, "accuracy": acc}


def _doc(*rows):
    return {"edgecnn": "0.1", "target": "a72", "results": list(rows)}


def test_same_numbers_pass_the_gate():
    doc = _doc(_row(), _row(model="yolo_lite", metric="map", top1=0.48))
    assert compare(doc["results"], doc) == []


def test_every_regression_is_listed():
    base = _doc(_row(top1=0.92, p50=5.0), _row(model="yolo_lite", metric="map", top1=0.48),
                _row(model="mobilenet_v1"))
    cur = [_row(top1=0.91, p50=5.8), _row(model="yolo_lite", metric="map", top1=0.47)]
    found = compare(cur, base)
    whats = sorted((r.variant.split()[0], r.what) for r in found)
    assert whats == [("mobilenet_v1", "missing"), ("mobilenet_v2", "latency p50 ms"), ("mobilenet_v2", "top1"),
                     ("yolo_lite", "map50"), ("yolo_lite", "map50_95")]
    assert any("-1.00 pt > 0.5 pt" in str(r) for r in found)


def test_thresholds_are_respected():
    base = _doc(_row(top1=0.920, p50=5.0, instructions=1_000_000, mode="emulated"))
    cur = [_row(top1=0.917, p50=5.4, instructions=1_015_000, mode="emulated")]
    assert compare(cur, base) == []  # -0.3 pt, +8% latency, +1.5% instructions: all inside
    strict = Thresholds(max_top1_drop=0.1, max_latency_increase=5, max_instructions_increase=1)
    assert {r.what for r in compare(cur, base, strict)} == {"top1", "latency p50 ms", "instructions"}


def test_variants_are_matched_by_identity_not_position():
    base = _doc(_row(precision="fp32", top1=0.95), _row(precision="int8", top1=0.90))
    cur = [_row(precision="int8", top1=0.90), _row(precision="fp32", top1=0.95)]
    assert compare(cur, base) == []
    pruned = [_row(precision="int8", top1=0.90, pruning={"method": "channel", "ratio": 0.3}),
              _row(precision="fp32", top1=0.95)]
    assert [r.what for r in compare(pruned, base)] == ["missing"]


def test_baseline_for_another_target_is_refused():
    with pytest.raises(DataError, match="target 'a72'"):
        compare([], _doc(), target="a53")


def test_load_baseline_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_baseline(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_baseline(bad)
    bad.write_text('{"rows": []}')
    with pytest.raises(DataError, match="not a bench JSON"):
        load_baseline(bad)


def test_baseline_that_is_a_directory_is_named(tmp_path):
    folder = tmp_path / "base.json"
    folder.mkdir()
    with pytest.raises(DataError, match=r"baseline .*base.json is a directory"):
        load_baseline(folder)


@pytest.mark.parametrize("rows, message", [
    (["mobilenet_v1"], r"results\[0\] must be an object, got str 'mobilenet_v1'"),
    ([_row(), 3], r"results\[1\] must be an object"),
    ([{**_row(), "model": ["m"]}], r"results\[0\] field 'model' must be a string"),
    ([{**_row(), "accuracy": {"metric": "top1", "top1": "0.9"}}], r"results\[0\] field accuracy.top1 must be a number"),
    ([{**_row(), "latency_ms": 5.0}], r"results\[0\] field 'latency_ms' must be an object or null"),
    ([{**_row(), "pruning": {"method": "channel", "ratio": "0.3"}}], r"field pruning.ratio must be a number"),
])
def test_baseline_rows_of_the_wrong_shape_name_row_and_field(tmp_path, rows, message):
    bad = tmp_path / "rows.json"
    bad.write_text(json.dumps(_doc(*rows)))
    with pytest.raises(DataError, match=message) as e:
        load_baseline(bad)
    assert str(bad) in str(e.value)


def test_formats_agree():
    doc = _doc(_row(), _row(model="yolo_lite", metric="map", top1=0.48, p50=None, instructions=123_456_789,
                            mode="emulated"))
    assert json.loads(report.render(doc, "json")) == doc
    rows = list(csv.DictReader(io.StringIO(report.render(doc, "csv"))))
    assert [r["model"] for r in rows] == ["mobilenet_v2", "yolo_lite"]
    assert rows[0]["accuracy"] == "0.9" and rows[0]["p50_ms"] == "5.0" and rows[0]["fps"] == "200.0"
    assert rows[1]["p50_ms"] == "" and rows[1]["instructions"] == "123456789"
    md = report.render(doc, "md")
    assert "| yolo_lite | tflite | int8 | - | emulated |" in md and "123,456,789" in md


def test_pareto_front():
    pts = [(5.0, 0.90), (3.0, 0.85), (6.0, 0.89), (2.0, 0.70), (3.0, 0.80)]
    assert report.pareto_front(pts) == [0, 1, 3]


def test_plot_writes_png(tmp_path):
    doc = _doc(_row(precision="fp32", top1=0.95, p50=9.0), _row(precision="int8", top1=0.93, p50=5.0),
               _row(model="yolo_lite", metric="map", top1=0.48, p50=20.0))
    out = report.plot(doc, tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DataError, match="nothing to plot"):
        report.plot(_doc(_row(p50=None)), tmp_path / "q.png")
