"""The `edgecnn` command line: each command parses, calls one library function, prints.

Every error the user can fix is an EdgecnnError; `main` turns it (and click's
usage errors) into one `Error: ...` line and a non-zero exit code.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum

import click

from edgecnn import __version__
from edgecnn.errors import EdgecnnError


class OutputFormat(str, Enum):
    TABLE = "table"
    JSON = "json"


FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice([f.value for f in OutputFormat]), default=OutputFormat.TABLE.value,
    show_default=True, help="Output format.",
)


def _console():
    from rich.console import Console

    return Console()


def _print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="edgecnn")
def cli() -> None:
    """Edge deployment for CNNs: prune, quantize, compile and benchmark for ARM boards and Jetson."""


# ---------------------------------------------------------------------------- targets


@cli.group("targets", invoke_without_command=True)
@FORMAT_OPTION
@click.pass_context
def targets_cmd(ctx: click.Context, fmt: str) -> None:
    """List the boards edgecnn knows (one TOML file each under targets/)."""
    if ctx.invoked_subcommand is not None:
        return
    from edgecnn.targets import list_targets

    targets = list_targets()
    if fmt == OutputFormat.JSON.value:
        _print_json([t.to_dict() for t in targets])
        return
    from rich.table import Table

    table = Table(title="Targets")
    for col in ("name", "board", "cpu", "cores", "MHz", "runtimes", "gpu"):
        table.add_column(col)
    for t in targets:
        table.add_row(t.name, t.board or t.description, t.cpu, str(t.cores), str(t.clock_mhz or "-"),
                      ",".join(t.runtimes), t.gpu.arch if t.gpu else "-")
    _console().print(table)


@targets_cmd.command("show")
@click.argument("name")
@FORMAT_OPTION
def targets_show(name: str, fmt: str) -> None:
    """Show one target by name, alias or path to a .toml file."""
    from edgecnn.targets import get_target

    data = get_target(name).to_dict()
    if fmt == OutputFormat.JSON.value:
        _print_json(data)
        return
    from rich.table import Table

    table = Table(title=f"Target {data['name']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in data.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        table.add_row(key, "-" if value in ("", None) else str(value))
    _console().print(table)


# ---------------------------------------------------------------------------- zoo


def _fmt_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


@cli.group("zoo", invoke_without_command=True)
@FORMAT_OPTION
@click.pass_context
def zoo_cmd(ctx: click.Context, fmt: str) -> None:
    """List the model zoo: input size, parameters and MACs (computed from the built model)."""
    if ctx.invoked_subcommand is not None:
        return
    from edgecnn.zoo import list_models, model_info

    infos = [model_info(spec.name) for spec in list_models()]
    if fmt == OutputFormat.JSON.value:
        _print_json(infos)
        return
    from rich.table import Table

    table = Table(title="Model zoo", caption="Options: NAME:key=value,...  Details: edgecnn zoo show NAME")
    table.add_column("name", no_wrap=True)
    for col in ("task", "input", "params", "MACs", "demo"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("params", "MACs") else "left")
    for info in infos:
        table.add_row(info["name"], info["task"], "x".join(str(d) for d in info["input_shape"][:2]),
                      _fmt_count(info["params"]), _fmt_count(info["macs"]),
                      "yes" if info["demo_weights"] else "-")
    _console().print(table)


@zoo_cmd.command("show")
@click.argument("model")
@FORMAT_OPTION
def zoo_show(model: str, fmt: str) -> None:
    """Show one zoo model (NAME or NAME:key=value,...) or a model file (.keras, .h5, SavedModel, .onnx, .tflite)."""
    from edgecnn.zoo import describe

    info = describe(model)
    if fmt == OutputFormat.JSON.value:
        _print_json(info)
        return
    from rich.table import Table

    table = Table(title=str(info.get("name", model)), show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in info.items():
        if key in ("params", "macs") and isinstance(value, int):
            value = f"{value:,} ({_fmt_count(value)})"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        table.add_row(key, "-" if value in ("", None) else str(value))
    _console().print(table)


# ---------------------------------------------------------------------------- quantize

# Literal lists keep `edgecnn --help` light; tests/unit/test_quantize.py checks them against the enums.
_QUANT_BACKENDS = ("tflite", "onnx")
_QUANT_METHODS = ("minmax", "entropy", "percentile")
_QUANT_IO = ("int8", "float")


@cli.command("quantize")
@click.argument("model")
@click.option("--calib", required=True, help="Calibration set: a name under calibration/ or a folder of images.")
@click.option("--backend", type=click.Choice(_QUANT_BACKENDS), default="tflite", show_default=True)
@click.option("--per-channel/--per-tensor", default=True, show_default=True,
              help="Weight scales per channel or per tensor.")
@click.option("--method", type=click.Choice(_QUANT_METHODS), default="minmax", show_default=True,
              help="Activation range calibration (tflite: minmax or percentile 99.99; onnx: all three).")
@click.option("--io", type=click.Choice(_QUANT_IO), default=None,
              help="Model input/output type [default: int8 for tflite, float for onnx].")
@click.option("--max-drop", type=float, default=None,
              help="Allowed accuracy drop in points (top-1, or mAP@0.5:0.95); past it: error, exit 1.")
@click.option("--fallback", is_flag=True,
              help="Past --max-drop: try percentile ranges, then keep the most sensitive layers in float.")
@click.option("--weights", default="demo", show_default=True,
              help="Zoo models: demo, random, imagenet or a .weights.h5 file.")
@click.option("--val", type=click.Path(), default=None,
              help="Labelled held-out data (class folders, COCO JSON, VOC, YOLO txt) [default: demo val split].")
@click.option("--val-limit", type=click.IntRange(min=1), default=None, help="Validate on the first N images only.")
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for <model>-int8.*, <model>-fp32.* and <model>-int8.json.")
@FORMAT_OPTION
def quantize_cmd(model, calib, backend, per_channel, method, io, max_drop, fallback, weights, val, val_limit,
                 output_dir, fmt) -> None:
    """Quantize MODEL (zoo name or .keras/.h5/.onnx file) to int8 and validate it against fp32."""
    from edgecnn.quantize import quantize

    def log(msg: str) -> None:
        if fmt != OutputFormat.JSON.value:
            click.echo(f"  {msg}", err=True)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the notes are printed below, once
        result = quantize(model, calib, output_dir, backend=backend, per_channel=per_channel, method=method, io=io,
                          max_drop=max_drop, fallback=fallback, weights=weights, val=val, val_limit=val_limit,
                          log=log)
    if fmt == OutputFormat.JSON.value:
        _print_json(result.to_dict())
        return
    from rich.table import Table

    from edgecnn.quantize.validate import describe_accuracy

    for note in result.warnings:
        click.echo(f"Warning: {note}", err=True)
    acc = result.accuracy
    table = Table(title=f"{result.model} -> int8 ({result.backend})", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("accuracy fp32", describe_accuracy(result.task, acc["fp32"]))
    table.add_row("accuracy int8", describe_accuracy(result.task, acc["int8"]))
    table.add_row("drop (points)", "-" if acc["drop_points"] is None else f"{acc['drop_points']:.2f}")
    for o in result.outputs:
        table.add_row(f"output {o['name']}", f"SNR {o['snr_db']:.1f} dB, cosine {o['cosine']:.4f}")
    size = result.size_bytes
    table.add_row("size", f"{size['fp32']:,} -> {size['int8']:,} bytes ({size['ratio']:.2f}x)")
    table.add_row("calibration", f"{result.calibration['name']} ({result.calibration['images']} images, "
                  f"{result.settings['method']}{' ' + format(result.settings['percentile'], 'g') if result.settings.get('percentile') else ''})")
    table.add_row("validation", f"{result.validation['name']} ({result.validation['images']} images)")
    table.add_row("most sensitive", ", ".join(f"{s['layer']} {s['snr_db']:.1f} dB" for s in result.sensitivity[:3]))
    for step in result.fallback_steps:
        table.add_row("fallback", step)
    table.add_row("kept in float", ", ".join(result.float_layers) or "-")
    table.add_row("written", f"{result.output}\n{result.float_output}\n{result.report}")
    _console().print(table)


# ---------------------------------------------------------------------------- emulator


def _print_pieces(pieces, fmt: str, title: str) -> None:
    if fmt == OutputFormat.JSON.value:
        from edgecnn.emulate.environment import is_ready

        _print_json({"ok": is_ready(pieces), "pieces": [p.to_dict() for p in pieces]})
        return
    from rich.table import Table

    table = Table(title=title)
    table.add_column("piece", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("version")
    table.add_column("path / what to do", overflow="fold")
    for p in pieces:
        state = "ok" if p.ok else "missing" if p.required else "optional"
        table.add_row(p.name, state, p.version or "-", p.path if p.ok else p.hint)
    _console().print(table)


@cli.group("emulator")
def emulator_cmd() -> None:
    """Emulated ARM: an aarch64 sysroot and wheels for qemu-user (no Docker, no binfmt)."""


@emulator_cmd.command("setup")
@click.option("--target", default=None, help="Prepare this target's view only [default: every emulated target].")
@click.option("--with-tvm", is_flag=True, help="Also install the apache-tvm aarch64 runtime (95 MB download).")
@FORMAT_OPTION
def emulator_setup(target: str | None, with_tvm: bool, fmt: str) -> None:
    """Build (or reuse) the sysroot, aarch64 wheels, counting plugin and per-target views."""
    from edgecnn.emulate import setup

    pieces = setup(target, with_tvm=with_tvm, log=lambda msg: click.echo(f"  {msg}", err=True))
    _print_pieces(pieces, fmt, "Emulator environment")


@emulator_cmd.command("status")
@FORMAT_OPTION
def emulator_status(fmt: str) -> None:
    """Say which pieces of the emulator environment exist, with versions and paths."""
    from edgecnn.emulate import status

    _print_pieces(status(), fmt, "Emulator environment")


# ---------------------------------------------------------------------------- entry point


# ---------------------------------------------------------------------------- bench

_BENCH_FORMATS = ("table", "json", "md", "csv")


def _csv_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@cli.command("bench")
@click.option("--target", required=True, help="Target name, alias or TOML file (see `edgecnn targets`).")
@click.option("--model", "models", multiple=True,
              help="Zoo model or model file; repeat for several [default: the demo models].")
@click.option("--backend", default=None, help="Comma-separated: tflite,onnx,tvm [default: the target's preferred].")
@click.option("--precision", default="fp32,int8", show_default=True, help="Comma-separated: fp32,fp16,int8.")
@click.option("--prune", default=None, help="Comma-separated pruning variants, e.g. none,channel:0.3.")
@click.option("--weights", default="demo", show_default=True, help="Zoo models: demo, random or a weights file.")
@click.option("--data", type=click.Path(), default=None,
              help="Labelled data set (COCO JSON, VOC, YOLO txt, class folders) [default: the demo val split].")
@click.option("--device", default=None, help="Bench on a board over SSH: user@host[:port].")
@click.option("--ssh-option", "ssh_options", multiple=True,
              help="With --device: an argument for ssh, repeatable (e.g. --ssh-option=-i --ssh-option=~/.ssh/pi).")
@click.option("--remote-python", default="python3", show_default=True, help="With --device: the board's Python.")
@click.option("--emulate", is_flag=True, default=None, help="Run under qemu with the target's core.")
@click.option("--limit", type=int, default=None, help="Evaluate on the first N images only.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs per variant.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Runtime threads [default: target cores].")
@click.option("--baseline", type=click.Path(), default=None, help="Bench JSON to compare with; exit 1 on regression.")
@click.option("--max-map-drop", type=float, default=0.5, show_default=True, help="Points of mAP allowed to drop.")
@click.option("--max-top1-drop", type=float, default=0.5, show_default=True, help="Points of top-1 allowed to drop.")
@click.option("--max-latency-increase", default="10%", show_default=True, help="Allowed p50 latency increase.")
@click.option("--max-instructions-increase", default="2%", show_default=True,
              help="Allowed emulated instruction-count increase.")
@click.option("--format", "fmt", type=click.Choice(_BENCH_FORMATS), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Also write the report here.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Accuracy vs latency PNG (Pareto front).")
def bench_cmd(target, models, backend, precision, prune, weights, data, device, ssh_options, remote_python, emulate,
              limit, runs, warmup, threads,
              baseline, max_map_drop, max_top1_drop, max_latency_increase, max_instructions_increase, fmt, output,
              plot) -> None:
    """Benchmark models on a target: latency percentiles, FPS, accuracy; native, emulated or over SSH."""
    from edgecnn import report
    from edgecnn.bench.baseline import Thresholds, compare, load_baseline
    from edgecnn.bench.pipeline import bench, make_plan

    thresholds = Thresholds(max_map_drop, max_top1_drop, _percent(max_latency_increase, "--max-latency-increase"),
                            _percent(max_instructions_increase, "--max-instructions-increase"))
    base = load_baseline(baseline) if baseline else None  # a bad baseline fails before minutes of work
    plan = make_plan(target, models=list(models) or None, backends=_csv_list(backend),
                     precisions=_csv_list(precision), prunes=_csv_list(prune), device=device, emulate=emulate,
                     data=data, limit=limit, runs=runs, warmup=warmup, threads=threads, weights=weights,
                     ssh_options=tuple(ssh_options), remote_python=remote_python)
    doc = _run_with_progress(plan, bench, quiet=fmt != "table" and output is None)
    text = report.render(doc, "md" if fmt == "table" else fmt)
    if output:
        from edgecnn.paths import atomic_write_bytes

        atomic_write_bytes(__import__("pathlib").Path(output), text.encode())
    if fmt == "table":
        _console().print(report.rich_table(doc))
        for note in doc.get("notes", []):
            click.echo(f"Note: {note}", err=True)
    else:
        click.echo(text, nl=not text.endswith("\n"))
    if plot:
        report.plot(doc, plot)
    if base is not None:
        regressions = compare(doc["results"], base, thresholds, target=doc["target"])
        if regressions:
            for r in regressions:
                click.echo(f"Regression: {r}", err=True)
            raise _Regressed(f"{len(regressions)} regression(s) against {baseline}")
        click.echo(f"No regression against {baseline} ({len(base['results'])} variants).", err=True)


class _Regressed(EdgecnnError):
    """The bench run is worse than its baseline."""


def _percent(text: str, option: str) -> float:
    try:
        return float(str(text).strip().rstrip("%"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a percentage like 10%", param_hint=option) from None


def _run_with_progress(plan, bench, quiet: bool) -> dict:
    """bench() with a progress bar on stderr (one step per variant), silent for machine-readable output."""
    if quiet:
        return bench(plan)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"bench {plan.target.name} ({plan.mode.value})", total=len(plan.variants))
        return bench(plan, log=lambda msg: progress.update(task, description=msg),
                     on_row=lambda row: progress.advance(task))


# ---------------------------------------------------------------------------- prune

# Literal lists keep `edgecnn --help` light; tests/unit/test_prune.py checks them against the enums.
_PRUNE_METHODS = ("channel", "magnitude")
_PRUNE_IMPORTANCE = ("l1", "l2", "bn")
_PRUNE_SCOPES = ("global", "layer")


@cli.command("prune")
@click.argument("model")
@click.option("--method", type=click.Choice(_PRUNE_METHODS), required=True,
              help="channel: remove whole channels (faster everywhere); magnitude: zero single weights (smaller).")
@click.option("--ratio", type=float, required=True,
              help="channel: share of prunable channels removed; magnitude: target sparsity (0 < R < 1).")
@click.option("--importance", type=click.Choice(_PRUNE_IMPORTANCE), default="l1", show_default=True,
              help="Channel ranking: filter L1/L2 norm or batch-norm |gamma|.")
@click.option("--scope", type=click.Choice(_PRUNE_SCOPES), default="global", show_default=True,
              help="One ranking over all layers, or the same ratio per layer.")
@click.option("--finetune-epochs", type=int, default=3, show_default=True, help="Fine-tuning epochs (0: none).")
@click.option("--data", type=click.Path(), default=None,
              help="Labelled training data (class folders, COCO JSON, VOC, YOLO txt) [default: demo train split].")
@click.option("--val", type=click.Path(), default=None,
              help="Labelled held-out data for accuracy [default: demo val split].")
@click.option("--weights", default="demo", show_default=True,
              help="Zoo models: demo, random, imagenet or a .weights.h5 file.")
@click.option("--max-drop", type=float, default=None, help="Allowed accuracy drop in points; past it: error.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="LiteRT threads for the before/after latency.")
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for <model>-pruned.keras and <model>-pruned.json.")
@FORMAT_OPTION
def prune_cmd(model, method, ratio, importance, scope, finetune_epochs, data, val, weights, max_drop, threads,
              output_dir, fmt) -> None:
    """Prune MODEL (zoo name or .keras/.h5 file with its .json sidecar), fine-tune, and measure it."""
    from edgecnn.prune import prune

    def log(msg: str) -> None:
        if fmt != OutputFormat.JSON.value:
            click.echo(f"  {msg}", err=True)

    r = prune(model, method, ratio, importance=importance, scope=scope, finetune_epochs=finetune_epochs,
              data=data, val=val, weights=weights, output_dir=output_dir, max_drop=max_drop, threads=threads,
              log=log)
    if fmt == OutputFormat.JSON.value:
        _print_json(r.to_dict())
        return
    from rich.table import Table

    from edgecnn.quantize.validate import describe_accuracy

    for note in r.warnings:
        click.echo(f"Warning: {note}", err=True)
    lat = r.latency
    table = Table(title=f"{r.source} -> {r.method} pruning {r.ratio:g}")
    for col in ("", "before", "after", "change"):
        table.add_column(col, justify="left" if not col else "right")
    pct = lambda a, b: f"{(b / a - 1) * 100:+.1f}%" if a else "-"  # noqa: E731
    table.add_row("params", f"{r.params['before']:,}", f"{r.params['after']:,}",
                  pct(r.params["before"], r.params["after"]))
    table.add_row("MACs", _fmt_count(r.macs["before"]), _fmt_count(r.macs["after"]),
                  pct(r.macs["before"], r.macs["after"]))
    size = r.size_bytes
    table.add_row("TFLite fp32 bytes", f"{size['tflite_before']:,}", f"{size['tflite_after']:,}",
                  pct(size["tflite_before"], size["tflite_after"]))
    table.add_row("TFLite gzip bytes", f"{size['tflite_gzip_before']:,}", f"{size['tflite_gzip_after']:,}",
                  pct(size["tflite_gzip_before"], size["tflite_gzip_after"]))
    if r.sparsity:
        t = r.sparsity["tflite"]
        table.add_row("sparsity", "0", f"{r.sparsity['achieved']:.3f}", f"{t['sparse_tensors']} sparse tensors")
        table.add_row("sparse-encoded bytes", "-", f"{t['sparse_tflite_bytes']:,}", "")
    if r.accuracy:
        table.add_row("accuracy", describe_accuracy(r.task, r.accuracy["before"]),
                      describe_accuracy(r.task, r.accuracy["after"]), f"-{r.accuracy['drop_points']:.2f} pts")
    table.add_row(f"latency p50 ms ({lat['threads']} thr)", f"{lat['before']['p50']:.3f}",
                  f"{lat['after']['p50']:.3f}", f"{lat['speedup']:.2f}x")
    table.add_row("FPS", f"{lat['fps']['before']:.1f}", f"{lat['fps']['after']:.1f}", "")
    _console().print(table)
    click.echo(f"written: {r.output}, {r.report}")


# ---------------------------------------------------------------------------- compile

# artifacts is standard library only: cheap enough for `edgecnn --help`.
from edgecnn.artifacts import Backend as _Backend  # noqa: E402
from edgecnn.artifacts import Precision as _Precision  # noqa: E402


@cli.command("compile")
@click.argument("model")
@click.option("--target", required=True, help="Target name, alias or TOML file (see `edgecnn targets`).")
@click.option("--backend", type=click.Choice([b.value for b in _Backend]), default=None,
              help="Runtime to compile for [default: the target's first runtime].")
@click.option("--precision", type=click.Choice([p.value for p in _Precision]), default="fp32", show_default=True,
              help="fp16: tflite float16 weights; int8: tflite/onnx through edgecnn quantize, or an int8 file.")
@click.option("--tune", is_flag=True, help="TVM: tune with MetaSchedule (host only; records kept and reused).")
@click.option("--trials", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Total MetaSchedule trials for the tuning database of this model and target.")
@click.option("--calib", default=None,
              help="Calibration set for int8 (name under calibration/ or folder) [default: demo-<task> for demo models].")
@click.option("--weights", default="demo", show_default=True,
              help="Zoo models: demo, random, imagenet or a .weights.h5 file.")
@click.option("--no-verify", is_flag=True, help="Skip comparing the bundle's outputs with the source model.")
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(file_okay=False),
              help="The bundle folder to write (model file(s) + manifest.json).")
@FORMAT_OPTION
def compile_cmd(model, target, backend, precision, tune, trials, calib, weights, no_verify, output_dir, fmt) -> None:
    """Compile MODEL (zoo name, .keras/.h5, .onnx or .tflite) for a target into a verified bundle."""
    from edgecnn.compile import compile_model

    def log(msg: str) -> None:
        if fmt != OutputFormat.JSON.value:
            click.echo(f"  {msg}", err=True)

    result = compile_model(model, target, backend=backend, precision=precision, output_dir=output_dir, tune=tune,
                           trials=trials, calib=calib, weights=weights, verify=not no_verify, log=log)
    if fmt == OutputFormat.JSON.value:
        _print_json(result.to_dict())
        return
    from rich.table import Table

    m = result.bundle.manifest
    ver = m.verification
    table = Table(title=f"{m.name} -> {m.target} {m.backend} {m.precision}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("bundle", f"{result.bundle.path} ({result.bundle.size_bytes:,} bytes)")
    table.add_row("files", ", ".join(f"{role}: {name}" for role, name in m.files.items()))
    table.add_row("arch", m.arch + (f" (ELF {ver['elf']['machine']} checked)" if "elf" in ver else ""))
    table.add_row("runtime", json.dumps(m.runtime))
    if ver.get("status") == "skipped":
        table.add_row("verification", f"skipped: {ver['reason']}")
    else:
        table.add_row("verification", f"{ver['status']} ({ver['mode']}, {ver['images']} images): max |diff| "
                                      f"{ver['max_abs_diff']:g}, cosine {ver['cosine']:.5f}")
    if "tuning" in m.build:
        tun = m.build["tuning"]
        table.add_row("tuning", f"{tun['records']} records ({tun['records_before']} reused), {tun['database']}")
    table.add_row("cache", f"{'reused' if result.cached else 'built'} in {result.seconds:.1f} s, key {m.cache_key}")
    _console().print(table)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one `Error: ...` line for anything the user can fix."""
    # TensorFlow's C++ start-up chatter (CPU feature notes, absl warnings) is noise on a CLI.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        cli.main(args=argv, prog_name="edgecnn", standalone_mode=False)
    except EdgecnnError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"Error: {e.format_message()} (see 'edgecnn --help')", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug, not bad input: one line unless the user asks for the traceback
        if os.environ.get("EDGECNN_DEBUG"):
            raise
        click.echo(f"Error: internal error: {type(e).__name__}: {e} (set EDGECNN_DEBUG=1 for the traceback)",
                   err=True)
        sys.exit(70)
