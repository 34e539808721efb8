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
