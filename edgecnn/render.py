"""Terminal tables for the describing commands: targets, zoo, prune, quantize, compile, emulator.

Each function takes what one library call returned and gives back a rich Table;
the CLI only prints it. Bench documents are rendered by edgecnn.report, which
also writes them to files; bench's progress bar is here. rich is imported inside the functions so that
`edgecnn --help` stays light.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

WIDE = 200  # columns without a terminal (CI logs, pipes): rich's 80 wraps the tables into fragments


def console(stderr: bool = False):
    """The rich Console that every table and progress bar prints through.

    On a terminal, the terminal's width. Without one (CI, a pipe, a file) COLUMNS
    when it is set, else WIDE, so a table keeps one line per row instead of
    rich's 80 columns breaking names and numbers apart.
    """
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if _is_terminal(stream):
        return Console(stderr=stderr)
    columns = os.environ.get("COLUMNS", "")
    return Console(stderr=stderr, width=int(columns) if columns.isdigit() and int(columns) > 0 else WIDE)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def fmt_count(n: int | None) -> str:
    """A parameter or MAC count in short form: 13.32M, 219.83k, '-' when unknown."""
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _cell(value: Any) -> str:
    """One value of a key/value table: nested data as JSON, empty as '-'."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value)
    return "-" if value in ("", None) else str(value)


def _key_value_table(title: str):
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    return table


def _describe_accuracy(task: str, acc: dict | None) -> str:
    from edgecnn.runner.metrics import describe_accuracy

    return describe_accuracy(task, acc)


# ---------------------------------------------------------------------------- targets and zoo


def targets_table(targets: list) -> Any:
    """`edgecnn targets`: one row per board."""
    from rich.table import Table

    table = Table(title="Targets")
    # The backends column keeps its old heading: the printed table did not change with the rename.
    for col in ("name", "board", "cpu", "cores", "MHz", "backends", "gpu"):
        table.add_column(col, no_wrap=col != "board", justify="right" if col in ("cores", "MHz") else "left")
    for t in targets:
        table.add_row(t.name, t.board or t.description, t.cpu, str(t.cores), str(t.clock_mhz or "-"),
                      ",".join(t.backends), t.gpu.arch if t.gpu else "-")
    return table


def target_table(data: dict) -> Any:
    """`edgecnn targets show`: every field of one target (its to_dict())."""
    table = _key_value_table(f"Target {data['name']}")
    for key, value in data.items():
        table.add_row(key, _cell(value))
    return table


def zoo_table(infos: list[dict]) -> Any:
    """`edgecnn zoo`: one row per model, counts in short form."""
    from rich.table import Table

    table = Table(title="Model zoo", caption="Options: NAME:key=value,...  Details: edgecnn zoo show NAME")
    table.add_column("name", no_wrap=True)
    for col in ("task", "input", "params", "MACs", "demo"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("params", "MACs") else "left")
    for info in infos:
        table.add_row(info["name"], info["task"], "x".join(str(d) for d in info["input_shape"][:2]),
                      fmt_count(info["params"]), fmt_count(info["macs"]),
                      "yes" if info["demo_weights"] else "-")
    return table


def model_table(info: dict, ref: str) -> Any:
    """`edgecnn zoo show`: one model's description; `ref` titles it when the description has no name."""
    table = _key_value_table(str(info.get("name", ref)))
    for key, value in info.items():
        if key in ("params", "macs") and isinstance(value, int):
            value = f"{value:,} ({fmt_count(value)})"
        table.add_row(key, _cell(value))
    return table


# ---------------------------------------------------------------------------- stages


def _change(before: float, after: float) -> str:
    return f"{(after / before - 1) * 100:+.1f}%" if before else "-"


def prune_table(r) -> Any:
    """`edgecnn prune`: before/after/change for size, compute, accuracy and latency of a PruneResult."""
    from rich.table import Table

    table = Table(title=f"{r.source} -> {r.method} pruning {r.ratio:g}")
    for col in ("", "before", "after", "change"):
        table.add_column(col, justify="left" if not col else "right", no_wrap=bool(col))
    params, macs, size, lat = r.params, r.macs, r.size_bytes, r.latency
    table.add_row("params", f"{params['before']:,}", f"{params['after']:,}",
                  _change(params["before"], params["after"]))
    table.add_row("MACs", fmt_count(macs["before"]), fmt_count(macs["after"]), _change(macs["before"], macs["after"]))
    table.add_row("TFLite fp32 bytes", f"{size['tflite_before']:,}", f"{size['tflite_after']:,}",
                  _change(size["tflite_before"], size["tflite_after"]))
    table.add_row("TFLite gzip bytes", f"{size['tflite_gzip_before']:,}", f"{size['tflite_gzip_after']:,}",
                  _change(size["tflite_gzip_before"], size["tflite_gzip_after"]))
    if r.sparsity:
        t = r.sparsity["tflite"]
        table.add_row("sparsity", "0", f"{r.sparsity['achieved']:.3f}", f"{t['sparse_tensors']} sparse tensors")
        table.add_row("sparse-encoded bytes", "-", f"{t['sparse_tflite_bytes']:,}", "")
    if r.accuracy:
        table.add_row("accuracy", _describe_accuracy(r.task, r.accuracy["before"]),
                      _describe_accuracy(r.task, r.accuracy["after"]), f"-{r.accuracy['drop_points']:.2f} pts")
    table.add_row(f"latency p50 ms ({lat['threads']} thr)", f"{lat['before']['p50']:.3f}",
                  f"{lat['after']['p50']:.3f}", f"{lat['speedup']:.2f}x")
    table.add_row("FPS", f"{lat['fps']['before']:.1f}", f"{lat['fps']['after']:.1f}", "")
    return table


def quantize_table(result) -> Any:
    """`edgecnn quantize`: accuracy, output agreement, size, data sets and fallback of a QuantizeResult."""
    acc = result.accuracy
    table = _key_value_table(f"{result.model} -> int8 ({result.backend})")
    table.add_row("accuracy fp32", _describe_accuracy(result.task, acc["fp32"]))
    table.add_row("accuracy int8", _describe_accuracy(result.task, acc["int8"]))
    table.add_row("drop (points)", "-" if acc["drop_points"] is None else f"{acc['drop_points']:.2f}")
    for o in result.outputs:
        table.add_row(f"output {o['name']}", f"SNR {o['snr_db']:.1f} dB, cosine {o['cosine']:.4f}")
    size = result.size_bytes
    table.add_row("size", f"{size['fp32']:,} -> {size['int8']:,} bytes ({size['ratio']:.2f}x)")
    method = result.settings["method"]
    if result.settings.get("percentile"):
        method += f" {result.settings['percentile']:g}"
    calib = result.calibration
    table.add_row("calibration", f"{calib['name']} ({calib['images']} images, {method})")
    table.add_row("validation", f"{result.validation['name']} ({result.validation['images']} images)")
    table.add_row("most sensitive", ", ".join(f"{s['layer']} {s['snr_db']:.1f} dB" for s in result.sensitivity[:3]))
    for step in result.fallback_steps:
        table.add_row("fallback", step)
    table.add_row("kept in float", ", ".join(result.float_layers) or "-")
    table.add_row("written", f"{result.output}\n{result.float_output}\n{result.report}")
    return table


def compile_table(result) -> Any:
    """`edgecnn compile`: the bundle, its verification, tuning and cache state of a CompileResult."""
    m = result.bundle.manifest
    ver = m.verification
    table = _key_value_table(f"{m.name} -> {m.target} {m.backend} {m.precision}")
    table.add_row("bundle", f"{result.bundle.path} ({result.bundle.size_bytes:,} bytes)")
    table.add_row("files", ", ".join(f"{role}: {name}" for role, name in m.files.items()))
    table.add_row("arch", m.arch + (f" (ELF {ver['elf']['machine']} checked)" if "elf" in ver else ""))
    table.add_row("backend options", json.dumps(m.backend_options))
    if ver.get("status") == "skipped":
        table.add_row("verification", f"skipped: {ver['reason']}")
    else:
        table.add_row("verification", f"{ver['status']} ({ver['mode']}, {ver['images']} images): max |diff| "
                                      f"{ver['max_abs_diff']:g}, cosine {ver['cosine']:.5f}")
    if "tuning" in m.build:
        tun = m.build["tuning"]
        table.add_row("tuning", f"{tun['records']} records ({tun['records_before']} reused), {tun['database']}")
    table.add_row("cache", f"{'reused' if result.cached else 'built'} in {result.seconds:.1f} s, key {m.cache_key}")
    return table


# ---------------------------------------------------------------------------- bench and emulator


def with_progress(plan, bench) -> dict:
    """`bench(plan)` with a progress bar on stderr, one step per variant, gone when it ends.

    Without a terminal there is no bar (a CI log would only get its blank line).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    err = console(stderr=True)
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(f"bench {plan.target.name} ({plan.mode.value})", total=len(plan.variants))
        return bench(plan, log=lambda msg: progress.update(task, description=msg),
                     on_row=lambda row: progress.advance(task))


def pieces_doc(pieces: list) -> dict:
    """The JSON form of `edgecnn emulator status/setup`: overall readiness and every piece."""
    from edgecnn.emulate.environment import is_ready

    return {"ok": is_ready(pieces), "pieces": [p.to_dict() for p in pieces]}


def pieces_table(pieces: list, title: str) -> Any:
    """`edgecnn emulator status/setup`: each piece's state, version, and its path or what to do."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("piece", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("version")
    table.add_column("path / what to do", overflow="fold")
    for p in pieces:
        state = "ok" if p.ok else "missing" if p.required else "optional"
        table.add_row(p.name, state, p.version or "-", p.path if p.ok else p.hint)
    return table
