"""The frameworks' own log lines kept off the user's stderr: one filter for the CLI, the runner and framework glue.

TensorFlow, absl and LiteRT write from C++ straight to file descriptor 2, so
Python's logging and warnings settings never see them. Log-level variables stop
only part of it (checked with TF 2.21, ai-edge-litert 2.3): TF_CPP_MIN_LOG_LEVEL=3
silences cpu_feature_guard and the converter's "Ignored output_format" /
"Reading SavedModel" / loader.cc lines, but not oneDNN's port.cc note or absl's
"before absl::InitializeLog()" warning, and GLOG_minloglevel / ABSL_MIN_LOG_LEVEL
change nothing. TF_ENABLE_ONEDNN_OPTS=0 would silence port.cc by turning oneDNN's
kernels off, which changes the numbers and the speed, so it is not used. LiteRT's
"INFO: Created TensorFlow Lite XNNPACK delegate for CPU." has no switch at all.

So `native_logs()` also puts a pipe on descriptor 2 and a small forwarder process
on its other end: known noise lines (NOISE_PATTERNS) are dropped, every other
byte reaches the real stderr. A process rather than a thread, because C++ code
writes while holding the GIL (a thread could not drain a full pipe: deadlock) and
a line written just before an abort() must still arrive. Python's own sys.stderr
keeps writing to the real descriptor, so edgecnn's messages are neither delayed
nor reordered, and a terminal stays a terminal for rich and click.

Standard library only: the board's runner uses it (bench/remote.py ships it).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator

# Each pattern matches the start of one whole line that a framework writes on its own.
NOISE_PATTERNS = (
    # absl's notice before its first log line (TensorFlow prints it once per shared library)
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    # absl/glog lines below FATAL: oneDNN's port.cc, cpu_feature_guard, the converter's Ignored output_format,
    # Reading SavedModel from, loader.cc, CUDA/TensorRT registration. F (fatal, before an abort) passes.
    r"[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ",  # seconds: 2 digits, or epoch ones before absl's init
    r"To enable the following instructions: .* rebuild TensorFlow",  # cpu_feature_guard's second line
    r"INFO: ",  # LiteRT's info level: "Created TensorFlow Lite XNNPACK delegate for CPU." and the like
    r"fully_quantize: \d+, inference_type: \d+, input_inference_type: ",  # the TFLite quantizer's settings
    # TVM's C++ warnings: a schedule rule MetaSchedule has no CPU version of (pooling; two lines), the database
    # it opens for each tuned build, and a frontend's builder left behind by an import that failed (the
    # failure itself is reported: compile.tvm falls back to the ONNX graph or stops with an Error line)
    r"\[\d\d:\d\d:\d\d\] \S+/apply_custom_rule\.cc:\d+: Warning: Unknown schedule rule ",
    r"  s_tir\.meta_schedule\.cpu\.",
    r"\[\d\d:\d\d:\d\d\] \S+/relax/transform/meta_schedule\.cc:\d+: Warning: Creating JSONDatabase",
    r"\[\d\d:\d\d:\d\d\] \S+/relax/ir/block_builder\.cc:\d+: Warning: BlockBuilder destroyed with remaining blocks",
)
NOISE = re.compile("|".join(f"(?:{p})" for p in NOISE_PATTERNS).encode())
LOG_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}  # what a log level can silence is silenced at the source

# Runs in its own interpreter (-I -S: no site, no user PYTHONPATH, nothing the board's sitecustomize does).
_FORWARDER = r"""
import os, re, select, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
noise = re.compile(sys.argv[1].encode())
alive = True
def emit(data):
    global alive
    while alive and data:
        try:
            data = data[os.write(1, data):]
        except OSError:
            alive = False  # the real stderr is gone: keep reading, so no writer ever blocks
tail = b""
while True:
    if tail and not select.select([0], [], [], 0.2)[0]:
        emit(tail)  # a line left unfinished for a while (a prompt, progress dots): pass it on as it is
        tail = b""
        continue
    try:
        chunk = os.read(0, 65536)
    except OSError:
        break
    if not chunk:
        break
    *lines, tail = (tail + chunk).split(b"\n")
    emit(b"".join(line + b"\n" for line in lines if not noise.match(line)))
    if len(tail) > 65536:  # no line at all, only bytes: nothing to recognise
        emit(tail)
        tail = b""
if tail and not noise.match(tail):
    emit(tail)
"""

_state = {"active": False, "verbose": False}


def is_noise(line: str | bytes) -> bool:
    """Whether `line` is one of the frameworks' log lines that a user does not see without --verbose."""
    return NOISE.match(line.encode() if isinstance(line, str) else line) is not None


def verbose() -> bool:
    """True under `edgecnn --verbose` or EDGECNN_DEBUG: every framework line reaches stderr."""
    return _state["verbose"] or bool(os.environ.get("EDGECNN_DEBUG"))


@contextlib.contextmanager
def native_logs(show: bool = False) -> Iterator[None]:
    """Drop the frameworks' log noise from descriptor 2 inside the block; everything else passes through.

    `show=True` (the CLI's --verbose), or EDGECNN_DEBUG, lets every line through,
    for nested blocks too. Inside an outer block this does nothing. Where no filter
    can start (no descriptor 2, no interpreter to run it) the block runs unfiltered.
    """
    if show or verbose() or _state["active"]:
        previous = _state["verbose"]
        _state["verbose"] = previous or show
        try:
            yield
        finally:
            _state["verbose"] = previous
        return
    for key, value in LOG_ENV.items():
        os.environ.setdefault(key, value)  # before any heavy import: the CLI and runner enter here first
    stop = _start()
    _state["active"] = stop is not None
    try:
        yield
    finally:
        _state["active"] = False
        if stop is not None:
            stop()


def _start():
    """Route descriptor 2 through a forwarder process; returns the function that undoes it, or None."""
    if os.name != "posix" or not sys.executable:
        return None
    try:
        real = os.dup(2)
    except OSError:
        return None
    read, write = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FORWARDER, NOISE.pattern.decode()],
                                stdin=read, stdout=real, stderr=real, start_new_session=True)
    except OSError:
        for fd in (real, read, write):
            os.close(fd)
        return None
    os.close(read)
    for stream in (sys.stdout, sys.stderr):
        _flush(stream)
    os.dup2(write, 2)
    os.close(write)
    own, direct = sys.stderr, None
    if own is sys.__stderr__ and _fileno(own) == 2:  # not a test harness's capture: Python writes go direct
        direct = io.open(real, "w", buffering=1, encoding=own.encoding, errors=own.errors, closefd=False)
        sys.stderr = direct

    def stop() -> None:
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)
        if direct is not None and sys.stderr is direct:
            sys.stderr = own
        os.dup2(real, 2)  # the pipe's last write end here: the forwarder reads to the end and exits
        if direct is None:
            os.close(real)  # else left open: a logging handler made in the block may still write to `direct`
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass  # a child of ours still holds the pipe; the forwarder ends when it does

    return stop


def _flush(stream) -> None:
    try:
        stream.flush()
    except (AttributeError, OSError, ValueError):
        pass


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
