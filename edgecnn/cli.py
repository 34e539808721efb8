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
              help="Activation range calibration (tflite: minmax only).")
@click.option("--io", type=click.Choice(_QUANT_IO), default=None,
              help="Model input/output type [default: int8 for tflite, float for onnx].")
@click.option("--max-drop", type=float, default=None,
              help="Allowed accuracy drop in points (top-1, or mAP@0.5:0.95); past it: error, exit 1.")
@click.option("--fallback", is_flag=True, help="Keep the most sensitive layers in float until inside --max-drop.")
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
    table.add_row("calibration", f"{result.calibration['name']} ({result.calibration['images']} images)")
    table.add_row("validation", f"{result.validation['name']} ({result.validation['images']} images)")
    table.add_row("most sensitive", ", ".join(f"{s['layer']} {s['snr_db']:.1f} dB" for s in result.sensitivity[:3]))
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
