"""edgecnn.compile on tiny models: every backend for host and a72, manifests, cache, atomicity, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecnn.artifacts import load_bundle
from edgecnn.compile import COMPILERS, compile_model
from edgecnn.compile.verify import elf_machine
from edgecnn.errors import DataError, EdgecnnError, ModelError, TargetError, ToolError
from fixtures import model_files as F


pytestmark = pytest.mark.usefixtures("private_cache")  # tests/conftest.py


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("compile")
    return {"model": F.classifier(root / "m"), "calib": F.Q.make_calibration(root / "calib", 12),
            "dets": F.detector(root / "d"), "root": root}


def _compile(files, target, out, **kw):
    kw.setdefault("calib", files["calib"])
    return compile_model(kw.pop("model", files["model"]), target, output_dir=out, **kw)


def test_registry_covers_every_backend():
    from edgecnn.artifacts import Backend
    from edgecnn.compile import compiler

    assert set(COMPILERS) == {b.value for b in Backend}
    for name in COMPILERS:
        mod = compiler(name)
        assert all(hasattr(mod, f) for f in ("check", "tools", "build", "host_runner"))


@pytest.mark.parametrize("target", ["host", "a72"])
@pytest.mark.parametrize("backend, suffix", [("tflite", ".tflite"), ("onnx", ".onnx"), ("tvm", ".so")])
def test_bundle_per_backend_and_target(files, tmp_path, target, backend, suffix):
    out = tmp_path / "bundle"
    r = _compile(files, target, out, backend=backend)
    assert not r.cached and r.bundle.path == out
    b = load_bundle(out)
    m = b.manifest
    assert m.files == {"model": f"model{suffix}"} and m.backend == backend and m.precision == "fp32"
    assert m.target == target and m.task == "classification" and m.postprocess is None
    assert m.inputs[0].shape[1:] == [32, 32, 3] and m.inputs[0].dtype == "float32" and m.outputs[0].shape[-1] == 4
    assert m.preprocessing["size"] == [32, 32] and m.classes == F.Q.CLASSES
    assert m.source["format"] == "keras" and len(m.source["sha256"]) == 64 and m.cache_key
    assert m.macs and m.params == 28
    ver = m.verification
    if backend == "tvm":
        assert elf_machine(b.file()) == m.arch == ver["elf"]["machine"]
        assert m.arch == ("aarch64" if target == "a72" else "x86_64") or target == "host"
        opts = m.backend_options
        assert opts == {"device": "cpu", "entry": "main", "threads": 4 if target == "a72" else opts["threads"]}
        assert {"apache-tvm", "apache-tvm-ffi"} <= set(m.tools) and m.build["tvm_target"]["kind"] == "llvm"
        if target == "a72":
            assert m.tools["aarch64-linux-gnu-g++"] and m.build["tvm_target"]["mcpu"] == "cortex-a72"
            assert ver["status"] == "skipped" and "emulator" in ver["reason"]  # never claimed when not run
            return
        assert m.build["tvm_target"]["mcpu"] and m.build["tvm_target"]["num-cores"] >= 1
    if backend == "tflite":
        opts = m.backend_options
        assert opts["delegate"] == "xnnpack" and opts["threads"] == (4 if target == "a72" else opts["threads"])
    if backend == "onnx":
        assert m.backend_options["execution_provider"] == "CPUExecutionProvider"
    assert ver["status"] == "passed" and ver["mode"] == "host" and ver["images"] == 4
    assert ver["max_abs_diff"] < 1e-3 and ver["cosine"] > 0.9999 and ver["outputs"][0]["top1_agreement"] == 1.0


def test_detector_manifest_and_jetson_onnx_provider(files, tmp_path):
    r = _compile(files, "jetson-orin", tmp_path / "b", model=files["dets"], backend="onnx")
    m = r.bundle.manifest
    assert m.task == "detection" and m.head["anchors"] == F.ANCHORS
    assert m.head["type"] == "yolo_region"
    assert m.postprocess == {"conf_threshold": 0.005, "iou_threshold": 0.45,
                             "max_detections": 100}
    assert m.backend_options["execution_provider"] == "TensorrtExecutionProvider"
    assert m.verification["status"] == "passed" and "note" in m.verification


def test_int8_and_fp16_tflite(files, tmp_path):
    r = _compile(files, "a53", tmp_path / "q", backend="tflite", precision="int8")
    m = r.bundle.manifest
    assert m.precision == "int8" and m.inputs[0].dtype == "int8" and m.inputs[0].scale > 0
    assert m.outputs[0].zero_point is not None and m.verification["status"] == "passed"
    assert m.verification["quantization"]["calibration"]["images"] >= 1
    # An already-int8 file is bundled as it is (its own precision is the default); asking it for fp32 is refused.
    int8_file = files["root"] / "colors-int8.tflite"
    int8_file.write_bytes(r.bundle.file().read_bytes())
    F.sidecar(int8_file)
    again = compile_model(int8_file, "a72", backend="tflite", precision="int8", output_dir=tmp_path / "q2")
    assert again.bundle.file().read_bytes() == int8_file.read_bytes()
    assert compile_model(int8_file, "a72", backend="tflite").bundle.manifest.precision == "int8"
    with pytest.raises(ModelError, match="already int8"):
        compile_model(int8_file, "a72", backend="tflite", precision="fp32", output_dir=tmp_path / "q3")
    half = _compile(files, "a76", tmp_path / "h", backend="tflite", precision="fp16")
    assert half.bundle.manifest.precision == "fp16" and half.bundle.manifest.verification["status"] == "passed"


def test_boards_of_one_architecture_share_the_int8_model_and_the_exports(files, tmp_path, monkeypatch):
    """The a72 int8 bundle reuses the a53's quantization (same file, same figures), and a Keras source is
    exported for the TFLite converter once; an x86 int8 model has a key of its own."""
    import edgecnn.quantize as quantize
    from edgecnn.compile.job import Job, quantized_key
    from edgecnn.frameworks import tf as etf
    from edgecnn.source import load_source
    from edgecnn.targets import get_target

    a53 = _compile(files, "a53", tmp_path / "a53", backend="tflite", precision="int8")

    def again(*_args, **_kw):
        raise AssertionError("made a second time")

    monkeypatch.setattr(quantize, "quantize", again)
    monkeypatch.setattr(etf, "_export_saved_model", again)
    a72 = _compile(files, "a72", tmp_path / "a72", backend="tflite", precision="int8")
    assert not a72.cached and a72.bundle.manifest.cache_key != a53.bundle.manifest.cache_key
    assert a72.bundle.file().read_bytes() == a53.bundle.file().read_bytes()
    assert a72.bundle.manifest.verification["quantization"] == a53.bundle.manifest.verification["quantization"]
    assert a72.bundle.manifest.verification["status"] == "passed"
    source = load_source(files["model"])
    kept = _compile(files, "a72", tmp_path / "fp32", backend="tflite").bundle.file().read_bytes()
    assert kept == etf.tflite_float(source)  # read back, not converted (nothing may export again)
    monkeypatch.undo()
    direct = etf.tflite_float(source.keras_model)  # from_keras_model, exporting to a temporary folder
    assert len(direct) == len(kept) and sum(a != b for a, b in zip(direct, kept)) <= 1  # the source-format byte
    keys = {quantized_key(Job(source, get_target(t), "tflite", "int8", files["calib"]), "tflite")
            for t in ("a53", "a72", "host")}
    assert len(keys) == 2


def test_cache_hit_and_new_key_on_changed_input(files, tmp_path):
    first = _compile(files, "host", tmp_path / "a", backend="onnx")
    second = _compile(files, "host", tmp_path / "b", backend="onnx")
    assert second.cached and second.bundle.manifest.cache_key == first.bundle.manifest.cache_key
    assert (tmp_path / "b" / "model.onnx").read_bytes() == (tmp_path / "a" / "model.onnx").read_bytes()
    other = F.Q.save_model(tmp_path / "m2", F.Q.color_model(fragile=True))
    third = _compile(files, "host", tmp_path / "c", backend="onnx", model=other)
    assert not third.cached and third.bundle.manifest.cache_key != first.bundle.manifest.cache_key
    in_cache = compile_model(files["model"], "host", backend="onnx", calib=files["calib"])
    assert in_cache.cached and in_cache.bundle.path.parent.name == "bundles"


def test_interrupted_compile_leaves_nothing(files, tmp_path, monkeypatch):
    from edgecnn.compile import tflite

    real = tflite.build

    def interrupted(job, out, work):
        real(job, out, work)  # the model file is there, the manifest not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(tflite, "build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _compile(files, "host", tmp_path / "out", backend="tflite")
    bundles = tmp_path / "cache" / "bundles"
    assert not (tmp_path / "out").exists()
    assert not bundles.exists() or list(bundles.iterdir()) == []
    monkeypatch.setattr(tflite, "build", real)
    assert not _compile(files, "host", tmp_path / "out", backend="tflite").cached


def test_output_folder_that_is_not_a_bundle_is_refused(files, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(EdgecnnError, match="not empty and not a bundle"):
        _compile(files, "host", tmp_path / "mine", backend="tflite")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_library_errors(files, tmp_path):
    with pytest.raises(TargetError, match="unknown target"):
        _compile(files, "pi9", tmp_path / "x")
    only_tflite = F.target_file(tmp_path, "a72", "tfonly", backends=["tflite"])
    with pytest.raises(TargetError, match="cannot run the tvm backend"):
        _compile(files, str(only_tflite), tmp_path / "x", backend="tvm")
    with pytest.raises(ModelError, match="--backend tflite.*--backend onnx"):
        _compile(files, "a72", tmp_path / "x", backend="tvm", precision="int8")
    with pytest.raises(DataError, match="--calib"):
        compile_model(files["model"], "a72", backend="onnx", precision="int8", output_dir=tmp_path / "x")
    with pytest.raises(ToolError, match="needs the board"):
        _compile(files, "a72", tmp_path / "x", backend="tvm", tune=True, trials=4)


# ---------------------------------------------------------------- the CLI: one `Error:` line, exit 1


def _cli(capsys, *args) -> str:
    from edgecnn.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["compile", *args, "--format", "json"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1, err
    assert err.startswith("Error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_cli_errors(files, tmp_path, capsys):
    model, out = str(files["model"]), str(tmp_path / "o")
    assert "unknown target 'pi9'" in _cli(capsys, model, "--target", "pi9", "-o", out)
    tfonly = F.target_file(tmp_path, "a72", "tfonly", backends=["tflite"])
    assert "cannot run the onnx backend" in _cli(capsys, model, "--target", str(tfonly), "--backend", "onnx", "-o", out)
    nocc = F.target_file(tmp_path, "a72", "nocc", cross_compiler="no-such-aarch64-g++")
    err = _cli(capsys, model, "--target", str(nocc), "--backend", "tvm", "-o", out)
    assert "no-such-aarch64-g++ not found" in err and "sudo apt-get install g++-aarch64-linux-gnu" in err
    err = _cli(capsys, str(F.unsupported_onnx(tmp_path / "celu")), "--target", "host", "--backend", "tvm", "-o", out)
    assert "TVM cannot import celu" in err and "Celu" in err
    for suffix in (".onnx", ".tflite", ".keras"):
        err = _cli(capsys, str(F.corrupt(tmp_path / "bad", suffix)), "--target", "host", "-o", out)
        assert "cannot read" in err or "cannot load" in err, err
    err = _cli(capsys, model, "--target", "a72", "--backend", "tvm", "--precision", "int8", "-o", out)
    assert "no int8" in err and "--backend tflite" in err
    assert "needs the board" in _cli(capsys, model, "--target", "a72", "--backend", "tvm", "--tune", "-o", out)
    assert not Path(out).exists()


def test_cli_json_output(files, tmp_path, capsys):
    from edgecnn.cli import main

    main(["compile", str(files["model"]), "--target", "a53", "--calib", str(files["calib"]), "-o",
          str(tmp_path / "b"), "--format", "json"])  # returns normally on success
    data = json.loads(capsys.readouterr().out)
    assert data["manifest"]["backend"] == "tflite" and data["bundle"] == str(tmp_path / "b") and not data["cached"]
    assert np.isclose(data["manifest"]["verification"]["cosine"], 1.0)


def _one_kernel_onnx(folder: Path) -> Path:
    """The smallest model that tunes: one MatMul over the channels, so MetaSchedule has exactly one task."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 32, 32, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 32, 4])
    w = numpy_helper.from_array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["y"])], "mix", [x], [y], initializer=[w])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mix.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    F.sidecar(path, task="generic")
    return path


@pytest.mark.slow
def test_tuning_records_persist_and_resume(tmp_path):
    """A real MetaSchedule run on the host: records land in the cache, the same call reuses the tuned bundle,
    and a larger budget tunes only what is missing on top of the records already there."""
    from edgecnn.compile.tune import RECORDS, record_count

    model = _one_kernel_onnx(tmp_path / "m")
    first = compile_model(model, "host", backend="tvm", tune=True, trials=2, output_dir=tmp_path / "t1")
    tuning = first.bundle.manifest.build["tuning"]
    assert tuning["tasks"] == 1 and tuning["records_before"] == 0 and tuning["records"] == 2
    assert first.bundle.manifest.verification["status"] == "passed" and not tuning["rejected_schedules"]
    # The weight is a bound constant: a schedule that packs it gets it packed at build time, never per call.
    assert tuning["repacked_per_call"] == [] and tuning["prepacked_kernels"] in (0, 1)
    database = Path(tuning["database"])
    kept = (database / RECORDS).read_text().splitlines()
    assert record_count(database) == 2 and all(json.loads(line) for line in kept)
    # The applied record is the one of the (up to) 2 that was fastest re-measured with the caches flushed.
    chosen = tuning["selection"]
    assert chosen["workloads"] == 1 and 1 <= chosen["remeasured"] <= 2 and chosen["changed"] in (0, 1)
    (selected,) = database.glob("selected-*")
    assert record_count(selected) == 1

    again = compile_model(model, "host", backend="tvm", tune=True, trials=2, output_dir=tmp_path / "t2")
    assert again.cached  # same model, target and database: the tuned bundle is reused, nothing tuned
    assert (database / RECORDS).read_text().splitlines() == kept

    more = compile_model(model, "host", backend="tvm", tune=True, trials=4, output_dir=tmp_path / "t3")
    resumed = more.bundle.manifest.build["tuning"]
    assert not more.cached and resumed["database"] == tuning["database"]
    assert resumed["records_before"] == 2 and resumed["records"] == 4  # 2 new trials, not 4
    assert (database / RECORDS).read_text().splitlines()[:2] == kept  # appended, the old records untouched
    (reselected,) = database.glob("selected-*")  # chosen again from the 4 records; the old choice removed
    assert reselected != selected and resumed["selection"]["remeasured"] >= chosen["remeasured"]
    assert more.bundle.manifest.verification["status"] == "passed"


def test_a_tuned_keras_build_imports_the_nhwc_tflite_graph(files, tmp_path):
    # MetaSchedule's x86 schedules vectorise the innermost axis: channels in NHWC, short rows in NCHW
    # (tools/nhwc_kernels.py). Untuned builds keep the ONNX route; the tuning key says which graph it tunes.
    from tvm import relax

    from edgecnn.compile.job import Job
    from edgecnn.compile.tvm import import_module
    from edgecnn.source import load_source
    from edgecnn.targets import get_target

    source = load_source(files["model"])
    layouts = {}
    for tune in (True, False):
        mod, names, graph = import_module(Job(source, get_target("host"), "tvm", "fp32", tune=tune), tmp_path)
        convs = []
        relax.analysis.post_order_visit(mod["main"].body, lambda e: convs.append(e.attrs.data_layout) if (
            isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.nn.conv2d") else None)
        layouts[graph] = set(convs)
        assert len(names) == 1
    assert layouts == {"tflite-nhwc": {"NHWC"}, "onnx-nchw": {"NCHW"}}


def test_meta_schedule_console_log_stays_off_stdout(tmp_path):
    # MetaSchedule points a console handler at sys.stdout whenever it sets up a tuning run; its tables
    # once came before `bench --format json`'s JSON and broke it. (Checked on the handlers: a capture
    # fixture's own sys.stderr would be closed by the dictConfig that MetaSchedule runs.)
    import logging
    import sys

    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir

    from edgecnn.compile.tune import _meta_schedule_console

    logger = logging.getLogger("tvm.s_tir.meta_schedule")

    def consoles():
        return [h for h in logger.handlers if (h.get_name() or "").endswith(".console")]

    stdout = sys.stdout
    with _meta_schedule_console():
        get_loggers_from_work_dir(str(tmp_path), ["task"])
        assert consoles() and all(h.stream not in (stdout, sys.__stdout__) for h in consoles())
        logger.info("a task table line")
    assert consoles() == []
    assert "a task table line" in (tmp_path / "logs" / "tvm.s_tir.meta_schedule.logging.task_scheduler.log").read_text()


def _build_in_child(owner: int, result) -> None:
    import tvm
    from tvm import te

    from edgecnn.compile.tune import build_candidate

    a = te.placeholder((8,), name="a")
    b = te.compute((8,), lambda i: a[i] + 1.0, name="b")
    result.put(build_candidate(tvm.IRModule({"main": te.create_prim_func([a, b])}), tvm.target.Target("llvm"),
                               owner=owner))


def test_a_candidate_outlives_the_builder_worker_that_made_it(tmp_path):
    # A builder worker is recycled (WORKER_USES) before the runner measures its last candidates; another
    # edgecnn command's start-up sweep then removed them (a named pid that is gone) and the tuning run died.
    import multiprocessing
    import os

    from edgecnn.paths import sweep_stale_temporaries

    ctx = multiprocessing.get_context("spawn")
    result = ctx.Queue()
    worker = ctx.Process(target=_build_in_child, args=(os.getpid(), result))
    worker.start()
    path = Path(result.get(timeout=120))
    worker.join(timeout=60)
    assert worker.exitcode == 0 and path.is_file() and f"-{os.getpid()}-" in path.parent.name
    try:
        assert path.parent not in sweep_stale_temporaries() and path.is_file()  # its owner, the tuner, lives
    finally:
        import shutil

        shutil.rmtree(path.parent, ignore_errors=True)


def test_tuning_database_is_keyed_by_the_kernels_not_the_weights(tmp_path):
    # weights="random" hashes differently on every load: keyed by it, no run could resume another's records.
    from edgecnn.compile.tune import kernels_key
    from edgecnn.source import load_source

    a, b = (load_source(F.Q.save_model(tmp_path / name, model)) for name, model in (
        ("a", F.Q.color_model()), ("b", F.Q.color_model(fragile=True))))
    assert a.sha256 != b.sha256 and kernels_key(a) == kernels_key(b)  # same layers, other weights
    assert kernels_key(load_source(F.detector(tmp_path / "d"))) != kernels_key(a)  # other layers
    onnx_model = load_source(_one_kernel_onnx(tmp_path / "m"))
    assert kernels_key(onnx_model) == onnx_model.sha256


def test_zoo_model_hash_does_not_depend_on_what_the_process_built_before():
    # Keras names auto-named layers per process (conv2d, conv2d_1, ...): the key must not see that.
    from edgecnn.source import load_source

    first = load_source("mobilenet_v2").sha256  # keras.applications: an auto-named input layer
    assert load_source("mobilenet_v2").sha256 == first
    assert load_source("mobilenet_v2", weights="random").sha256 != first  # the weights still count
