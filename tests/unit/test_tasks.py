"""Which task a model file is scored by: declared, from metadata, or generic; never a guess that scores garbage."""

import json
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import DataError, ModelError

PRE = {"size": [32, 32], "scale": 1 / 255, "offset": 0.0}


def _onnx(path: Path, out_shape: list, sidecar: dict | None = None, props: dict | None = None) -> Path:
    """x [1, 3, 32, 32] -> GlobalAveragePool, then a Reshape to `out_shape` (constant-sized by a Tile first)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = int(np.prod(out_shape))
    reps = numpy_helper.from_array(np.array([1, -(-n // 3), 1, 1], np.int64), "reps")
    shape = numpy_helper.from_array(np.array(out_shape, np.int64), "shape")
    starts, ends = (numpy_helper.from_array(np.array([v], np.int64), k) for k, v in (("s", 0), ("e", n)))
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Tile", ["p", "reps"], ["t"]),
             helper.make_node("Flatten", ["t"], ["f"]), helper.make_node("Slice", ["f", "s", "e", "one"], ["c"]),
             helper.make_node("Reshape", ["c", "shape"], ["y"])]
    axis = numpy_helper.from_array(np.array([1], np.int64), "one")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [reps, shape, starts, ends, axis])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (props or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(json.dumps({"preprocessing": PRE, **(sidecar or {})}))
    return path


pytestmark = pytest.mark.usefixtures("private_cache")  # tests/conftest.py


def test_one_score_vector_is_a_classifier_anything_else_is_generic(tmp_path):
    from edgecnn.source import load_source

    assert load_source(_onnx(tmp_path / "cls.onnx", [1, 10])).task == "classification"
    seg = load_source(_onnx(tmp_path / "seg.onnx", [1, 1, 8, 8]))
    assert seg.task == "generic" and seg.head is None
    assert any("benched as generic" in n and "--head" in n for n in seg.notes)
    emb = load_source(_onnx(tmp_path / "emb.onnx", [1, 10]), contract={"task": "generic"})
    assert emb.task == "generic"  # a declared task wins


def test_classifier_width_must_match_its_class_names(tmp_path):
    from edgecnn.source import load_source

    with pytest.raises(ModelError, match="scores 10 classes but 4 class names are given"):
        load_source(_onnx(tmp_path / "a.onnx", [1, 10], {"classes": list("abcd")}))
    with pytest.raises(ModelError, match=r"a classifier's output is \[N, C\] class scores, this one is"):
        load_source(_onnx(tmp_path / "b.onnx", [1, 4, 8, 8], {"task": "classification"}))
    # [1, C, 1, 1], as conv-only classifiers export it, is a score vector
    assert load_source(_onnx(tmp_path / "c.onnx", [1, 4, 1, 1], {"task": "classification",
                                                                   "classes": list("abcd")})).task == "classification"


def test_detector_needs_a_head_and_ultralytics_metadata_gives_it(tmp_path):
    from edgecnn.source import load_source

    with pytest.raises(ModelError, match="a detector needs its head"):
        load_source(_onnx(tmp_path / "d.onnx", [1, 6, 20], {"task": "detection"}))
    props = {"task": "detect", "names": "{0: 'cat', 1: 'dog'}", "imgsz": "[32, 32]"}
    src = load_source(_onnx(tmp_path / "yolo.onnx", [1, 6, 20], props=props))
    assert src.task == "detection" and src.head["type"] == "yolo" and src.classes == ["cat", "dog"]
    assert src.head["box"] == "xywh" and src.head["objectness"] is False
    v5 = load_source(_onnx(tmp_path / "v5.onnx", [1, 20, 7], {"classes": ["cat", "dog"]}),
                     contract={"head": "yolov5"})
    assert v5.task == "detection" and v5.head["objectness"] is True
    with pytest.raises(ModelError, match="head type 'retina' is not known"):
        load_source(_onnx(tmp_path / "r.onnx", [1, 6, 20]), contract={"head": "retina"})
    with pytest.raises(ModelError, match="--head is given but the task is classification"):
        load_source(_onnx(tmp_path / "h.onnx", [1, 6, 20]), contract={"head": "yolo", "task": "classification"})
    timed = load_source(_onnx(tmp_path / "t.onnx", [1, 6, 20], {"task": "detection", "head": {"type": "picodet"}}),
                        contract={"task": "generic"})  # an unknown head in the sidecar: --task generic still times it
    assert timed.task == "generic" and timed.head is None and any("is not used" in n for n in timed.notes)
    seg = load_source(_onnx(tmp_path / "s.onnx", [1, 38, 20], props={"task": "segment"}))
    assert seg.task == "generic"  # Ultralytics segment: masks beyond the detect format, not decoded as boxes


def test_runner_refuses_to_score_a_classifier_against_the_wrong_classes(tmp_path):
    """Scores of width 10 against a 2-class folder set: an error, never a top-1 over mismatched indices."""
    import cv2

    from edgecnn.compile import compile_model
    from edgecnn.runner.run import run_bundle

    model = _onnx(tmp_path / "ten.onnx", [1, 10])
    for cls in ("a", "b"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "val" / cls / "x.png"), np.full((32, 32, 3), 100, np.uint8))
    bundle = compile_model(str(model), "host", backend="onnx", precision="fp32").bundle
    with pytest.raises(DataError, match="gives 10 class scores, but its classes .* number 2"):
        run_bundle(bundle, data=tmp_path / "val", runs=1, warmup=0)
    flat = tmp_path / "flat"
    flat.mkdir()
    cv2.imwrite(str(flat / "y.png"), np.full((32, 32, 3), 50, np.uint8))
    r = run_bundle(bundle, data=flat, runs=1, warmup=0)
    assert r["accuracy"] is None and r["inputs"] == "unlabelled" and r["images"] == 1


def test_a_multi_line_library_message_is_printed_on_one_line(monkeypatch, capsys, tmp_path):
    """A converter's stacked causes must not spill past the one `Error:` line tools read."""
    from edgecnn import cli, source

    def fail(*args, **kwargs):
        raise ModelError("onnx2tf cannot convert m.onnx:\n  Exception in layer\n\n  tf.nn.softmax; use onnx")

    monkeypatch.setattr(source, "load_source", fail)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compile", str(_onnx(tmp_path / "m.onnx", [1, 4])), "--target", "host", "--backend", "onnx",
                  "-o", str(tmp_path / "out")])
    lines = capsys.readouterr().err.splitlines()
    err = [line for line in lines if line.startswith("Error")]
    assert exit_info.value.code == 1 and len(err) == 1
    assert sum("tf.nn.softmax" in line for line in lines) == 1  # no part of the message on a line of its own
    assert err[0] == "Error: onnx2tf cannot convert m.onnx: Exception in layer tf.nn.softmax; use onnx"
