"""The aarch64 guest itself: set-up is idempotent, each target's core sees its own
/proc/cpuinfo, the runtimes import (the segfault trap), marker regions are counted."""

import time

import pytest

from edgecnn.emulate import run_python, setup, status
from edgecnn.emulate.environment import is_ready
from edgecnn.errors import ToolError

pytestmark = pytest.mark.emulated

CPUINFO = """
import platform
part = [l.split(":")[1].strip() for l in open("/proc/cpuinfo") if l.startswith("CPU part")][0]
print(platform.machine(), part)
"""


def test_setup_again_reuses_everything(emulator):
    started = time.perf_counter()
    pieces = setup("a72", log=lambda msg: None)
    assert time.perf_counter() - started < 10
    assert is_ready(pieces) and [p.to_dict() for p in pieces] == [p.to_dict() for p in status()]


@pytest.mark.parametrize("target, part", [("a53", "0xd03"), ("a76", "0xd0b")])
def test_guest_sees_the_targets_cpuinfo(emulator, tmp_path, target, part):
    script = tmp_path / "cpuinfo.py"
    script.write_text(CPUINFO)
    assert run_python(target, script).stdout.split() == ["aarch64", part]


def test_runtimes_import_under_qemu(emulator, tmp_path):
    # Without an ARM /proc/cpuinfo both of these segfault at import under qemu-user.
    script = tmp_path / "imports.py"
    script.write_text("import numpy, onnxruntime, ai_edge_litert.interpreter\n"
                      "print(numpy.__version__, onnxruntime.__version__)\n")
    from importlib.metadata import version

    out = run_python("a72", script).stdout.split()
    assert out == [version("numpy"), version("onnxruntime")]


def test_marked_regions_are_counted_deterministically(emulator, tmp_path):
    script = tmp_path / "regions.py"
    script.write_text("import edgecnn_marker as m\n"
                      "m.start(); m.stop()\n"
                      "m.start(); sum(range(20000)); m.stop()\n")
    first = run_python("a72", script, count=True)
    second = run_python("a72", script, count=True)
    assert len(first.instructions) == 2 and first.counts.finished
    assert first.instructions[1] > first.instructions[0] + 20000
    assert first.instructions == second.instructions


def test_profile_runs_instrument_from_the_warm_marker(emulator, tmp_path):
    """start=warm: nothing is instrumented before marker 3, then qemu's translations are dropped and every
    callback comes back; the regions count what a fully instrumented run counts, and the exit line is written."""
    from edgecnn.emulate.plugin import profile_args
    from edgecnn.targets import get_target

    cache = get_target("a72").cache
    script = tmp_path / "warm.py"
    script.write_text("import edgecnn_marker as m\n"
                      "sum(range(50000))\n"
                      "m.warm()\n"
                      "m.start(); sum(range(20000)); m.stop()\n")
    plain = run_python("a72", script, count=True)
    lazy = run_python("a72", script, count=True, plugin_args=profile_args(cache.l1, cache.l2))
    assert lazy.instructions == plain.instructions and lazy.counts.finished
    (stats,) = lazy.counts.threads[0].values()
    assert stats["insn"] == plain.instructions[0] and stats["loads"] > 0 and stats["l1_miss"] > 0
    script.write_text("import edgecnn_marker as m\nm.start(); m.stop()\n")  # no warm marker
    with pytest.raises(ToolError, match="markers misused in warm.py: start before instrumentation began"):
        run_python("a72", script, count=True, plugin_args=profile_args(cache.l1, cache.l2))


def test_marker_misuse_and_failures_are_one_line(emulator, tmp_path):
    script = tmp_path / "bad.py"
    script.write_text("import edgecnn_marker as m\nm.stop()\n")
    with pytest.raises(ToolError, match="markers misused in bad.py: stop without a start"):
        run_python("a72", script, count=True)
    script.write_text("raise SystemExit('no model here')\n")
    with pytest.raises(ToolError, match=r"bad.py failed under qemu-aarch64 -cpu cortex-a72 \(exit 1\): no model here"):
        run_python("a72", script)
