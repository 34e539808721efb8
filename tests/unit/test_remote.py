"""edgecnn.bench.remote against a real sshd on loopback: success, unreachable host, wrong key,
a board without the runtime or without Python, a run past its timeout, and faults mid-run: the
board's disk full, the connection dropping, the runner killed or hanging after part of its output.

The "board" is this machine: sshd runs as the current user on a free port with
throw-away host and client keys, and the remote Python is this interpreter
(which has numpy and the runtimes). When sshd cannot start the tests fail:
tools/apt-packages.txt lists openssh-server and openssh-client.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecnn.bench.remote import parse_device, run_remote, ssh_command
from edgecnn.errors import DataError, ToolError
from fixtures import bundles as BF
from fixtures import colors as QF
from fixtures.sshd import free_port, ssh_config

# A sitecustomize that makes ai_edge_litert unimportable: a board where the runtime was never installed.
NO_LITERT = """
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name == "ai_edge_litert" or name.startswith("ai_edge_litert."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def test_device_strings():
    assert parse_device("pi@raspberrypi.local") == ("pi@raspberrypi.local", None)
    assert parse_device("pi@10.0.0.7:2222") == ("pi@10.0.0.7", 2222)
    assert parse_device("board") == ("board", None)
    assert parse_device("pi@[fe80::1]:22") == ("pi@fe80::1", 22)
    for bad in ("", "-oProxyCommand=x", "pi@", "pi@host:0", "pi@host:port", "a b"):
        with pytest.raises(DataError, match="is not user@host"):
            parse_device(bad)
    cmd = ssh_command("pi@h:2", ["python3", "-c", "print('x y')"], ssh_options=("-i", "k"))
    assert cmd[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    assert cmd[5:7] == ["-i", "k"] and cmd[-5:-1] == ["-p", "2", "--", "pi@h"]
    assert cmd[-1] == "python3 -c 'print('\"'\"'x y'\"'\"')'"


def test_runs_on_the_board_and_scores_the_data(sshd, bundles, tmp_path):
    val = QF.make_val(tmp_path / "val")
    result = run_remote(bundles["tflite-int8"], sshd.device, data=val, runs=5, warmup=1, threads=1,
                        ssh_options=sshd.options, python=sys.executable, timeout=60)
    assert result["mode"] == "ssh" and result["device"] == sshd.device
    assert result["backend"] == "tflite" and result["precision"] == "int8" and result["threads"] == 1
    assert set(result["latency_ms"]) == {"mean", "p50", "p90", "p99", "std"} and result["fps"] > 0
    assert result["images"] == 13 and result["accuracy"]["metric"] == "top1"
    assert result["accuracy"]["top1"] == pytest.approx(12 / 13)  # d_none is never the top class
    assert not list(Path("/tmp").glob("edgecnn-run-*")), "the remote folder was not removed"


def test_detector_map_is_computed_here_when_the_board_cannot(sshd, bundles, tmp_path):
    coco = BF.make_detection_set(tmp_path / "det")
    blocker = tmp_path / "no-coco-eval"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_LITERT.replace("ai_edge_litert", "faster_coco_eval"))
    python = _wrapper(tmp_path / "python-no-coco-eval", f"PYTHONPATH={blocker}", sys.executable)
    result = run_remote(bundles["tflite-det"], sshd.device, data=coco, runs=2, warmup=0, limit=3,
                        ssh_options=sshd.options, python=str(python), timeout=60)
    assert result["images"] == 3 and result["predictions"]
    assert result["accuracy"]["metric"] == "map50_95" and result["accuracy"]["map50"] > 0


def _wrapper(path: Path, env: str, python: str) -> Path:
    path.write_text(f"#!/bin/sh\n{env} exec {python} \"$@\"\n")
    path.chmod(0o755)
    return path


def test_unreachable_board_is_one_line(sshd, bundles):
    closed = free_port()
    with pytest.raises(ToolError, match=rf"^cannot reach {sshd.user}@127.0.0.1:{closed}: .*Connection refused"):
        run_remote(bundles["tflite-fp32"], f"{sshd.user}@127.0.0.1:{closed}", runs=1, warmup=0,
                   ssh_options=sshd.options, python=sys.executable, timeout=30)


def test_wrong_key_is_an_authentication_error(sshd, bundles):
    config = ssh_config(sshd.dir / "ssh_config_other", sshd.dir / "other_key", sshd.dir / "known_hosts")
    with pytest.raises(ToolError, match=r"^cannot reach .*: .*Permission denied \(publickey\)"):
        run_remote(bundles["tflite-fp32"], sshd.device, runs=1, warmup=0, ssh_options=("-F", str(config)),
                   python=sys.executable, timeout=30)


def test_board_without_the_runtime(sshd, bundles, tmp_path):
    blocker = tmp_path / "no-litert"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_LITERT)
    python = _wrapper(tmp_path / "python-no-litert", f"PYTHONPATH={blocker}", sys.executable)
    with pytest.raises(ToolError) as err:
        run_remote(bundles["tflite-fp32"], sshd.device, runs=1, warmup=0, ssh_options=sshd.options,
                   python=str(python), timeout=60)
    assert str(err.value) == "the board lacks ai-edge-litert: pip install 'edgecnn[runner]' on it"
    # The same board runs an ONNX bundle: only the missing runtime was the problem.
    ok = run_remote(bundles["onnx-fp32"], sshd.device, runs=1, warmup=0, ssh_options=sshd.options,
                    python=str(python), timeout=60)
    assert ok["backend"] == "onnx"


def test_board_without_python(sshd, bundles):
    with pytest.raises(ToolError, match=r"has no /nonexistent/python3: install Python 3"):
        run_remote(bundles["tflite-fp32"], sshd.device, runs=1, warmup=0, ssh_options=sshd.options,
                   python="/nonexistent/python3", timeout=30)


def test_bad_bundle_on_the_board_is_one_line(sshd, bundles, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundles["tflite-fp32"], broken)
    (broken / "model.tflite").write_bytes(b"not a flatbuffer" * 4)
    with pytest.raises(ToolError, match=rf"^on {sshd.device}: LiteRT cannot load bundle/model.tflite"):
        run_remote(broken, sshd.device, runs=1, warmup=0, ssh_options=sshd.options, python=sys.executable,
                   timeout=30)


def test_timeout_stops_the_runner_and_removes_its_folder(sshd, bundles, tmp_path):
    hang = tmp_path / "hang"
    hang.mkdir()  # the runner (it runs in edgecnn-run-*) hangs; the bootstrap around it does not
    (hang / "sitecustomize.py").write_text("import os, time\nif 'edgecnn-run-' in os.getcwd():\n    time.sleep(60)\n")
    python = _wrapper(tmp_path / "python-hangs", f"PYTHONPATH={hang}", sys.executable)
    before = set(Path("/tmp").glob("edgecnn-run-*"))
    started = time.monotonic()
    with pytest.raises(ToolError, match=rf"^the run on {sshd.device} did not finish within 3 s"):
        run_remote(bundles["tflite-fp32"], sshd.device, runs=1, warmup=0, ssh_options=sshd.options,
                   python=str(python), timeout=3)
    assert time.monotonic() - started < 15
    deadline = time.monotonic() + 10
    while set(Path("/tmp").glob("edgecnn-run-*")) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not set(Path("/tmp").glob("edgecnn-run-*")) - before, "the remote folder was left behind"


# ---------------------------------------------------------------- faults mid-run: one line, no result, nothing left

# Each runs in the runner only (its folder is edgecnn-run-*), after the bootstrap has unpacked it.
PARTIAL = "import sys\nsys.stdout.write('{\"model\": \"colors\", \"latency_ms\": ')\nsys.stdout.flush()\n"
DROP_CONNECTION = """
import os, signal, time
if 'edgecnn-run-' in os.getcwd():
    pid = os.getppid()
    while pid > 1:  # the nearest sshd up the tree serves this session: killing it drops the connection
        stat = open('/proc/%d/stat' % pid).read()
        if stat[stat.index('(') + 1:stat.rindex(')')].startswith('sshd'):
            os.kill(pid, signal.SIGKILL)
            break
        pid = int(stat[stat.rindex(')') + 2:].split()[1])
    time.sleep(60)
"""
KILLED = f"import os, signal\nif 'edgecnn-run-' in os.getcwd():\n    exec({PARTIAL!r})\n    " \
         "os.kill(os.getpid(), signal.SIGKILL)\n"
HANGS_MID_RESULT = f"import os, time\nif 'edgecnn-run-' in os.getcwd():\n    exec({PARTIAL!r})\n    time.sleep(60)\n"


def _python_with(tmp_path: Path, name: str, sitecustomize: str) -> Path:
    """A board Python whose runner process runs `sitecustomize` first."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(sitecustomize)
    return _wrapper(tmp_path / f"python-{name}", f"PYTHONPATH={folder}", sys.executable)


def _full_disk_python(tmp_path: Path) -> Path:
    """A board Python that cannot write more than 4 KiB to any file.

    The shell's file-size limit stands in for a full disk: writing the unpacked
    bundle fails at the very place a full disk makes it fail (EFBIG instead of
    ENOSPC), on loopback, without root or a mount. Pipes are not files: ssh's
    streams are unaffected.
    """
    path = tmp_path / "python-full-disk"
    path.write_text(f"#!/bin/sh\nulimit -f 8\nexec {sys.executable} \"$@\"\n")  # 8 blocks of 512 bytes
    path.chmod(0o755)
    return path


def _runs_left(before: set[Path], wait_s: float = 10) -> set[Path]:
    deadline = time.monotonic() + wait_s
    while set(Path("/tmp").glob("edgecnn-run-*")) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    return set(Path("/tmp").glob("edgecnn-run-*")) - before


def _fails(sshd, bundle, python, timeout=60) -> ToolError:
    with pytest.raises(ToolError) as err:
        run_remote(bundle, sshd.device, runs=1, warmup=0, ssh_options=sshd.options, python=str(python),
                   timeout=timeout)
    assert "\n" not in str(err.value) and err.value.exit_code == 1
    return err.value


def test_full_disk_on_the_board(sshd, bundles, tmp_path):
    before = set(Path("/tmp").glob("edgecnn-run-*"))
    err = _fails(sshd, bundles["tflite-fp32"], _full_disk_python(tmp_path))
    assert str(err) == f"cannot unpack the bundle on {sshd.device}: File too large in /tmp (free space there, or " \
                       "set TMPDIR on it)"
    assert not _runs_left(before, 0), "the half-unpacked folder was left on the board"


def test_connection_dropping_mid_run(sshd, bundles, tmp_path):
    before = set(Path("/tmp").glob("edgecnn-run-*"))
    started = time.monotonic()
    err = _fails(sshd, bundles["tflite-fp32"], _python_with(tmp_path, "drops", DROP_CONNECTION))
    assert re.match(rf"the connection to {re.escape(sshd.device)} dropped during the run.*; no result$", str(err))
    assert time.monotonic() - started < 30
    assert not _runs_left(before), "the orphaned runner's folder was left on the board"


def test_runner_killed_mid_run(sshd, bundles, tmp_path):
    before = set(Path("/tmp").glob("edgecnn-run-*"))
    err = _fails(sshd, bundles["tflite-fp32"], _python_with(tmp_path, "killed", KILLED))
    assert str(err) == f"the runner on {sshd.device} was killed by SIGKILL (out of memory?) mid-run; no result"
    assert not _runs_left(before)


def test_runner_hanging_after_part_of_its_result(sshd, bundles, tmp_path):
    before = set(Path("/tmp").glob("edgecnn-run-*"))
    err = _fails(sshd, bundles["tflite-fp32"], _python_with(tmp_path, "hangs", HANGS_MID_RESULT), timeout=3)
    assert str(err) == f"the run on {sshd.device} did not finish within 3 s"
    assert not _runs_left(before)


def test_bench_on_a_full_board_is_one_error_line(sshd, tmp_path):
    """Through the real CLI: exit 1, one `Error:` line on stderr (no framework noise), nothing on stdout."""
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "edgecnn", "bench", "--target", "host", "--model", "mobilenet_v1",
                           "--precision", "fp32", "--runs", "1", "--limit", "1", "--device", sshd.device,
                           f"--ssh-option={sshd.options[0]}", f"--ssh-option={sshd.options[1]}",
                           "--remote-python", str(_full_disk_python(tmp_path)), "-o", str(report)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "EDGECNN_DEBUG": ""})
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert re.fullmatch(rf"Error: mobilenet_v1 tflite fp32: cannot unpack the bundle on {re.escape(sshd.device)}: "
                        r"File too large in /tmp \(.*\)\n", done.stderr), done.stderr
    assert not report.exists()
