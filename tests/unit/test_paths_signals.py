"""Output and cache paths checked before the work, nothing of the user's deleted, SIGTERM like Ctrl-C,
stale temporaries of dead processes swept, folder modes from the umask (edgecnn/paths.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from edgecnn import paths
from edgecnn.paths import PathError
from fixtures import model_files as F

REPO = Path(__file__).resolve().parents[2]
MISSING = "missing-model.keras"  # a path error must come first: loading this would fail differently


pytestmark = pytest.mark.usefixtures("private_cache")  # tests/conftest.py


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("paths")
    (root / "afile").write_text("a file where a folder is wanted\n")
    return {"model": F.classifier(root / "m"), "calib": F.Q.make_calibration(root / "calib", 8), "root": root}


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} if root.is_dir() else {}


def _main(capsys, args: list[str]) -> tuple[int, str]:
    from edgecnn.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in err and "internal error" not in err, err
    return info.value.code, errors[0]


# ---------------------------------------------------------------------------- every path a command writes

def _compile(files, out, **kw):
    from edgecnn.compile import compile_model

    return compile_model(kw.pop("model", MISSING), "host", backend="tflite", output_dir=out, calib=files["calib"],
                         **kw)


def _quantize(files, out):
    from edgecnn.quantize import quantize

    return quantize(MISSING, files["calib"], out)


def _prune(files, out):
    from edgecnn.prune import prune

    return prune(MISSING, "channel", 0.3, output_dir=out, finetune_epochs=0)


def _plan(files, out):
    from edgecnn.bench.plan import make_plan

    return make_plan("host", models=[MISSING], data=str(files["calib"]), calib=str(files["calib"]))


AFILE = "{root}/afile"
# (case, library call, output path, CLI arguments or None, what the message says)
PATH_CASES = [
    ("compile-parent-is-file", _compile, AFILE + "/b", "compile {model} --target host -o {out}", "afile is a file"),
    ("compile-proc", _compile, "/proc/edgecnn-b", "compile {model} --target host -o {out}", "proc pseudo file system"),
    ("compile-sys", _compile, "/sys/edgecnn-b", "compile {model} --target host -o {out}", "sysfs pseudo"),
    ("compile-is-file", _compile, AFILE, None, "is a file, not a folder"),
    ("quantize-parent-is-file", _quantize, AFILE + "/q", "quantize {model} --calib {calib} -o {out}",
     "afile is a file"),
    ("quantize-proc", _quantize, "/proc/edgecnn-q", "quantize {model} --calib {calib} -o {out}", "pseudo file"),
    ("quantize-is-file", _quantize, AFILE, None, "is a file, not a folder"),
    ("prune-parent-is-file", _prune, AFILE + "/p", "prune {model} --method channel --ratio 0.3 -o {out}",
     "afile is a file"),
    ("prune-proc", _prune, "/proc/edgecnn-p", "prune {model} --method channel --ratio 0.3 -o {out}", "pseudo file"),
    ("bench-output-parent-is-file", None, AFILE + "/r.json", "bench --target host -o {out}", "afile is a file"),
    ("bench-output-proc", None, "/proc/edgecnn.md", "bench --target host -o {out}", "pseudo file"),
    ("bench-plot-parent-is-file", None, AFILE + "/p.png", "bench --target host --plot {out}", "afile is a file"),
    ("bench-plot-sys", None, "/sys/edgecnn.png", "bench --target host --plot {out}", "pseudo file"),
]


@pytest.mark.parametrize("case, call, out, argv, fragment", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_output_paths_are_refused_before_any_model_is_loaded(files, tmp_path, capsys, case, call, out, argv,
                                                            fragment):
    out = out.format(root=files["root"])
    before = _tree(files["root"])
    if call is not None:
        with pytest.raises(PathError, match=fragment) as info:
            call(files, out)
        assert out in str(info.value)
    if argv is not None:
        args = argv.format(model=MISSING, calib=files["calib"], out=out).split()
        code, line = _main(capsys, args)
        assert code == 1 and fragment in line and out in line, line
    assert _tree(files["root"]) == before and not (tmp_path / "cache").exists()


def test_the_wrong_kind_of_entry(files, tmp_path, capsys):
    with pytest.raises(PathError, match="is a folder; give a file name"):
        paths.check_output(tmp_path, "file", "--plot")
    with pytest.raises(PathError, match="character device, not a regular file"):
        paths.check_output("/dev/null", "file", "--output")  # a rename would replace the device
    code, line = _main(capsys, ["bench", "--target", "host", "-o", "/dev/null"])
    assert code == 1 and "/dev/null" in line
    assert paths.check_output(tmp_path / "new" / "deeper", "dir") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.parametrize("call", [_compile, _quantize, _prune, _plan], ids=["compile", "quantize", "prune", "bench"])
def test_cache_root_that_is_a_file(files, tmp_path, monkeypatch, call):
    cache = tmp_path / "cachefile"
    cache.write_text("not a folder\n")
    monkeypatch.setenv("EDGECNN_CACHE", str(cache))
    with pytest.raises(PathError, match=f"EDGECNN_CACHE {cache} is a file, not a folder"):
        call(files, tmp_path / "out")
    assert cache.read_text() == "not a folder\n" and not (tmp_path / "out").exists()
    with pytest.raises(PathError, match="EDGECNN_CACHE"):
        paths.cache_dir("zoo")  # any later user of the cache says the same


def test_cache_root_cli_and_unwritable(files, tmp_path, monkeypatch, capsys):
    (tmp_path / "cachefile").write_text("x")
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cachefile" / "sub"))
    code, line = _main(capsys, ["compile", MISSING, "--target", "host", "-o", str(tmp_path / "o")])
    assert code == 1 and "EDGECNN_CACHE" in line and "cachefile is a file" in line
    monkeypatch.setenv("EDGECNN_CACHE", "/proc/edgecnn-cache")
    code, line = _main(capsys, ["quantize", MISSING, "--calib", str(files["calib"]), "-o", str(tmp_path / "o")])
    assert code == 1 and "EDGECNN_CACHE /proc/edgecnn-cache is on the proc pseudo file system" in line
    assert not (tmp_path / "o").exists()


def test_read_only_no_permission_and_a_failing_probe(files, tmp_path, monkeypatch, capsys):
    real_statvfs, out = os.statvfs, str(tmp_path / "o")

    class ReadOnly:
        def __init__(self, p):
            self.f_flag = real_statvfs(p).f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", ReadOnly)
    with pytest.raises(PathError, match="read-only file system"):
        _compile(files, out)
    code, line = _main(capsys, ["compile", MISSING, "--target", "host", "-o", out])
    assert code == 1 and "read-only file system" in line
    monkeypatch.setattr(os, "statvfs", real_statvfs)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False)  # as root, chmod alone would not stop us
    with pytest.raises(PathError, match=f"no permission to write in {tmp_path}"):
        _quantize(files, out)
    monkeypatch.undo()
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))

    def full(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(paths.tempfile, "mkdtemp", full)
    with pytest.raises(PathError, match="cannot write in .*No space left on device"):
        paths.check_output(out, "dir", "--output")
    assert not Path(out).exists()


# ---------------------------------------------------------------------------- never delete what edgecnn did not write


def test_a_bundle_folder_with_a_users_file_is_refused_and_kept(files, tmp_path, capsys):
    out = tmp_path / "b"
    _compile(files, out, model=files["model"])
    (out / "notes.txt").write_bytes(b"my notes \x00\xff")
    before = _tree(out)
    with pytest.raises(PathError, match="notes.txt"):
        _compile(files, out, model=files["model"], precision="fp16")
    code, line = _main(capsys, ["compile", str(files["model"]), "--target", "host", "--calib", str(files["calib"]),
                                "-o", str(out)])
    assert code == 1 and "notes.txt" in line and "edgecnn did not write" in line
    assert _tree(out) == before
    (out / "notes.txt").unlink()
    (out / "plain").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("keep")
    with pytest.raises(PathError, match=r"not empty and not a bundle \(a.txt\)"):
        _compile(files, tmp_path / "mine", model=files["model"])
    with pytest.raises(PathError, match="plain"):  # a folder inside a bundle is not edgecnn's either
        _compile(files, out, model=files["model"])
    assert (tmp_path / "mine" / "a.txt").read_text() == "keep"


def test_an_old_bundle_is_replaced_and_an_empty_folder_used(files, tmp_path):
    out = tmp_path / "b"
    _compile(files, out, model=files["model"])
    assert (out / "model.tflite").is_file()
    half = _compile(files, out, model=files["model"], precision="fp16")
    assert half.bundle.manifest.precision == "fp16"
    listed = set(json.loads((out / "manifest.json").read_text())["files"].values())
    assert {p.name for p in out.iterdir()} == listed | {"manifest.json"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    (tmp_path / "empty").mkdir()
    assert _compile(files, tmp_path / "empty", model=files["model"]).bundle.path == tmp_path / "empty"


# ---------------------------------------------------------------------------- SIGINT and SIGTERM mid-build

SLOW_BUILD = """
import sys, time
from edgecnn.compile import tflite
real = tflite.build
def slow(job, out, work):
    built = real(job, out, work)
    time.sleep(120)  # the model file is there, the manifest not yet: the signal lands here at the latest
    return built
tflite.build = slow
from edgecnn.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("sig, code, line", [(signal.SIGINT, 130, "Error: interrupted"),
                                             (signal.SIGTERM, 143, "Error: terminated")], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_compile_leaves_nothing_and_a_rerun_works(files, tmp_path, capsys, sig, code, line):
    cache, tmp, out = tmp_path / "cache", tmp_path / "tmp", tmp_path / "b"
    tmp.mkdir()
    env = {**os.environ, "EDGECNN_CACHE": str(cache), "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    args = ["compile", str(files["model"]), "--target", "host", "--backend", "tflite", "--calib", str(files["calib"]),
            "-o", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    bundles = cache / "bundles"
    deadline = time.monotonic() + 180
    while not (bundles.is_dir() and any(p.name.startswith(".tmp-") for p in bundles.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    assert any(p.name.startswith(f"edgecnn-compile-{proc.pid}-") for p in tmp.iterdir())  # pid in the name
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code and err.strip().splitlines()[-1] == line, err
    assert "Traceback" not in err
    assert not out.exists() and list(bundles.iterdir()) == [] and list(tmp.iterdir()) == []
    from edgecnn.cli import main

    main(args + ["--format", "json"])  # the same command again, in full
    assert not json.loads(capsys.readouterr().out)["cached"] and (out / "manifest.json").is_file()


def _catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it has exited: the caller's poll() says so
        return False
    caught = int(next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("sig, code, line", [(signal.SIGINT, 130, "Error: interrupted"),
                                             (signal.SIGTERM, 143, "Error: terminated")], ids=["SIGINT", "SIGTERM"])
def test_runner_stops_on_a_signal_with_one_line(files, tmp_path, sig, code, line):
    bundle = _compile(files, tmp_path / "b", model=files["model"]).bundle.path
    proc = subprocess.Popen([sys.executable, "-m", "edgecnn.runner", str(bundle), "--runs", "100000000",
                             "--warmup", "0"], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _catches_sigterm(proc.pid):  # the handler is in place: the run has started
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code and err.strip().splitlines()[-1] == line and out == "", err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------- stale temporaries, folder modes


def _dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_sweep_removes_a_dead_processs_temporaries_and_keeps_a_live_ones(tmp_path, monkeypatch, capsys):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    dead, live = _dead_pid(), os.getppid()
    made = {}
    for where, name in ((tmp_path / "cache" / "bundles", ".tmp-{key}-{pid}-abcd1234"),
                        (tmp_path / "cache" / "pruned", ".tmp-{key}-{pid}-x_9y8z7w"),
                        (tmp, "edgecnn-compile-{pid}-qwertyui")):
        for state, pid in (("dead", dead), ("live", live)):
            p = where / name.format(key="0f" * 16, pid=pid)
            p.mkdir(parents=True)
            (p / "model.tflite").write_bytes(b"half")
            made[p] = state
    other = [tmp / "edgecnn-compile-abc", tmp / "notours-123-abcdefgh", tmp_path / "cache" / "bundles" / ("0f" * 16)]
    for p in other:
        p.mkdir(parents=True, exist_ok=True)
    (tmp / "edgecnn-bench-1-abcdefgh").write_text("pid 1 is alive")
    removed = paths.sweep_stale_temporaries()
    assert set(removed) == {p for p, state in made.items() if state == "dead"}
    assert all(p.exists() for p, state in made.items() if state == "live") and all(p.exists() for p in other)
    again = tmp / f"edgecnn-quantize-{dead}-abcdefgh"
    again.mkdir()
    from edgecnn.cli import main

    main(["targets", "--format", "json"])  # every command sweeps at start
    capsys.readouterr()
    assert not again.exists() and (tmp / "edgecnn-bench-1-abcdefgh").exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o002, 0o775)])
def test_bundle_folders_follow_the_umask(files, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        result = _compile(files, tmp_path / "b", model=files["model"])
        with paths.atomic_dir(tmp_path / "cache" / "pruned" / "k") as folder:
            (folder / "m.keras").write_bytes(b"x")
        paths.atomic_write_bytes(tmp_path / "report.md", b"# r\n")
    finally:
        os.umask(old)
    cached = next(p for p in (tmp_path / "cache" / "bundles").iterdir())
    for folder in (result.bundle.path, cached, tmp_path / "cache" / "pruned" / "k"):
        assert folder.stat().st_mode & 0o777 == mode, folder
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == mode & 0o666


def test_an_interrupt_that_breaks_a_library_mid_import_is_still_the_interrupt(monkeypatch, capsys):
    # Ctrl-C inside TensorFlow's import surfaced as "AttributeError: 'dict' object has no attribute
    # '_type_spec'" and exit 70: the signal, not the library's broken state, is what the user must hear.
    from edgecnn import cli, paths

    def broken(**kwargs):
        signal.raise_signal(signal.SIGINT)  # through process_scope's handler, as a real Ctrl-C

    def fails_later(**kwargs):
        try:
            broken()
        except KeyboardInterrupt:
            pass  # swallowed half-way by a library, which then fails in its own way
        raise AttributeError("'dict' object has no attribute '_type_spec'")

    monkeypatch.setattr(paths, "_STOPPED_BY", [])
    monkeypatch.setattr(cli.cli, "main", fails_later)
    with pytest.raises(SystemExit) as done:
        cli.main(["zoo"])
    assert done.value.code == 130 and capsys.readouterr().err.strip().splitlines()[-1] == "Error: interrupted"
    monkeypatch.setattr(paths, "_STOPPED_BY", [])
    monkeypatch.setattr(cli.cli, "main", lambda **kw: (_ for _ in ()).throw(AttributeError("a bug")))
    with pytest.raises(SystemExit) as done:
        cli.main(["zoo"])
    assert done.value.code == 70 and "internal error: AttributeError: a bug" in capsys.readouterr().err
