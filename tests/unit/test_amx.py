"""Intel AMX denied to a runner's runtimes (EDGECNN_AMX=off, bench --no-amx): edgecnn.runner.amx."""

import json
import os
import platform
import subprocess
import sys

import pytest

from edgecnn.bench import timing
from edgecnn.runner import amx

x86_linux = pytest.mark.skipif(sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"),
                               reason="the filter is for arch_prctl on x86_64 Linux")
with_amx = pytest.mark.skipif(not amx.cpu_has_amx(), reason="this CPU has no AMX: no runtime would use it here")

# In a child: the filter stays for the life of a process.
_DENIED = """
import ctypes, errno, os, json
from edgecnn.runner import amx
amx.deny()
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
request = libc.syscall(158, 0x1023, amx.XFEATURE_XTILEDATA)  # ARCH_REQ_XCOMP_PERM
request_errno = ctypes.get_errno()
mask = ctypes.c_ulong(0)
get = libc.syscall(158, 0x1022, ctypes.byref(mask))  # ARCH_GET_XCOMP_PERM: not filtered
print(json.dumps({"request": request, "errno": request_errno, "get": get, "pid": os.getpid() > 0}))
"""


@x86_linux
def test_denying_amx_fails_only_the_tile_permission_request():
    done = subprocess.run([sys.executable, "-c", _DENIED], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["request"] == -1 and r["errno"] == 1  # EPERM from the filter (a CPU without AMX says EINVAL)
    assert r["get"] == 0 and r["pid"]


_TIMED = """
import json, sys
from edgecnn.runner import amx
policy = amx.apply_policy()
from edgecnn.runner.interleave import time_interleaved
row = time_interleaved([sys.argv[1]], runs=3, warmup=1, rounds=1, threads=1)[0]
print(json.dumps({"policy": policy, "reported": row["amx"], "tiles": amx.tile_permission()}))
"""


@with_amx
def test_the_runner_lets_tflite_int8_use_amx_unless_told_not_to(bundles):
    """XNNPACK asks for the tile state when it runs int8 here; with EDGECNN_AMX=off it never gets it."""
    results = {}
    for value in ("", "off"):
        env = {**os.environ, amx.ENV: value}
        done = subprocess.run([sys.executable, "-c", _TIMED, str(bundles["tflite-int8"])], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        results[value] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results[""] == {"policy": "on", "reported": "on", "tiles": True}
    assert results["off"] == {"policy": "off", "reported": "off", "tiles": False}


def _twin(precision: str, p50: float, policy: str | None) -> dict:
    timing_facts = {"round_spread": 0.0, **({"amx": policy} if policy else {})}
    return {"model": "m", "backend": "tflite", "precision": precision, "threads": 1,
            "latency_ms": {"p50": p50, "p90": p50}, "timing": timing_facts}


def test_notes_point_at_amx_when_int8_is_slow_with_it_and_say_when_it_was_denied():
    slow = timing._notes([_twin("fp32", 0.3, "on"), _twin("int8", 0.42, "on")], None, None, cpu_time=False)
    said = [n for n in slow if "not faster" in n]
    assert len(said) == 1 and "AMX tiles" in said[0] and "--no-amx" in said[0]
    denied = timing._notes([_twin("fp32", 0.3, "off"), _twin("int8", 0.42, "off")], None, None, cpu_time=False)
    assert "AMX denied" in denied[0] and not any("AMX tiles" in n for n in denied)
    no_amx = timing._notes([_twin("fp32", 0.3, None), _twin("int8", 0.42, None)], None, None, cpu_time=False)
    assert not any("AMX" in n for n in no_amx)


def test_no_amx_is_for_native_runs_and_says_when_there_is_nothing_to_deny(monkeypatch):
    from edgecnn.bench.plan import make_plan

    with pytest.raises(Exception, match="--no-amx applies to native runs"):
        make_plan("a72", models=["mobilenet_v1"], precisions=["fp32"], no_amx=True, emulate=True)
    monkeypatch.setattr(amx, "cpu_has_amx", lambda: False)
    plan = make_plan("host", models=["mobilenet_v1"], precisions=["fp32"], no_amx=True)
    assert plan.no_amx and any("this CPU has no AMX" in n for n in plan.notes)


def test_bench_hands_the_policy_to_its_runner_processes_only_while_it_runs(monkeypatch):
    from edgecnn.bench import pipeline

    monkeypatch.delenv(amx.ENV, raising=False)
    seen = []
    monkeypatch.setattr(pipeline, "_bench", lambda plan, log, on_row: seen.append(os.environ.get(amx.ENV)) or {})

    class Plan:
        no_amx = True

    pipeline.bench(Plan())
    assert seen == ["off"] and amx.ENV not in os.environ
    Plan.no_amx = False
    pipeline.bench(Plan())
    assert seen == ["off", None]
