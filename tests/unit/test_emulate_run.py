"""Guest command lines, environment, failure messages and the plugin protocol, without qemu."""

import dataclasses
import platform
import re
import signal
from pathlib import Path

import pytest

from edgecnn.emulate import plugin, run
from edgecnn.errors import TargetError
from edgecnn.targets import get_target

GUEST = run.GUEST_DIR


@pytest.mark.parametrize("name, cpu", [("a53", "cortex-a53"), ("a72", "cortex-a72"), ("a76", "cortex-a76")])
def test_command_pins_the_targets_core_without_aslr(name, cpu):
    cmd = run.build_command(get_target(name), Path("/c/views/x"), "/c/views/x/usr/bin/python3.11", ["-c", "1"])
    assert cmd[:3] == ["setarch", platform.machine(), "-R"]
    assert cmd[3:8] == ["qemu-aarch64", "-cpu", cpu, "-L", "/c/views/x"]
    assert cmd[-3:] == ["/c/views/x/usr/bin/python3.11", "-c", "1"]
    assert "max" not in cmd and "-plugin" not in cmd and "-0" not in cmd


def test_command_can_fix_the_guests_argv0():
    cmd = run.build_command(get_target("a72"), Path("/v"), "/v/usr/bin/python3.11", argv0="/usr/bin/python3.11")
    assert cmd[cmd.index("-0") + 1] == "/usr/bin/python3.11" and cmd[-1] == "/v/usr/bin/python3.11"


def test_command_with_the_counting_plugin():
    cmd = run.build_command(get_target("a72"), Path("/v"), "/bin/true", plugin=Path("/p/lib.so"),
                            plugin_out=Path("/t/c.txt"))
    assert cmd[cmd.index("-plugin") + 1] == "/p/lib.so,out=/t/c.txt"
    assert cmd.index("-plugin") < cmd.index("/bin/true")
    with pytest.raises(ValueError):
        run.build_command(get_target("a72"), Path("/v"), "/bin/true", plugin=Path("/p/lib.so"))


def test_only_aarch64_targets_with_a_named_core_are_emulated():
    assert run.resolve_target("rpi4").name == "a72"
    with pytest.raises(TargetError, match="cannot be emulated"):
        run.resolve_target("host")
    with pytest.raises(TargetError, match="illegal instructions"):
        run.resolve_target(dataclasses.replace(get_target("a72"), qemu_cpu="max"))


def test_guest_environment_is_clean_and_deterministic(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/host/site")
    monkeypatch.setenv("LD_PRELOAD", "/host/lib.so")
    env = run.guest_env(["/site", Path("/extra")], {"X": "1"})
    assert env["PYTHONHASHSEED"] == "0" and env["PYTHONPATH"] == "/site:/extra" and env["X"] == "1"
    assert "LD_PRELOAD" not in env and env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["TVM_USE_RUNTIME_LIB"] == "1"  # the guest's TVM has no compiler library
    monkeypatch.setenv("HOME", "/home/someone-else")
    assert run.guest_env()["HOME"] == env["HOME"]  # nothing machine-specific reaches the guest


@pytest.mark.parametrize("code", [-signal.SIGILL, 128 + signal.SIGILL])
def test_sigill_is_one_clear_line(code):
    msg = run.failure_message(code, "", get_target("a53"), "model.so")
    assert msg == "illegal instruction on cortex-a53 running model.so"


def test_sigill_seen_on_qemus_stderr():
    stderr = "qemu: uncaught target signal 4 (Illegal instruction) - core dumped\n"
    assert run.failure_message(1, stderr, get_target("a72"), "x") == "illegal instruction on cortex-a72 running x"


def test_other_failures():
    a72 = get_target("a72")
    assert run.failure_message(0, "noise", a72, "x") is None
    assert run.failure_message(-signal.SIGSEGV, "", a72, "x") == "x crashed with SIGSEGV under qemu-aarch64 -cpu cortex-a72"
    msg = run.failure_message(1, "Traceback...\nImportError: no module\n\n", a72, "x.py")
    assert msg == "x.py failed under qemu-aarch64 -cpu cortex-a72 (exit 1): ImportError: no module"


def test_marker_numbers_agree_between_plugin_and_guest():
    c_source = plugin.SOURCE.read_text()
    nr = int(re.search(r"#define EDGECNN_MARKER_NR (0x[0-9a-f]+)", c_source).group(1), 16)
    magic = int(re.search(r"#define EDGECNN_MARKER_MAGIC (0x[0-9a-f]+)ULL", c_source).group(1), 16)
    guest = (GUEST / "edgecnn_marker.py").read_text()
    assert int(re.search(r"MARKER_NR = (0x[0-9A-F]+)", guest).group(1), 16) == nr
    assert int(re.search(r"MARKER_MAGIC = (0x[0-9A-F]+)", guest).group(1), 16) == magic
    assert nr > 1000  # far past aarch64's last syscall, so the guest just gets ENOSYS


def test_plugin_output_is_parsed():
    counts = plugin.parse_counts("edgecnn-insn-count 1\nregion 0 62267\nregion 1 5\nexit 2\n")
    assert counts.regions == [62267, 5] and counts.finished and not counts.errors
    broken = plugin.parse_counts("edgecnn-insn-count 1\nerror stop without a start on this thread\n")
    assert broken.errors == ["stop without a start on this thread"] and not broken.finished


def test_guest_scripts_use_no_tensorflow_and_only_the_board_runner_of_edgecnn():
    # The guest has numpy and the runtimes; of edgecnn it may use what the board runs (stdlib + numpy).
    board = {"edgecnn.artifacts", "edgecnn.errors", "edgecnn.runner.sessions"}
    for path in GUEST.glob("*.py"):
        imports = set(re.findall(r"^\s*(?:from|import) ([\w.]+)", path.read_text(), re.M))
        assert not {i.split(".")[0] for i in imports} & {"tensorflow", "keras", "cv2", "click"}, path.name
        assert {i for i in imports if i.split(".")[0] == "edgecnn"} <= board, path.name


def test_plugin_and_guest_files_ship_as_package_data():
    import tomllib

    root = Path(run.__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"*.c", "guest/*.py"} <= set(data["edgecnn.emulate"])


def test_stop_guests_ends_the_qemu_runs_of_other_threads(tmp_path):
    # bench runs one qemu per core in worker threads; an interrupt of the main thread must not leave them running.
    import threading
    import time

    from edgecnn.emulate import run

    done = {}
    worker = threading.Thread(target=lambda: done.setdefault("r", run._run_tracked(["sleep", "60"], {}, 120,
                                                                                      tmp_path)))
    worker.start()
    deadline = time.monotonic() + 10
    while not run._GUESTS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(run._GUESTS) == 1
    started = time.monotonic()
    run.stop_guests()
    worker.join(timeout=10)
    assert not worker.is_alive() and time.monotonic() - started < 5
    assert done["r"].returncode == -9 and not run._GUESTS  # killed, and no longer tracked
