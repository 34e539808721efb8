"""ONNX int8 types per target architecture, and the check that onnxruntime fuses what was quantized.

The model is a tiny MobileNet-like residual block built as ONNX here (Conv+Relu, depthwise Conv+Relu,
1x1 Conv, residual Add, pooling), so no TensorFlow export is involved. Whether onnxruntime's CPU
provider fuses a QDQ unit is its own decision on this machine; these tests read it back from the
optimised graph, they do not assume it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import EdgecnnError, EdgecnnWarning
from edgecnn.targets import host_arch
from fixtures import colors as F

ON_X86 = host_arch() == "x86_64"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))


def _residual_block(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              name="stem"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8,
                              name="depthwise"),
             helper.make_node("Relu", ["cd"], ["rd"]),
             helper.make_node("Conv", ["rd", "wp", "bp"], ["cp"], kernel_shape=[1, 1], name="project"),
             helper.make_node("Add", ["cp", "r1"], ["sum"], name="residual"),
             helper.make_node("GlobalAveragePool", ["sum"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["features"])]
    inits = [init("w1", 8, 3, 3, 3), init("b1", 8, scale=0.05), init("wd", 8, 1, 3, 3), init("bd", 8, scale=0.05),
             init("wp", 8, 8, 1, 1), init("bp", 8, scale=0.05)]
    graph = helper.make_graph(nodes, "block",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 8])], inits)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "block.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    (folder / "block.json").write_text(json.dumps({"task": "generic", "preprocessing": F.PREPROCESSING}))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    return {"calib": F.make_calibration(root / "calib", 12), "model": _residual_block(root / "m")}


def _quantize(files, out: Path, notes: bool = False, **kwargs):
    from edgecnn.quantize import quantize

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = quantize(files["model"], files["calib"], out, backend="onnx", **kwargs)
    said = [str(w.message) for w in seen if issubclass(w.category, EdgecnnWarning)]
    return r, (said if notes else [m for m in said if "in float" in m])


def _timed_as(monkeypatch, p50: list[float]) -> list:
    """quantize.onnx.time_models answering `p50` (fp32, then the all-int8 model and each float prefix, each with
    and without QDQ propagation): the choice, not the clock, is under test here; the calls are recorded."""
    from edgecnn.quantize import onnx as q

    calls = []

    def fake(models, feed, threads=1, **kw):
        calls.append([Path(m).name for m in models])
        assert all(Path(m).is_file() for m in models) and len(models) == len(p50)
        return list(p50)

    monkeypatch.setattr(q, "time_models", fake)
    return calls


def test_x86_64_is_u8s8_and_every_conv_and_add_fuses(files, tmp_path, monkeypatch):
    from edgecnn.frameworks.ort import float_ops_after_optimisation

    _timed_as(monkeypatch, [1.0, 1.0, 0.99, 0.99, 0.98, 0.98, 0.97])  # nothing gains 5%: all-int8 stays
    r, fused = _quantize(files, tmp_path, arch="x86_64")
    s = r.settings
    assert (s["arch"], s["activation_type"], s["weight_type"]) == ("x86_64", "uint8", "int8")
    report = json.loads(r.report.read_text())["quantization"]["settings"]
    assert report["activation_type"] == "uint8" and report["weight_type"] == "int8"
    counts = float_ops_after_optimisation(r.output)
    assert counts["Conv"] == (0, 3) and counts["Add"] == (0, 1)
    assert fused == [] and not any("in float" in w for w in r.warnings)


@pytest.mark.skipif(not ON_X86, reason="onnxruntime's x86 CPU provider is the one that leaves S8S8 units in float")
def test_s8s8_on_x86_leaves_ops_in_float_and_is_warned(files, tmp_path, monkeypatch):
    from edgecnn.frameworks.ort import float_ops_after_optimisation
    from edgecnn.quantize import onnx as q

    monkeypatch.setitem(q._TYPES, "x86_64", ("int8", "int8"))  # what the backend did before it chose per arch
    r, fused = _quantize(files, tmp_path, arch="x86_64")
    assert r.settings["activation_type"] == "int8"
    left, total = float_ops_after_optimisation(r.output)["Add"]
    assert total == 1 and left == 1
    assert len(fused) == 1 and "1 of 1 Add" in fused[0] and fused[0] in r.warnings


def test_aarch64_gets_what_onnxruntime_recommends_for_arm(files, tmp_path):
    from edgecnn.frameworks.ort import float_ops_after_optimisation
    from edgecnn.quantize.onnx import quant_types

    t = quant_types("aarch64")
    assert (t.activations, t.weights, t.reduce_range) == ("int8", "int8", False)
    r, fused = _quantize(files, tmp_path, arch="aarch64")
    assert (r.settings["activation_type"], r.settings["weight_type"]) == ("int8", "int8")
    # ARM's onnxruntime fuses QDQ units with int8 activations (session.qdqisint8allowed on): all of them here.
    arm = float_ops_after_optimisation(r.output, int8_allowed=True)
    assert arm["Conv"] == (0, 3) and arm["Add"] == (0, 1) and fused == []
    # The same model under x86's rule keeps its Add in float: the check would have caught it.
    assert float_ops_after_optimisation(r.output, int8_allowed=False)["Add"] == (1, 1)


def test_reduce_range_only_for_u8s8_without_vnni():
    from edgecnn.quantize.onnx import quant_types

    assert quant_types("x86_64", vnni=False).reduce_range
    assert not quant_types("x86_64", vnni=True).reduce_range
    assert not quant_types("aarch64", vnni=False).reduce_range
    assert quant_types().arch == quant_types("native").arch == host_arch()
    assert quant_types("riscv64").activations == "int8"  # onnxruntime's own default elsewhere


def test_float_prefix_is_kept_only_where_it_is_measured_faster(files, tmp_path, monkeypatch):
    from edgecnn.frameworks.ort import float_ops_after_optimisation
    from edgecnn.quantize import onnx as q

    pre = q.preprocess(files["model"], tmp_path)
    prefixes = q.float_prefixes(pre)
    assert len(prefixes) == 2  # three convolutions: one or two of them in float, never all
    assert prefixes[0][-1] != "depthwise" and prefixes[0][0] == "stem" and "depthwise" in prefixes[1]
    # fp32, then all-int8, stem in float, stem+depthwise in float: each with QDQ propagation, then without
    calls = _timed_as(monkeypatch, [1.0, 0.9, 0.9, 0.6, 0.65, 0.8, 0.8])
    r, fused = _quantize(files, tmp_path / "a", arch="x86_64")
    check = r.settings["speed_check"]
    assert calls == [["block.onnx", "speed-0.onnx", "speed-0-unpropagated.onnx", "speed-1.onnx",
                      "speed-1-unpropagated.onnx", "speed-2.onnx", "speed-2-unpropagated.onnx"]]
    assert check["checked"] and check["float_prefix_convs"] == 1 and check["p50_ms"]["chosen"] == 0.6
    assert check["disabled_optimizers"] == [] and len(check["candidates"]) == 6
    assert float_ops_after_optimisation(r.output)["Conv"] == (0, 2) and fused == []  # the stem reads float weights
    assert json.loads(r.report.read_text())["quantization"]["settings"]["speed_check"] == check

    _timed_as(monkeypatch, [1.0, 0.9, 0.9, 0.88, 0.88, 0.87, 0.87])  # under 5% faster: not worth a float layer
    r, said = _quantize(files, tmp_path / "b", arch="x86_64", notes=True)
    assert r.settings["speed_check"]["float_prefix_convs"] == 0 and not [m for m in said if "slower" in m]
    assert float_ops_after_optimisation(r.output)["Conv"] == (0, 3)

    _timed_as(monkeypatch, [0.5, 0.9, 0.9, 0.6, 0.7, 0.8, 0.8])  # every int8 form loses to fp32: said so
    said = _quantize(files, tmp_path / "c", arch="x86_64", notes=True)[1]
    assert [m for m in said if "int8 model is slower than fp32 on this CPU: p50 0.60 ms against 0.50 ms" in m]


def test_a_form_faster_without_qdq_propagation_says_so_to_every_session_and_the_runner(files, tmp_path,
                                                                                      monkeypatch):
    from edgecnn.frameworks.ort import disabled_optimizers, session
    from edgecnn.quantize import onnx as q

    # the stem-in-float form is fastest without propagation (YOLO-Lite's case: the pass hoists the
    # QuantizeLinear above the stem's pooling); fallback quantizes of the session keep the choice
    _timed_as(monkeypatch, [1.0, 0.9, 0.9, 0.8, 0.5, 0.8, 0.8])
    r = _quantize(files, tmp_path / "q", arch="x86_64")[0]
    check = r.settings["speed_check"]
    assert check["float_prefix_convs"] == 1 and check["disabled_optimizers"] == q.UNPROPAGATED
    assert disabled_optimizers(r.output) == q.UNPROPAGATED
    assert disabled_optimizers(files["model"]) == []  # the float source asks for nothing
    again = q.with_disabled_optimizers(r.output.read_bytes(), [])
    assert disabled_optimizers(again) == [] and session(again).get_outputs()[0].name == "features"

    from edgecnn.artifacts import load_bundle
    from edgecnn.compile import compile_model
    from edgecnn.runner.sessions import open_session, predict

    out = tmp_path / "bundle"
    compile_model(r.output, "host", backend="onnx", precision="int8", output_dir=out)
    bundle = load_bundle(out)
    assert bundle.manifest.backend_options["disabled_optimizers"] == q.UNPROPAGATED
    x = np.random.default_rng(1).random((1, 32, 32, 3), np.float32)  # the block's batch is fixed at one
    want = session(r.output).run(None, {"image": x.transpose(0, 3, 1, 2)})[0]
    import onnxruntime as ort

    opened, real = [], ort.InferenceSession

    def spy(*args, **kwargs):  # what the runner asks onnxruntime for, not only what comes out
        opened.append(kwargs.get("disabled_optimizers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    assert np.allclose(predict(open_session(bundle, threads=1), x)[0], want, atol=1e-5)
    assert opened == [q.UNPROPAGATED]
    opened.clear()
    session(r.output)  # edgecnn's own sessions: read once, then opened without what the model asks to skip
    assert opened == [[], q.UNPROPAGATED]
    opened.clear()
    session(files["model"])
    assert opened == [[]]  # a model that asks for nothing is loaded once


def test_a_model_for_another_cpu_is_not_timed_here(files, tmp_path, monkeypatch):
    calls = _timed_as(monkeypatch, [])
    r = _quantize(files, tmp_path, arch="aarch64" if ON_X86 else "x86_64")[0]
    assert calls == [] and r.settings["speed_check"]["checked"] is False


def test_layers_kept_in_float_on_purpose_are_not_reported(files, tmp_path):
    import onnx

    from edgecnn.frameworks.ort import describe_float_ops, float_ops_after_optimisation
    from edgecnn.quantize import onnx as q
    from edgecnn.quantize.calibration import CalibrationData

    rng = np.random.default_rng(3)
    images = rng.uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    calib = CalibrationData("random", "image", images, (), layout="NCHW")
    pre = q.preprocess(files["model"], tmp_path)
    assert "depthwise" in {n.name for n in onnx.load(str(pre)).graph.node}
    out = q.quantize(pre, calib, tmp_path, float_layers=["depthwise"], types=q.quant_types("x86_64"))
    counts = float_ops_after_optimisation(out, tmp_path)
    assert counts["Conv"] == (0, 2)  # its float weight keeps the depthwise Conv out of the count
    assert describe_float_ops(counts) is None
    assert describe_float_ops({"Conv": (3, 52), "Add": (10, 10), "Gemm": (0, 1)}) == "3 of 52 Conv and 10 of 10 Add"


def test_unknown_architecture_is_refused_before_any_work(files, tmp_path):
    from edgecnn.quantize import quantize

    with pytest.raises(EdgecnnError, match="unknown architecture 'mips'"):
        quantize(files["model"], files["calib"], tmp_path / "out", backend="onnx", arch="mips")
    assert not (tmp_path / "out").exists()
