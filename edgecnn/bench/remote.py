"""Run a bundle on a board over SSH with the board runner: `edgecnn bench --device pi@raspberrypi.local`.

One `ssh` call does everything, through the system client, so the user's
~/.ssh/config, keys and agent apply (BatchMode: never a password prompt):

    ssh -o BatchMode=yes -o ConnectTimeout=10 [options] [-p PORT] -- user@host  python3 -c BOOT TOKEN ARGS
        stdin: tar.gz of  src/edgecnn/...   (the runner's own source files, nothing else)
                          bundle/...         (manifest.json + model files)
                          data/...           (the --data images: class folders, or COCO JSON + images)

BOOT (runs on the board, any Python 3.10+) unpacks into $TMPDIR/edgecnn-run-TOKEN,
runs `python -m edgecnn.runner bundle ...` there with PYTHONPATH=src, and removes
the folder when the runner ends. The board needs Python, numpy and the bundle's
runtime (`pip install 'edgecnn[runner]'`), not edgecnn itself. The runner's JSON
comes back on stdout. Detection mAP: when the board lacks faster-coco-eval the
runner sends its detections and mAP is computed here, on the same images.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import shlex
import signal
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Sequence

from edgecnn.artifacts import Bundle, load_bundle
from edgecnn.errors import DataError, ToolError
from edgecnn.logfilter import is_noise

PACKAGE = Path(__file__).resolve().parents[1]  # the edgecnn package folder
# What `python -m edgecnn.runner` imports: stdlib + numpy + a runtime (+ opencv for images).
# Everything `python -m edgecnn.runner` imports, and nothing more (tests/unit/test_architecture.py checks it).
RUNNER_SOURCES = (
    "__init__.py", "errors.py", "artifacts.py", "kinds.py", "logfilter.py", "paths.py", "targets.py",
    "runner/tensors.py", "runner/__init__.py", "runner/__main__.py", "runner/run.py", "runner/sessions.py",
    "runner/stats.py", "runner/postprocess.py", "runner/heads.py", "runner/metrics.py", "runner/interleave.py",
    "runner/amx.py",
    "data/__init__.py", "data/dataset.py", "data/preprocess.py", "data/formats.py",
)
MIN_PYTHON = (3, 10)
DEFAULT_TIMEOUT_S = 600
ALIVE_INTERVAL_S, ALIVE_COUNT = 15, 4  # a silent connection counts as dropped after a minute

# What the board says on stderr, besides the runner's own lines (and its exit code with it).
CONNECTED = "edgecnn-remote: connected"  # first thing: a later ssh failure (255) is a dropped connection
UNWRITABLE, KILLED = 4, 5  # cannot unpack (a full or read-only disk); the runner ended by a signal

# Runs on the board. Kept to Python 3 syntax old boards parse, so a too-old Python gets a clear line.
BOOT = r"""
import os, shutil, subprocess, sys, tarfile, tempfile
if sys.version_info < %(min)r:
    sys.stderr.write("edgecnn-remote: python %%d.%%d\n" %% sys.version_info[:2])
    sys.exit(3)
sys.stderr.write("%(connected)s\n")
sys.stderr.flush()
def unwritable(e):
    where = os.path.dirname(work) if work else "any temporary folder"
    sys.stderr.write("edgecnn-remote: cannot unpack: %%s in %%s\n" %% (e.strerror or e, where))
    sys.exit(%(unwritable)d)
work, code = None, 1
try:
    try:
        work = os.path.join(tempfile.gettempdir(), "edgecnn-run-" + sys.argv[1])
        os.makedirs(work)
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|gz") as tar:
            tar.extractall(work, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    except OSError as e:
        unwritable(e)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.join(work, "src"), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, "-m", "edgecnn.runner"] + sys.argv[2:], cwd=work, env=env)
    try:
        with open(os.path.join(work, "pid"), "w") as f:
            f.write(str(proc.pid))
    except OSError as e:
        proc.kill()
        proc.wait()
        unwritable(e)
    code = proc.wait()
    if code < 0:
        sys.stderr.write("edgecnn-remote: runner killed by signal %%d\n" %% -code)
        code = %(killed)d
finally:
    if work:
        shutil.rmtree(work, ignore_errors=True)
sys.exit(code)
""" % {"min": MIN_PYTHON, "connected": CONNECTED, "unwritable": UNWRITABLE, "killed": KILLED}

# Best effort after a timeout or a dropped connection: stop the runner and remove its folder.
CLEANUP = r"""
import os, shutil, signal, sys, tempfile
work = os.path.join(tempfile.gettempdir(), "edgecnn-run-" + sys.argv[1])
try:
    os.kill(int(open(os.path.join(work, "pid")).read()), signal.SIGKILL)
except (OSError, ValueError):
    pass
shutil.rmtree(work, ignore_errors=True)
"""


def parse_device(device: str) -> tuple[str, int | None]:
    """"user@host[:port]" (or "host", or "user@[v6addr]:port") -> (destination for ssh, port or None)."""
    text = str(device).strip()
    m = re.fullmatch(r"(?:(?P<user>[^@\s:/]+)@)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^@\s:/\[\]]+))"
                     r"(?::(?P<port>\d+))?", text)
    if not m or text.startswith("-") or (m["port"] and not 0 < int(m["port"]) < 65536):
        raise DataError(f"device {device!r} is not user@host[:port]")
    host = m["v6"] or m["host"]
    return (f"{m['user']}@{host}" if m["user"] else host), (int(m["port"]) if m["port"] else None)


def ssh_command(device: str, remote: Sequence[str], *, ssh_options: Sequence[str] = (),
                connect_timeout: int = 10) -> list[str]:
    """The local ssh command line that runs `remote` (argv, quoted here for the remote shell)."""
    destination, port = parse_device(device)
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(connect_timeout)}", *ssh_options]
    # A board that vanishes (unplugged, Wi-Fi gone) sends nothing: without these ssh would wait for the timeout.
    # After the user's options, so theirs win (ssh keeps the first value of each).
    cmd += ["-o", f"ServerAliveInterval={ALIVE_INTERVAL_S}", "-o", f"ServerAliveCountMax={ALIVE_COUNT}"]
    if port is not None:
        cmd += ["-p", str(port)]
    return cmd + ["--", destination, " ".join(shlex.quote(a) for a in remote)]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _ship_data(tar: tarfile.TarFile, data: str | Path, limit: int | None):
    """Add the data set's (first `limit`) images; returns (the runner's --data argument, the local data set)."""
    from edgecnn.data.dataset import ClassificationDataset, ImageFolder
    from edgecnn.data.formats import load_dataset

    dataset = load_dataset(data, unlabelled=True).subset(limit)
    if isinstance(dataset, ImageFolder):  # unlabelled: the images alone, a flat folder
        for s in dataset.samples:
            tar.add(s.path, f"data/{s.path.name}", recursive=False)
        return "data", dataset
    if isinstance(dataset, ClassificationDataset):
        for s in dataset.samples:
            tar.add(s.path, f"data/{dataset.classes[s.label]}/{s.path.name}", recursive=False)
        return "data", dataset
    # Any detection layout travels as COCO JSON: the loader the runner always has, with the same ids.
    coco = dataset.to_coco()
    for image, s in zip(coco["images"], dataset.samples):
        image["file_name"] = f"{s.image_id}-{s.path.name}"
        tar.add(s.path, f"data/images/{image['file_name']}", recursive=False)
    _add_bytes(tar, "data/annotations.json", json.dumps(coco).encode())
    return "data/annotations.json", dataset


def package(bundle: Bundle, data: str | Path | None = None, limit: int | None = None):
    """(tar.gz bytes, the runner's --data argument or None, the local data set or None)."""
    buf = io.BytesIO()
    data_arg = dataset = None
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel in RUNNER_SOURCES:
            tar.add(PACKAGE / rel, f"src/edgecnn/{rel}", recursive=False)
        tar.add(bundle.path / "manifest.json", "bundle/manifest.json", recursive=False)
        for name in bundle.manifest.files.values():
            tar.add(bundle.path / name, f"bundle/{name}", recursive=False)
        if data is not None:
            data_arg, dataset = _ship_data(tar, data, limit)
    return buf.getvalue(), data_arg, dataset


def run_remote(bundle: str | Path | Bundle, device: str, *, data: str | Path | None = None, runs: int = 50,
               warmup: int = 5, threads: int | None = None, limit: int | None = None,
               timeout: float = DEFAULT_TIMEOUT_S, ssh_options: Sequence[str] = (), python: str = "python3",
               connect_timeout: int = 10) -> dict[str, Any]:
    """Run the bundle on `device` ("user@host[:port]") with the board runner; its result dict, mode "ssh".

    `python` is the board's interpreter (a venv's python, say); `ssh_options` go to
    ssh before the destination (e.g. ("-i", "~/.ssh/pi", "-o", "ProxyJump=gw")).
    Every failure is one ToolError line and never a result: the board unreachable,
    its disk full, the connection dropped or the runner killed mid-run, a run past
    `timeout` (the runner is then stopped and its folder removed, as far as the
    board still answers).
    """
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    payload, data_arg, dataset = package(b, data, limit)
    token = secrets.token_hex(8)
    args = ["bundle", "--runs", str(runs), "--warmup", str(warmup)]
    args += ["--threads", str(threads)] if threads is not None else []
    args += ["--data", data_arg] if data_arg is not None else []
    cmd = ssh_command(device, [python, "-c", BOOT, token, *args], ssh_options=ssh_options,
                      connect_timeout=connect_timeout)
    try:
        done = subprocess.run(cmd, input=payload, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise ToolError("ssh not found: apt-get install openssh-client") from None
    except subprocess.TimeoutExpired:
        _cleanup(device, python, token, ssh_options, connect_timeout)
        raise ToolError(f"the run on {device} did not finish within {timeout:.0f} s") from None
    stdout, stderr = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    if done.returncode != 0:  # whatever stdout holds then is not a result, even a whole JSON line
        message = _failure(device, python, done.returncode, stderr)
        if _dropped(done.returncode, stderr):
            _cleanup(device, python, token, ssh_options, connect_timeout)
        raise ToolError(message)
    try:
        result = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ToolError(f"the runner on {device} printed no JSON result: {stdout.strip()[-200:]!r}") from None
    result.update(mode="ssh", device=device)
    if (dataset is not None and dataset.task == "detection" and result.get("accuracy") is None
            and result.get("task") == "detection"):
        from edgecnn.runner.metrics import coco_map_from_results

        result["accuracy"] = coco_map_from_results(dataset, result.get("predictions") or [])
    return result


def _last(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines()
             if ln.strip() and not is_noise(ln) and not ln.startswith("edgecnn-remote: ")]
    return lines[-1] if lines else "no message"


# ssh's words for a connection lost after it was made (it prints some of them only above LogLevel ERROR).
_LOST = re.compile(r"closed by remote host|Broken pipe|reset by peer|not responding|Connection timed out during")


def _dropped(code: int, stderr: str) -> bool:
    """ssh failed (255) after the board had started: the connection dropped mid-run."""
    return code == 255 and (CONNECTED in stderr or _LOST.search(stderr) is not None)


def _failure(device: str, python: str, code: int, stderr: str) -> str:
    """One line for a failed remote run, from ssh's exit code and the board's stderr."""
    if _dropped(code, stderr):
        reason = _last(stderr).rstrip(".")
        return (f"the connection to {device} dropped during the run"
                f"{'' if reason == 'no message' else f' ({reason})'}; no result")
    if code == 255:  # ssh's own failure: DNS, refused, timeout, host key, authentication
        return f"cannot reach {device}: {_last(stderr)}"
    unpack = re.search(r"edgecnn-remote: cannot unpack: (.+)", stderr)
    if code == UNWRITABLE and unpack:
        return f"cannot unpack the bundle on {device}: {unpack[1].strip()} (free space there, or set TMPDIR on it)"
    killed = re.search(r"edgecnn-remote: runner killed by signal (\d+)", stderr)
    if code == KILLED and killed:
        return f"the runner on {device} was killed by {_signal(int(killed[1]))} mid-run; no result"
    if code == 127 or "command not found" in stderr or ("No such file or directory" in stderr and python in stderr):
        return f"{device} has no {python}: install Python 3 there (sudo apt install python3) or pass its path"
    old = re.search(r"edgecnn-remote: python (\d+\.\d+)", stderr)
    if code == 3 and old:
        return (f"{device} has Python {old[1]}; the runner needs {'.'.join(map(str, MIN_PYTHON))} or newer")
    missing = re.search(r"Error: (?:this bundle|the runner|reading a data set) needs (\S+?): (.+)", stderr)
    if missing:
        return f"the board lacks {missing[1]}: {missing[2].strip()} on it"
    error = re.search(r"^Error: (.+)$", stderr, re.M)
    if error:
        return f"on {device}: {error[1]}"
    return f"the runner failed on {device} (exit {code}): {_last(stderr)}"


def _signal(number: int) -> str:
    """SIGKILL and SIGILL with what they usually mean on a board; any other signal by name."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    hints = {signal.SIGKILL: " (out of memory?)",
             signal.SIGILL: " (an instruction this CPU lacks: was the bundle compiled for this board's target?)"}
    return name + hints.get(number, "")


def _cleanup(device: str, python: str, token: str, ssh_options: Sequence[str], connect_timeout: int) -> None:
    cmd = ssh_command(device, [python, "-c", CLEANUP, token], ssh_options=ssh_options,
                      connect_timeout=connect_timeout)
    try:
        subprocess.run(cmd, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass  # best effort: the board may be gone; the runner removes its folder when it ends
