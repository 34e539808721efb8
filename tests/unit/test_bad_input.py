"""The bad-input suite: every command, fed what a new user gets wrong, answers in one line and loses nothing.

Each case is (id, argv, expected exit code, fragment of the `Error:` line). The command runs in this
process through `edgecnn.cli.main` (the imports are paid once), in a work folder with every fixture in it;
afterwards stderr must hold exactly one `Error:` line, no traceback, no internal error (exit 70), and no
file in the work folder or the cache may have been created, changed or removed. The interrupt cases at
the end run real subprocesses and send SIGINT / SIGTERM mid-run, then run the same command again.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecnn.cli import main
from fixtures import colors, model_files

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One folder holding every fixture the cases name as {name}."""
    import onnx
    from onnx import TensorProto, helper

    root = tmp_path_factory.mktemp("bad")
    model = colors.save_model(root / "m", colors.color_model(), name="mine")
    colors.save_model(root / "nosidecar", colors.color_model(), name="bare", sidecar=False)
    colors.make_calibration(root / "calib", 12)
    colors.make_val(root / "val")
    (root / "emptydir").mkdir()
    _write(root / "afile", "not a folder\n")
    model_files.corrupt(root / "c", ".onnx")
    model_files.corrupt(root / "c", ".tflite")
    _write(root / "c" / "empty.keras", b"")
    _write(root / "c" / "text.keras", "hello\n")
    _write(root / "side" / "badtask.json", json.dumps({"task": "ranking", "preprocessing": colors.PREPROCESSING}))
    (root / "side" / "badtask.keras").write_bytes(model.read_bytes())
    _write(root / "side" / "notjson.json", "{not json")
    (root / "side" / "notjson.keras").write_bytes(model.read_bytes())
    # An ONNX model whose input is a (1, 10) vector, not an image batch.
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "vec",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    (root / "vec").mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), root / "vec" / "vector.onnx")
    model_files.sidecar(root / "vec" / "vector.onnx")
    a72 = (REPO / "targets" / "a72.toml").read_text()
    _write(root / "t" / "latin1.toml", a72.replace('description = "', 'description = "caf\xe9 ').encode("latin-1"))
    _write(root / "t" / "badtvm.toml", a72.replace('name = "a72"', 'name = "badtvm"').replace(
        "aliases = [", "aliases = [] #").replace("num-cores = 4", 'num-cores = "four"'))
    _write(root / "base" / "rows.json", json.dumps({"target": "host", "results": ["mobilenet_v1"]}))
    _write(root / "base" / "notjson.json", "results: none")
    (root / "base" / "adir.json").mkdir()
    user_bundle = root / "userdir"
    _write(user_bundle / "notes.txt", "my notes, not edgecnn's\n")
    bundle = root / "bundle"
    bundle.mkdir()
    _write(bundle / "manifest.json", json.dumps({"format": 1, "name": "x", "inputs": ["image"]}))
    return root


# id, argv ({name} = a path in the work folder), exit code, fragment of the Error line
CASES = [
    # targets / zoo
    ("target-unknown", "targets show pi9", 1, "unknown target 'pi9'"),
    ("target-missing-file", "targets show {t}/none.toml", 1, "target file not found"),
    ("target-not-utf8", "targets show {t}/latin1.toml", 1, "latin1.toml"),
    ("target-bad-tvm-field", "targets show {t}/badtvm.toml", 1, "num-cores"),
    ("zoo-unknown", "zoo show resnet50", 1, "unknown model 'resnet50'"),
    ("zoo-corrupt-onnx", "zoo show {c}/broken.onnx", 1, "broken.onnx"),
    # prune
    ("prune-unknown-model", "prune resnet50 --method channel --ratio 0.3 -o {out}", 1, "unknown model 'resnet50'"),
    ("prune-missing-file", "prune {m}/gone.keras --method channel --ratio 0.3 -o {out}", 1, "model file not found"),
    ("prune-bad-method", "prune {model} --method random --ratio 0.3 -o {out}", 2, "--method"),
    ("prune-ratio-range", "prune {model} --method channel --ratio 1.5 -o {out}", 2, "--ratio"),
    ("prune-epochs-negative", "prune {model} --method channel --ratio 0.3 --finetune-epochs -1 -o {out}", 2,
     "--finetune-epochs"),
    ("prune-bn-magnitude", "prune {model} --method magnitude --ratio 0.3 --importance bn --finetune-epochs 0 "
     "-o {out}", 1, "importance 'bn'"),
    ("prune-onnx", "prune {c}/broken.onnx --method channel --ratio 0.3 --finetune-epochs 0 -o {out}", 1,
     "broken.onnx"),
    ("prune-no-train-data", "prune {model} --method channel --ratio 0.3 -o {out}", 1, "--data"),
    ("prune-output-under-file", "prune {model} --method channel --ratio 0.3 --finetune-epochs 0 -o {afile}/out",
     1, "afile"),
    # quantize
    ("quantize-unknown-model", "quantize resnet50 --calib {calib} -o {out}", 1, "unknown model 'resnet50'"),
    ("quantize-missing-file", "quantize {m}/gone.keras --calib {calib} -o {out}", 1, "model file not found"),
    ("quantize-empty-file", "quantize {c}/empty.keras --calib {calib} -o {out}", 1, "empty"),
    ("quantize-not-a-zip", "quantize {c}/text.keras --calib {calib} -o {out}", 1, "text.keras"),
    ("quantize-corrupt-onnx", "quantize {c}/broken.onnx --calib {calib} -o {out}", 1, "broken.onnx"),
    ("quantize-corrupt-tflite", "quantize {c}/broken.tflite --calib {calib} -o {out}", 1, "broken.tflite"),
    ("quantize-no-sidecar", "quantize {nosidecar}/bare.keras --calib {calib} -o {out}", 1, "bare.json"),
    ("quantize-sidecar-task", "quantize {side}/badtask.keras --calib {calib} -o {out}", 1, "unknown task 'ranking'"),
    ("quantize-sidecar-json", "quantize {side}/notjson.keras --calib {calib} -o {out}", 1, "notjson.json"),
    ("quantize-not-an-image-model", "quantize {vec}/vector.onnx --backend onnx --calib {calib} -o {out}", 1,
     "image"),
    ("quantize-calib-empty", "quantize {model} --calib {emptydir} -o {out}", 1, "no images"),
    ("quantize-calib-is-file", "quantize {model} --calib {afile} -o {out}", 1, "not a folder"),
    ("quantize-calib-unknown", "quantize {model} --calib street -o {out}", 1, "unknown calibration set 'street'"),
    ("quantize-val-missing", "quantize {model} --calib {calib} --val {m}/noval -o {out}", 1, "noval"),
    ("quantize-fallback-alone", "quantize {model} --calib {calib} --fallback -o {out}", 1, "--max-drop"),
    ("quantize-max-drop-negative", "quantize {model} --calib {calib} --max-drop -1 -o {out}", 2, "--max-drop"),
    ("quantize-method-backend", "quantize {model} --calib {calib} --method entropy -o {out}", 1,
     "calibrates with"),
    ("quantize-io-backend", "quantize {model} --calib {calib} --backend onnx --io int8 -o {out}", 1, "--io float"),
    ("quantize-bad-backend", "quantize {model} --calib {calib} --backend tvm -o {out}", 2, "--backend"),
    ("quantize-output-is-file", "quantize {model} --calib {calib} -o {afile}", 2, "afile"),
    ("quantize-output-under-file", "quantize {model} --calib {calib} -o {afile}/q", 1, "afile"),
    ("quantize-output-proc", "quantize {model} --calib {calib} -o /proc/edgecnn-q", 1, "/proc/edgecnn-q"),
    # compile
    ("compile-unknown-target", "compile {model} --target pi9 -o {out}", 1, "unknown target 'pi9'"),
    ("compile-target-not-utf8", "compile {model} --target {t}/latin1.toml -o {out}", 1, "latin1.toml"),
    ("compile-target-bad-tvm", "compile {model} --target {t}/badtvm.toml -o {out}", 1, "num-cores"),
    ("compile-bad-backend", "compile {model} --target host --backend coreml -o {out}", 2, "--backend"),
    ("compile-bad-precision", "compile {model} --target host --precision int4 -o {out}", 2, "--precision"),
    ("compile-tvm-int8", "compile {model} --target a72 --backend tvm --precision int8 -o {out}", 1, "no int8"),
    ("compile-onnx-fp16", "compile {model} --target host --backend onnx --precision fp16 -o {out}", 1,
     "--backend tflite"),
    ("compile-tune-tflite", "compile {model} --target host --backend tflite --tune -o {out}", 1, "nothing to tune"),
    ("compile-trials-zero", "compile {model} --target host --backend tvm --tune --trials 0 -o {out}", 2,
     "--trials"),
    ("compile-unknown-model", "compile resnet50 --target host -o {out}", 1, "unknown model 'resnet50'"),
    ("compile-corrupt-onnx", "compile {c}/broken.onnx --target host --backend onnx -o {out}", 1, "broken.onnx"),
    ("compile-not-an-image-model", "compile {vec}/vector.onnx --target host --backend onnx -o {out}", 1, "image"),
    ("compile-int8-no-calib", "compile {model} --target host --precision int8 -o {out}", 1, "--calib"),
    ("compile-int8-empty-calib", "compile {model} --target host --precision int8 --calib {emptydir} -o {out}", 1,
     "no images"),
    ("compile-output-under-file", "compile {model} --target host -o {afile}/b", 1, "afile"),
    ("compile-output-proc", "compile {model} --target host -o /proc/edgecnn-b", 1, "/proc/edgecnn-b"),
    ("compile-output-user-files", "compile {model} --target host -o {userdir}", 1, "notes.txt"),
    ("compile-cache-is-file", "compile {model} --target host -o {out}", 1, "EDGECNN_CACHE"),
    # bench
    ("bench-unknown-target", "bench --target pi9", 1, "unknown target 'pi9'"),
    ("bench-bad-precision", "bench --target host --precision fp32,int4", 2, "int4"),
    ("bench-bad-backend", "bench --target host --backend tflite,coreml", 2, "coreml"),
    ("bench-limit-zero", "bench --target host --limit 0", 2, "--limit"),
    ("bench-runs-zero", "bench --target host --runs 0", 2, "--runs"),
    ("bench-device-and-emulate", "bench --target a72 --device pi@board --emulate", 1, "exclude each other"),
    ("bench-device-malformed", "bench --target a72 --device pi@:99999", 1, "--device"),
    ("bench-data-missing", "bench --target host --model mobilenet_v1 --data {m}/nodata", 1, "nodata"),
    ("bench-prune-ratio", "bench --target host --prune channel:2", 1, "between 0 and 1"),
    ("bench-baseline-dir", "bench --target host --baseline {base}/adir.json", 1, "adir.json"),
    ("bench-baseline-rows", "bench --target host --baseline {base}/rows.json", 1, "rows.json"),
    ("bench-baseline-not-json", "bench --target host --baseline {base}/notjson.json", 1, "notjson.json"),
    ("bench-baseline-missing", "bench --target host --baseline {base}/none.json", 1, "none.json"),
    ("bench-output-under-file", "bench --target host -o {afile}/r.json", 1, "afile"),
    ("bench-plot-proc", "bench --target host --plot /proc/edgecnn.png", 1, "/proc/edgecnn.png"),
    ("bench-user-int8-no-calib", "bench --target host --model {model} --precision int8 --data {val}", 1, "--calib"),
    # emulator
    ("emulator-unknown-target", "emulator setup --target pi9", 1, "unknown target 'pi9'"),
]


def _files(root: Path) -> dict[str, str]:
    found = {}
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.is_file():
                found[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


@pytest.mark.parametrize("case, argv, code, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_early_and_changes_nothing(work, tmp_path, monkeypatch, capsys, case, argv, code,
                                                         fragment):
    cache = tmp_path / "cache"
    if case == "compile-cache-is-file":
        _write(cache, "a file where the cache folder should be\n")
    monkeypatch.setenv("EDGECNN_CACHE", str(cache))
    names = {p.name: str(p) for p in work.iterdir()}
    names.update(model=str(work / "m" / "mine.keras"), out=str(tmp_path / "out"))
    args = [a.format(**names) for a in argv.split()]
    before, cache_before = _files(work), _files(cache) if cache.is_dir() else {}
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert exit_info.value.code == code, f"exit {exit_info.value.code}, stderr: {err}"
    assert len(errors) == 1 and fragment in errors[0], err
    assert "Traceback" not in err and "internal error" not in err
    assert _files(work) == before, "a bad input changed the fixtures"
    assert (_files(cache) if cache.is_dir() else {}) == cache_before, "a bad input wrote into the cache"
    assert not (tmp_path / "out").exists(), "a bad input created the output"


def test_the_suite_covers_every_command():
    from edgecnn.cli import cli

    covered = {argv.split()[0] for _, argv, _, _ in CASES}
    assert covered >= set(cli.commands) - {"zoo", "targets"} and len(CASES) >= 60


# ------------------------------------------------------------------------- interrupts, as a CI timeout sends


def _edgecnn(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgecnn", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupted_quantize_writes_nothing_and_reruns(work, tmp_path, sig, code):
    env = {**os.environ, "EDGECNN_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "q"
    args = ["quantize", str(work / "m" / "mine.keras"), "--calib", str(work / "calib"), "-o", str(out)]
    proc = _edgecnn(args, env)
    # Interrupt once quantize has its work folder: past the argument checks, in the middle of the run.
    started = _wait_for(lambda: any((tmp_path / "tmp").glob("edgecnn-quantize-*")), 120)
    assert started, proc.communicate()[1]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (code, 130), err
    assert [ln for ln in err.splitlines() if ln.startswith("Error: ")][-1] in ("Error: interrupted",
                                                                              "Error: terminated"), err
    assert not out.exists() or not any(out.iterdir()), "an interrupted quantize left files"
    assert not any((tmp_path / "tmp").iterdir()), "an interrupted quantize left its temporary folder"
    again = subprocess.run([sys.executable, "-m", "edgecnn", *args], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert (out / "mine-int8.tflite").is_file()
