"""The `edgecnn` command line: each command parses, calls one library function, prints.

Commands follow the pipeline: targets, zoo, prune, quantize, compile, bench,
emulator. Every choice comes from edgecnn.kinds; tables come from
edgecnn.render (bench's from edgecnn.report). Every error the user can fix is
an EdgecnnError; `main` turns it (and click's usage errors) into one
`Error: ...` line and a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import click

from edgecnn import __version__, render
from edgecnn.errors import EdgecnnError, EdgecnnWarning, one_line
from edgecnn.paths import Terminated, check_output, process_scope, stopped_by
from edgecnn.kinds import (Arch, Backend, IOType, Kind, OutputFormat, Precision, PruneImportance, PruneMethod,
                           PruneScope, QuantBackend, QuantMethod, ReportFormat)

# ---------------------------------------------------------------------------- shared options and output


def choice(kind: type[Kind]) -> click.Choice:
    """The click.Choice of a closed set, so help and validation follow edgecnn.kinds."""
    return click.Choice(kind.values())


def options(*decorators: Callable) -> Callable:
    """Several click options as one decorator, shown by --help in the order given."""

    def apply(f: Callable) -> Callable:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


format_option = click.option("--format", "fmt", type=choice(OutputFormat), default=OutputFormat.TABLE.value,
                             show_default=True, help="Output format.")


def stage_output(help: str) -> Callable:
    """-o/--output (the folder a stage writes, `help` says what goes in it) and --format."""
    return options(click.option("-o", "--output", "output_dir", required=True, type=click.Path(file_okay=False),
                                help=help), format_option)


def weights_option(help: str = "Zoo models: demo, random, imagenet or a .weights.h5 file.") -> Callable:
    return click.option("--weights", default="demo", show_default=True, help=help)


def target_option(required: bool = True,
                  help: str = "Target name, alias or TOML file (see `edgecnn targets`).") -> Callable:
    return click.option("--target", required=required, default=None, help=help)


def calib_option(help: str, required: bool = False) -> Callable:
    return click.option("--calib", required=required, default=None, help=help)


def contract_options(f: Callable) -> Callable:
    """The data-contract options of a model file (edgecnn.contract), passed on as one `contract` dict."""
    import functools

    from edgecnn.kinds import Task

    names = ("input_size", "layout", "mean", "std", "scale", "offset", "bgr", "resize", "classes", "task", "head")

    @functools.wraps(f)
    def command(*args, **kwargs):
        return f(*args, contract={name: kwargs.pop(name) for name in names}, **kwargs)

    return options(
        click.option("--input-size", default=None, help="Model files: input HxW (e.g. 224x224), for free H/W."),
        click.option("--layout", type=click.Choice(["NHWC", "NCHW"], case_sensitive=False), default=None,
                     help="Model files: the ONNX input's layout, where its shape is ambiguous."),
        click.option("--mean", default=None, help="Model files: per-channel mean in 0..1 units, e.g. 0.485,0.456,0.406."),
        click.option("--std", default=None, help="Model files: per-channel std in 0..1 units, e.g. 0.229,0.224,0.225."),
        click.option("--scale", default=None, help="Model files: x = pixel * scale + offset (one or three numbers)."),
        click.option("--offset", default=None, help="Model files: see --scale."),
        click.option("--bgr", is_flag=True, default=None, help="Model files: the model takes BGR channel order."),
        click.option("--resize", type=click.Choice(["stretch", "letterbox"]), default=None,
                     help="Model files: how images are fitted to the input."),
        click.option("--classes", type=click.Path(dir_okay=False), default=None,
                     help="Model files: class names, one per line (or a JSON list)."),
        click.option("--task", type=choice(Task), default=None, help="Model files: what the outputs mean."),
        click.option("--head", default=None,
                     help="Model files: the detector head: yolo, yolov5, yolo:box=xyxy, or a JSON file (ssd).")
    )(command)


def data_option(name: str, help: str) -> Callable:
    """A labelled data set option (--data, --val): a path, the demo split when left out."""
    return click.option(name, type=click.Path(), default=None, help=help)


def progress_log(fmt: str | None = None) -> Callable[[str], None]:
    """Where a library call's progress lines go: indented on stderr, nowhere when stdout carries JSON."""
    if fmt == OutputFormat.JSON:
        return lambda msg: None
    return lambda msg: click.echo(f"  {msg}", err=True)


_console = render.console


# The notes already printed as they were made (see notes_on_stderr), so emit() does not repeat them.
_shown_notes: set[str] = set()


def emit(fmt: str, data: Any, table: Callable[..., Any], *args: Any, notes: Iterable[str] = ()) -> None:
    """Print `data` as JSON, or each note not yet shown as a `Warning:` line on stderr and then `table(*args)`."""
    if fmt == OutputFormat.JSON:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for note in notes:
        if note not in _shown_notes:
            click.echo(f"Warning: {note}", err=True)
    _console().print(table(*args))


def _verbose() -> bool:
    """--verbose was given to the running command, or EDGECNN_DEBUG is set."""
    ctx = click.get_current_context(silent=True)
    return bool(os.environ.get("EDGECNN_DEBUG") or (ctx is not None and ctx.find_root().params.get("verbose")))


@contextlib.contextmanager
def notes_on_stderr():
    """Print the library's notes (EdgecnnWarning) as `Warning: ...` on stderr the moment they are made.

    A note such as "calibrating on 2 images" matters most when the run then fails, so it cannot
    wait for the result. The frameworks' own UserWarnings (TensorFlow's converter chatter) are
    shown only with --verbose or EDGECNN_DEBUG.
    """
    _shown_notes.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("always", EdgecnnWarning)  # every note, not once per call site
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, EdgecnnWarning):
                _shown_notes.add(str(message))
                click.echo(f"Warning: {message}", err=True)
            elif not issubclass(category, UserWarning) or _verbose():
                previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="edgecnn")
@click.option("--verbose", is_flag=True,
              help="Also show the frameworks' own log lines (TensorFlow, absl, LiteRT, converters).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Edge deployment for CNNs: prune, quantize, compile and benchmark for ARM boards and Jetson."""
    from edgecnn.logfilter import native_logs

    ctx.with_resource(native_logs(show=verbose))  # for the whole command, before any heavy import


# ---------------------------------------------------------------------------- targets


@cli.group("targets", invoke_without_command=True)
@format_option
@click.pass_context
def targets_cmd(ctx: click.Context, fmt: str) -> None:
    """List the boards edgecnn knows (one TOML file each under targets/)."""
    if ctx.invoked_subcommand is not None:
        return
    from edgecnn.targets import list_targets

    targets = list_targets()
    emit(fmt, [t.to_dict() for t in targets], render.targets_table, targets)


@targets_cmd.command("show")
@click.argument("name")
@format_option
def targets_show(name: str, fmt: str) -> None:
    """Show one target by name, alias or path to a .toml file."""
    from edgecnn.targets import get_target

    data = get_target(name).to_dict()
    emit(fmt, data, render.target_table, data)


# ---------------------------------------------------------------------------- zoo


@cli.group("zoo", invoke_without_command=True)
@format_option
@click.pass_context
def zoo_cmd(ctx: click.Context, fmt: str) -> None:
    """List the model zoo: input size, parameters and MACs (computed from the built model)."""
    if ctx.invoked_subcommand is not None:
        return
    from edgecnn.zoo import list_models, model_info

    infos = [model_info(spec.name) for spec in list_models()]
    emit(fmt, infos, render.zoo_table, infos)


@zoo_cmd.command("show")
@click.argument("model")
@format_option
def zoo_show(model: str, fmt: str) -> None:
    """Show one zoo model (NAME or NAME:key=value,...) or a model file (.keras, .h5, SavedModel, .onnx, .tflite)."""
    from edgecnn.zoo import describe

    info = describe(model)
    emit(fmt, info, render.model_table, info, model)


# ---------------------------------------------------------------------------- prune


@cli.command("prune")
@click.argument("model")
@click.option("--method", type=choice(PruneMethod), required=True,
              help="channel: remove whole channels (faster everywhere); magnitude: zero single weights (smaller).")
@click.option("--ratio", type=click.FloatRange(0, 1, min_open=True, max_open=True), required=True,
              help="channel: share of prunable channels removed; magnitude: target sparsity (0 < R < 1).")
@click.option("--importance", type=choice(PruneImportance), default=PruneImportance.L1.value, show_default=True,
              help="Channel ranking: filter L1/L2 norm or batch-norm |gamma|.")
@click.option("--scope", type=choice(PruneScope), default=PruneScope.GLOBAL.value, show_default=True,
              help="One ranking over all layers, or the same ratio per layer.")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=3, show_default=True,
              help="Fine-tuning epochs (0: none).")
@data_option("--data", "Labelled training data (class folders, COCO JSON, VOC, YOLO txt) [default: demo train split].")
@data_option("--val", "Labelled held-out data for accuracy [default: demo val split].")
@weights_option()
@contract_options
@click.option("--max-drop", type=click.FloatRange(min=0), default=None,
              help="Allowed accuracy drop in points; past it: error.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="LiteRT threads for the before/after latency.")
@stage_output("Folder for <model>-pruned.keras and <model>-pruned.json.")
def prune_cmd(model, method, ratio, importance, scope, finetune_epochs, data, val, weights, max_drop, threads,
              output_dir, fmt, contract) -> None:
    """Prune MODEL (zoo name or .keras/.h5 file with its .json sidecar), fine-tune, and measure it."""
    from edgecnn.prune import prune

    r = prune(model, method, ratio, importance=importance, scope=scope, finetune_epochs=finetune_epochs,
              data=data, val=val, weights=weights, output_dir=output_dir, max_drop=max_drop, threads=threads,
              contract=contract, log=progress_log(fmt))
    emit(fmt, r.to_dict(), render.prune_table, r, notes=r.warnings)
    if fmt != OutputFormat.JSON:
        click.echo(f"written: {r.output}, {r.report}")


# ---------------------------------------------------------------------------- quantize


@cli.command("quantize")
@click.argument("model")
@calib_option("Calibration set: a name under calibration/ or a folder of images.", required=True)
@click.option("--backend", type=choice(QuantBackend), default=None,
              help="Where the int8 model runs [default: onnx for an .onnx file (QDQ), else tflite].")
@click.option("--per-channel/--per-tensor", default=True, show_default=True,
              help="Weight scales per channel or per tensor.")
@click.option("--method", type=choice(QuantMethod), default=QuantMethod.MINMAX.value, show_default=True,
              help="Activation range calibration (tflite: minmax or percentile 99.99; onnx: all three).")
@click.option("--io", type=choice(IOType), default=None,
              help="Model input/output type [default: int8 for tflite, float for onnx].")
@click.option("--max-drop", type=click.FloatRange(min=0), default=None,
              help="Allowed accuracy drop in points (top-1, or mAP@0.5:0.95); past it: error, exit 1.")
@click.option("--fallback", is_flag=True,
              help="Past --max-drop: try percentile ranges, then keep the most sensitive layers in float.")
@weights_option()
@data_option("--val", "Labelled held-out data (class folders, COCO JSON, VOC, YOLO txt) [default: demo val split].")
@contract_options
@click.option("--val-limit", type=click.IntRange(min=1), default=None, help="Validate on the first N images only.")
@click.option("--arch", type=choice(Arch), default=None,
              help="CPU architecture the int8 model is for (onnx: its activation/weight types) [default: this "
                   "machine's].")
@stage_output("Folder for <model>-int8.*, <model>-fp32.* and <model>-int8.json.")
def quantize_cmd(model, calib, backend, per_channel, method, io, max_drop, fallback, weights, val, val_limit,
                 arch, output_dir, fmt, contract) -> None:
    """Quantize MODEL (zoo name or .keras/.h5/.onnx/.tflite file) to int8 and validate it against fp32."""
    from edgecnn.quantize import quantize

    if backend is None:  # the file's own runtime: an ONNX export stays ONNX (QDQ), no converter in between
        backend = "onnx" if str(model).lower().endswith(".onnx") else "tflite"

    result = quantize(model, calib, output_dir, backend=backend, per_channel=per_channel, method=method, io=io,
                      max_drop=max_drop, fallback=fallback, weights=weights, val=val, val_limit=val_limit,
                      contract=contract, arch=arch, log=progress_log(fmt))
    emit(fmt, result.to_dict(), render.quantize_table, result, notes=result.warnings)


# ---------------------------------------------------------------------------- compile


@cli.command("compile")
@click.argument("model")
@target_option()
@click.option("--backend", type=choice(Backend), default=None,
              help="Runtime to compile for [default: the target's first runtime].")
@click.option("--precision", type=choice(Precision), default=None,
              help="fp16: tflite/ncnn float16 weights; int8: tflite/onnx through edgecnn quantize, ncnn through its "
                   "own calibration table, or an int8 file [default: a model file's own precision, fp32 for Keras "
                   "and zoo models].")
@click.option("--tune", is_flag=True, help="TVM: tune with MetaSchedule (host only; records kept and reused).")
@click.option("--trials", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Total MetaSchedule trials for the tuning database of this model and target.")
@calib_option("Calibration set for int8 (name under calibration/ or folder) [default: demo-<task> for demo models].")
@weights_option()
@click.option("--no-verify", is_flag=True, help="Skip comparing the bundle's outputs with the source model.")
@contract_options
@stage_output("The bundle folder to write (model file(s) + manifest.json).")
def compile_cmd(model, target, backend, precision, tune, trials, calib, weights, no_verify, output_dir, fmt,
                contract) -> None:
    """Compile MODEL (zoo name, .keras/.h5, .onnx or .tflite) for a target into a verified bundle."""
    from edgecnn.compile import compile_model

    result = compile_model(model, target, backend=backend, precision=precision, output_dir=output_dir, tune=tune,
                           trials=trials, calib=calib, weights=weights, verify=not no_verify, contract=contract,
                           log=progress_log(fmt))
    emit(fmt, result.to_dict(), render.compile_table, result)


# ---------------------------------------------------------------------------- bench


def comma_list(kind: type[Kind] | None = None) -> Callable:
    """Callback for a comma-separated option: a list, None when empty (the library's default then).

    With `kind`, every item must be one of its values, named in the error otherwise.
    """

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
        items = [v.strip() for v in (value or "").split(",") if v.strip()]
        for item in items if kind is not None else ():
            if item not in kind.values():
                raise click.BadParameter(f"unknown {param.name} {item!r}; choose from {', '.join(kind.values())}")
        return items or None

    return parse


def _percent(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """Callback: '10%' or '10' -> 10.0 (0 or more: a negative allowance would fail every run)."""
    try:
        percent = float(str(value).strip().rstrip("%"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a percentage like 10%", param_hint=param.opts[0]) from None
    if not percent >= 0:
        raise click.BadParameter(f"{value!r} must be 0% or more", param_hint=param.opts[0])
    return percent


_ssh_options = options(
    click.option("--device", default=None, help="Bench on a board over SSH: user@host[:port]."),
    click.option("--ssh-option", "ssh_options", multiple=True, help="With --device: an argument for ssh, "
                 "repeatable (e.g. --ssh-option=-i --ssh-option=~/.ssh/pi)."),
    click.option("--remote-python", default="python3", show_default=True, help="With --device: the board's Python."),
)

_regression_options = options(
    click.option("--baseline", type=click.Path(), default=None,
                 help="Bench JSON to compare with; exit 1 on regression."),
    click.option("--max-map-drop", type=click.FloatRange(min=0), default=0.5, show_default=True,
                 help="Points of mAP allowed to drop."),
    click.option("--max-top1-drop", type=click.FloatRange(min=0), default=0.5, show_default=True,
                 help="Points of top-1 allowed to drop."),
    click.option("--max-latency-increase", default="10%", show_default=True, callback=_percent,
                 help="Allowed p50 latency increase."),
    click.option("--max-instructions-increase", default="2%", show_default=True, callback=_percent,
                 help="Allowed emulated instruction-count increase."),
)


@cli.command("bench")
@target_option()
@click.option("--model", "models", multiple=True,
              help="Zoo model or model file; repeat for several [default: the demo models].")
@click.option("--backend", callback=comma_list(Backend), default=None,
              help=f"Comma-separated: {','.join(Backend.values())} [default: the target's preferred].")
@click.option("--precision", callback=comma_list(Precision), default=None,
              help=f"Comma-separated: {','.join(Precision.values())} [default: fp32,int8 for zoo models, a model "
                   "file's own precision for files].")
@click.option("--prune", callback=comma_list(), default=None,
              help="Comma-separated pruning variants, e.g. none,channel:0.3.")
@weights_option("Zoo models: demo, random or a weights file.")
@data_option("--data", "Labelled data set (COCO JSON, VOC, YOLO txt, class folders) [default: the demo val split, "
             "for the demo models only].")
@contract_options
@calib_option("Calibration set for int8 (name under calibration/ or folder) [default: demo-<task>, for the demo "
              "models only].")
@_ssh_options
@click.option("--emulate", is_flag=True, default=None, help="Run under qemu with the target's core.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate on the first N images only.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs per variant.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Runtime threads [default: target cores; 1 on a machine with 2 cores or fewer].")
@click.option("--tune", is_flag=True, help="tvm on the host: build with MetaSchedule records, as compile --tune.")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="With --tune: total trials of each model's tuning database [default: compile's].")
@click.option("--cpu-time", is_flag=True, default=False,
              help="Native runs: latency as process CPU time per invoke (steadier on a busy machine).")
@click.option("--no-amx", is_flag=True, default=False,
              help="Native runs on an x86 CPU with AMX: the runtimes may not use it (XNNPACK's int8 AMX kernels "
                   "are slower than its VNNI ones on small layers).")
@_regression_options
@click.option("--format", "fmt", type=choice(ReportFormat), default=ReportFormat.TABLE.value, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Also write the report here.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Accuracy vs latency PNG (Pareto front).")
@click.option("--save-predictions", type=click.Path(dir_okay=False), default=None,
              help="Write predictions on --data as JSON (COCO results with the data set's ids for detectors); "
                   "one file per variant, FILE-<model>-<backend>-<precision>.json, when there are several.")
def bench_cmd(target, models, backend, precision, prune, weights, data, calib, device, ssh_options, remote_python,
              emulate, limit, runs, warmup, threads, tune, trials, cpu_time, no_amx, baseline, max_map_drop,
              max_top1_drop, max_latency_increase, max_instructions_increase, fmt, output, plot, save_predictions,
              contract) -> None:
    """Benchmark models on a target: latency percentiles, FPS, accuracy; native, emulated or over SSH."""
    for path, what in ((output, "--output"), (plot, "--plot")):  # written at the end: checked first
        if path:
            check_output(path, "file", what)
    from edgecnn import report
    from edgecnn.bench.baseline import Thresholds, compare, load_baseline
    from edgecnn.bench.pipeline import bench
    from edgecnn.bench.plan import make_plan

    thresholds = Thresholds(max_map_drop, max_top1_drop, max_latency_increase, max_instructions_increase)
    base = load_baseline(baseline) if baseline else None  # a bad baseline fails before minutes of work
    plan = make_plan(target, models=list(models) or None, backends=backend, precisions=precision,
                     prunes=prune, device=device, emulate=emulate, data=data, limit=limit, runs=runs,
                     warmup=warmup, threads=threads, weights=weights, ssh_options=tuple(ssh_options),
                     remote_python=remote_python, calib=calib, contract=contract, save_predictions=save_predictions,
                     cpu_time=cpu_time, tune=_tune_trials(tune, trials), no_amx=no_amx)
    doc = bench(plan) if fmt != ReportFormat.TABLE and output is None else render.with_progress(plan, bench)
    text = report.render(doc, ReportFormat.MD.value if fmt == ReportFormat.TABLE else fmt)
    if output:
        from pathlib import Path

        from edgecnn.paths import atomic_write_bytes

        atomic_write_bytes(Path(output), text.encode())
    if fmt == ReportFormat.TABLE:
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


def _tune_trials(tune: bool, trials: int | None) -> int | None:
    if trials is not None and not tune:
        raise EdgecnnError("--trials needs --tune")
    from edgecnn.compile.tune import DEFAULT_TRIALS

    return (trials or DEFAULT_TRIALS) if tune else None


class _Regressed(EdgecnnError):
    """The bench run is worse than its baseline."""


# ---------------------------------------------------------------------------- emulator


@cli.group("emulator")
def emulator_cmd() -> None:
    """Emulated ARM: an aarch64 sysroot and wheels for qemu-user (no Docker, no binfmt)."""


@emulator_cmd.command("setup")
@target_option(required=False, help="Prepare this target's view only [default: every emulated target].")
@click.option("--with-tvm", is_flag=True, help="Also install the apache-tvm aarch64 runtime (95 MB download).")
@format_option
def emulator_setup(target: str | None, with_tvm: bool, fmt: str) -> None:
    """Build (or reuse) the sysroot, aarch64 wheels, counting plugin and per-target views."""
    from edgecnn.emulate import setup

    pieces = setup(target, with_tvm=with_tvm, log=progress_log())
    emit(fmt, render.pieces_doc(pieces), render.pieces_table, pieces, "Emulator environment")


@emulator_cmd.command("status")
@format_option
def emulator_status(fmt: str) -> None:
    """Say which pieces of the emulator environment exist, with versions and paths."""
    from edgecnn.emulate import status

    pieces = status()
    emit(fmt, render.pieces_doc(pieces), render.pieces_table, pieces, "Emulator environment")


# ---------------------------------------------------------------------------- entry point


def _stopped(cause: BaseException | None) -> None:
    """One line and the shell's exit code: 130 for Ctrl-C, 143 for SIGTERM (paths.Terminated)."""
    terminated = isinstance(cause, Terminated)
    click.echo("Error: terminated" if terminated else "Error: interrupted", err=True)
    sys.exit(143 if terminated else 130)


def _stopped_first() -> None:
    """Report the interrupt when one arrived: an error that followed it is its consequence."""
    if stopped_by() is not None:
        _stopped(Terminated() if stopped_by() == signal.SIGTERM else KeyboardInterrupt())


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one `Error: ...` line for anything the user can fix."""
    try:
        with process_scope(), notes_on_stderr():  # SIGTERM cleans up like Ctrl-C; stale temporaries swept
            cli.main(args=argv, prog_name="edgecnn", standalone_mode=False)
    except EdgecnnError as e:
        _stopped_first()  # a library broken by the interrupt, whose error edgecnn then worded: the interrupt
        click.echo(f"Error: {one_line(e)}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort as e:  # click's wrapping of a KeyboardInterrupt (or a Terminated)
        _stopped(e.__cause__ or e.__context__)
    except click.ClickException as e:
        click.echo(f"Error: {one_line(e.format_message())} (see 'edgecnn --help')", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt as e:
        _stopped(e)
    except Exception as e:  # a bug, not bad input: one line unless the user asks for the traceback
        _stopped_first()  # an interrupt that broke a library mid-import: still the interrupt
        if os.environ.get("EDGECNN_DEBUG"):
            raise
        click.echo(f"Error: internal error: {type(e).__name__}: {one_line(e)} "
                   "(set EDGECNN_DEBUG=1 for the traceback)", err=True)
        sys.exit(70)
