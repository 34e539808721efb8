"""Run aarch64 programs and Python under qemu-user, pinned to a target's core.

    setarch <arch> -R  qemu-aarch64 -cpu cortex-a72 -L VIEW [-plugin ...]  PROGRAM ARGS

- `-cpu` is always the target's own core, never `max`: a wheel or a bundle that
  uses an instruction the board's core lacks must die here with SIGILL, as it
  would on the board (onnxruntime 1.21.0 on the Pi 4).
- `-L VIEW` is the target's view of the sysroot (see sysroot.py): the guest's
  loader, libraries and /proc/cpuinfo.
- `setarch -R` (no ASLR), PYTHONHASHSEED=0 and a fixed environment make the
  instruction count repeat run to run: the kernels' exactly; the Python and allocator work around an
  invoke can move it by a few hundred instructions (seen in whole test suites only).
- The guest gets a clean environment: qemu-user hands the host environment to
  the guest otherwise, and a host PYTHONPATH or LD_PRELOAD would leak in.
"""

from __future__ import annotations

import os
import platform
import resource
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgecnn.emulate.environment import require_environment
from edgecnn.emulate.plugin import Counts, parse_counts
from edgecnn.emulate.sysroot import GUEST_DIR, GUEST_PYTHON, guest_mount
from edgecnn.errors import ToolError
from edgecnn.targets import Target, get_target

DEFAULT_TIMEOUT_S = 900


@dataclass(frozen=True)
class GuestResult:
    """One finished guest run."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    counts: Counts | None = None  # only when run with the counting plugin

    @property
    def instructions(self) -> list[int]:
        return self.counts.regions if self.counts else []


def resolve_target(target: str | Target) -> Target:
    """The target (a Target, or a name, alias or path) when qemu can emulate it; TargetError otherwise."""
    return get_target(target).require_emulation()


def guest_env(pythonpath: Sequence[Path | str] = (), extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment the guest sees."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",  # fixed: its length would shift the count from machine to machine
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONNOUSERSITE": "1",
        # The shared cache stays read-only: setup already wrote every .pyc.
        "PYTHONDONTWRITEBYTECODE": "1",
        # numpy's OpenBLAS would start one thread per host core at import.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # The guest's TVM has no compiler library: load the runtime alone.
        "TVM_USE_RUNTIME_LIB": "1",
    }
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env.update(extra or {})
    return env


def build_command(target: Target, view: Path, program: str | Path, args: Sequence[str] = (),
                  plugin: Path | None = None, plugin_out: Path | None = None, argv0: str | None = None,
                  plugin_args: Sequence[str] = ()) -> list[str]:
    """The host command line for one guest run (pure: nothing is checked or run)."""
    # setarch takes the kernel's own machine name (uname -m), not the target spelling of host_arch().
    cmd = ["setarch", platform.machine(), "-R", "qemu-aarch64", "-cpu", target.qemu_cpu, "-L", str(view)]
    if argv0 is not None:
        cmd += ["-0", argv0]
    if plugin is not None:
        if plugin_out is None:
            raise ValueError("plugin_out is required with a plugin")
        cmd += ["-plugin", ",".join([f"{plugin}", f"out={plugin_out}", *plugin_args])]
    return cmd + [str(program), *map(str, args)]


def failure_message(returncode: int, stderr: str, target: Target, what: str) -> str | None:
    """One line for a failed guest run, or None when it succeeded.

    qemu re-raises an uncaught guest signal on itself, so SIGILL reads as -4
    from Popen (132 through a shell), with "uncaught target signal 4" on stderr.
    """
    if returncode == 0:
        return None
    core = target.qemu_cpu
    if returncode in (-signal.SIGILL, 128 + signal.SIGILL) or "uncaught target signal 4 " in stderr:
        return f"illegal instruction on {core} running {what}"
    if returncode < 0:  # other exits above 128 are a script's own exit codes, not signals
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"{what} crashed with {name} under qemu-aarch64 -cpu {core}"
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return f"{what} failed under qemu-aarch64 -cpu {core} (exit {returncode}): {(lines or ['no message'])[-1]}"


def _no_core_dumps() -> None:
    # qemu writes qemu_<prog>_<time>.core into the working directory on a crash.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_guest(target: str | Target, program: str | Path, args: Sequence[str] = (), *,
              pythonpath: Sequence[Path | str] = (), env: dict[str, str] | None = None, count: bool = False,
              check: bool = True, timeout: float = DEFAULT_TIMEOUT_S, what: str | None = None,
              cwd: Path | None = None, argv0: str | None = None, plugin_args: Sequence[str] = ()) -> GuestResult:
    """Run an aarch64 program (host path or a path inside the sysroot) under the target's core.

    With count=True the counting plugin is loaded and the result carries the
    instruction count of every region the guest marked (guest/edgecnn_marker.py);
    `plugin_args` (edgecnn.emulate.plugin.profile_args) add per-thread classes and a cache model.
    With check=True a failed run raises ToolError; an illegal instruction reads
    "illegal instruction on <core> running <what>".
    """
    t = resolve_target(target)
    ready = require_environment(t, need_plugin=count)
    what = what or Path(str(program)).name
    with tempfile.TemporaryDirectory(prefix="edgecnn-qemu-") as tmp:
        plugin_out = Path(tmp) / "counts.txt" if count else None
        cmd = build_command(t, ready.view, program, args, ready.plugin if count else None, plugin_out, argv0,
                            plugin_args if count else ())
        started = time.perf_counter()
        try:
            done = _run_tracked(cmd, guest_env(pythonpath, env), timeout, cwd or tmp)
        except subprocess.TimeoutExpired:
            raise ToolError(f"{what} ran past {timeout:.0f} s under qemu-aarch64 -cpu {t.qemu_cpu}") from None
        except OSError as e:
            raise ToolError(f"cannot start qemu-aarch64: {e.strerror}: apt-get install qemu-user") from None
        seconds = time.perf_counter() - started
        counts = None
        if plugin_out is not None:
            text = plugin_out.read_text() if plugin_out.is_file() else ""
            if not text.startswith("edgecnn-insn-count"):
                raise ToolError(f"the counting plugin did not load: {done.stderr.strip()[-200:] or 'no message'}")
            counts = parse_counts(text)
    result = GuestResult(done.returncode, done.stdout, done.stderr, seconds, counts)
    message = failure_message(done.returncode, done.stderr, t, what)
    if check and message:
        raise ToolError(message)
    if check and counts and counts.errors:
        raise ToolError(f"instruction markers misused in {what}: {counts.errors[0]}")
    return result


_GUESTS: set = set()  # qemu processes running now, from any thread (stop_guests)
_GUESTS_LOCK = threading.Lock()


def _run_tracked(cmd: list[str], env: dict, timeout: float, cwd) -> subprocess.CompletedProcess:
    """subprocess.run for a qemu command, the process known to stop_guests while it runs."""
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                          preexec_fn=_no_core_dumps) as proc:
        with _GUESTS_LOCK:
            _GUESTS.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:  # a timeout, an interrupt: the guest goes with it
            proc.kill()
            proc.communicate()
            raise
        finally:
            with _GUESTS_LOCK:
                _GUESTS.discard(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def stop_guests() -> None:
    """Kill every qemu process still running (bench runs several in worker threads; an interrupt ends them)."""
    with _GUESTS_LOCK:
        running = list(_GUESTS)
    for proc in running:
        try:
            proc.kill()
        except OSError:
            pass


def run_python(target: str | Target, script: str | Path | None = None, args: Sequence[str] = (), *,
               module: str | None = None, pythonpath: Sequence[Path | str] = (), **kwargs) -> GuestResult:
    """Run a Python script (host path) or `-m module` with the guest's python3.11.

    The guest sees the aarch64 wheels (numpy, onnxruntime, ai-edge-litert), the
    TVM runtime when set up, then `pythonpath`, then guest/ (the marker module).
    edgecnn's own dirs reach the guest at fixed paths (/edgecnn/...), and the
    interpreter runs as /usr/bin/python3.11, so counts do not depend on where the
    cache or the checkout live.
    """
    if (script is None) == (module is None):
        raise ValueError("give exactly one of script and module")
    t = resolve_target(target)
    ready = require_environment(t, need_plugin=kwargs.get("count", False))
    if script is not None:
        path = Path(script).resolve()
        if not path.is_file():
            raise ToolError(f"no such script: {script}")
        guest_script = str(path)
        if path.is_relative_to(GUEST_DIR.resolve()):
            guest_script = f"{guest_mount('guest')}/{path.relative_to(GUEST_DIR.resolve())}"
        argv = [guest_script, *args]
    else:
        argv = ["-m", str(module), *args]
    kwargs.setdefault("what", Path(str(script)).name if script is not None else str(module))
    paths = [guest_mount("site"), *([guest_mount("tvm")] if ready.tvm else []), *pythonpath, guest_mount("guest")]
    return run_guest(t, ready.view / GUEST_PYTHON.lstrip("/"), argv, pythonpath=paths, argv0=GUEST_PYTHON, **kwargs)
