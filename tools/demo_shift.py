#!/usr/bin/env python3
"""How far the demo YOLO-Lite's accuracy carries past the scenes it was trained on.

Benches the zoo model yolo_lite with its demo weights (TFLite, fp32 and int8, on the host) on the demo
detection val split and on val-shift (edgecnn.data.demo: other seeds, and in each image a random subset
of background, fill, clutter and size drawn in a style no training image has), each with the ordinary
`edgecnn bench ... --data <folder> --format json`, so the figures are the ones a user gets from the same
command. Then, unless --no-ablation, the same bench on val-shift's layouts with exactly one aspect
restyled in every image, and with all four: what each aspect costs on its own. Writes the tables, the
commands and a paragraph for README into tools/demo_shift.md.

    python tools/demo_shift.py                  # everything, about 3 minutes once the bundles are built
    python tools/demo_shift.py --no-ablation --limit 50 --output /tmp/shift.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing it

PRECISIONS = ("fp32", "int8")


def bench_argv(data: Path, limit: int | None) -> list[str]:
    """The bench command for one data folder; one timed run, since only accuracy is read here."""
    argv = ["edgecnn", "bench", "--target", "host", "--model", "yolo_lite", "--backend", "tflite",
            "--precision", ",".join(PRECISIONS), "--data", str(data), "--format", "json",
            "--runs", "1", "--warmup", "0"]
    return argv + (["--limit", str(limit)] if limit else [])


def run_bench(data: Path, limit: int | None) -> dict[str, dict]:
    """Bench one folder in its own process; {precision: {"map50_95", "map50", "images"}}."""
    argv = bench_argv(data, limit)
    proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"Error: `{' '.join(argv)}` exited {proc.returncode}: {last}")
    out = {}
    for row in json.loads(proc.stdout)["results"]:
        acc = row["accuracy"] or {}
        out[row["precision"]] = {"map50_95": acc.get("map50_95"), "map50": acc.get("map50"), "images": row["images"]}
    missing = set(PRECISIONS) - set(out)
    if missing:
        raise SystemExit(f"Error: bench on {data} gave no {', '.join(sorted(missing))} row")
    return out


def shown(path: Path) -> str:
    """A path as the note shows it: the home folder as ~, so the commands read the same on any machine."""
    home = str(Path.home())
    return "~" + str(path)[len(home):] if str(path).startswith(home + os.sep) else str(path)


def provenance() -> str:
    """edgecnn version and commit, and whether the tree had uncommitted changes."""
    from edgecnn import __version__

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO).stdout.strip()
        except OSError:
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    dirty = " plus uncommitted changes" if git("status", "--porcelain") else ""
    return f"edgecnn {__version__}, commit {commit}{dirty}"


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def relative_drop(base: float | None, new: float | None) -> str:
    """Relative change from base to new, signed (-25% is a quarter lost)."""
    if base is None or new is None or base == 0:
        return "-"
    return f"{(new - base) / base:+.0%}"


def main_table(results: dict[str, dict], splits: list[str]) -> list[str]:
    lines = ["| split | precision | mAP@0.5:0.95 | mAP@0.5 | images | mAP@0.5:0.95 vs val |",
             "|---|---|---|---|---|---|"]
    for split in splits:
        for p in PRECISIONS:
            r, base = results[split][p], results["val"][p]
            change = "-" if split == "val" else relative_drop(base["map50_95"], r["map50_95"])
            lines.append(f"| {split} | {p} | {fmt(r['map50_95'])} | {fmt(r['map50'])} | {r['images']} | {change} |")
    return lines


def ablation_table(results: dict[str, dict], rows: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    lines = ["| restyled in every image | fp32 mAP@0.5:0.95 | fp32 mAP@0.5 | int8 mAP@0.5:0.95 | int8 mAP@0.5 | "
             "images | fp32 mAP@0.5:0.95 vs val |", "|---|---|---|---|---|---|---|"]
    base = results["val"]["fp32"]["map50_95"]
    for name, _ in rows:
        r = results[name]
        lines.append(f"| {name} | {fmt(r['fp32']['map50_95'])} | {fmt(r['fp32']['map50'])} | "
                     f"{fmt(r['int8']['map50_95'])} | {fmt(r['int8']['map50'])} | {r['fp32']['images']} | "
                     f"{relative_drop(base, r['fp32']['map50_95'])} |")
    return lines


def sanity_line(results: dict[str, dict]) -> list[str]:
    """Whether val-shift's scenes drawn in the trained style score like val: if so, the drop is the style's."""
    none, val = results["none"]["fp32"]["map50_95"], results["val"]["fp32"]["map50_95"]
    if none is None or val is None:
        return []
    verdict = ("so the new seeds, layouts and label files cost nothing and the drop is the style's"
               if abs(none - val) < 0.02 else "so part of the drop is not the style's")
    return [f"`none` scores fp32 mAP@0.5:0.95 {fmt(none)} against val's {fmt(val)}: {verdict}.", ""]


def readme_paragraph(results: dict[str, dict]) -> str:
    v, s = results["val"], results["val-shift"]
    return (
        "The demo detector has only ever seen one style of scene. A second detection split, `val-shift` "
        f"(`edgecnn.data.demo`, {s['fp32']['images']} images, its own seeds; in each image a random non-empty subset of four "
        "aspects is drawn in a style no training image has: striped, checked, mosaic or dark backgrounds; "
        "outlined, gradient, striped or noisy fills; dense clutter with scribbles and glyphs; objects from "
        "16 to 168 px and up to six of them), with the same classes and COCO labels, shows how far its "
        f"accuracy carries: YOLO-Lite fp32 mAP@0.5:0.95 {fmt(v['fp32']['map50_95'])} on val, "
        f"{fmt(s['fp32']['map50_95'])} on val-shift ({relative_drop(v['fp32']['map50_95'], s['fp32']['map50_95'])}; "
        f"mAP@0.5 {fmt(v['fp32']['map50'])} -> {fmt(s['fp32']['map50'])}), int8 "
        f"{fmt(v['int8']['map50_95'])} -> {fmt(s['int8']['map50_95'])}. "
        + ("The demo weights are a pipeline fixture, not a shape detector that generalises; "
           if (s["fp32"]["map50_95"] or 0) < 0.75 * (v["fp32"]["map50_95"] or 0) else "")
        + "`tools/demo_shift.md` has the commands and what each aspect costs on its own "
        "(`python tools/demo_shift.py` remakes it)."
    )


def write_note(path: Path, results: dict, data: dict[str, Path], ablation: list, limit: int | None) -> None:
    from edgecnn.data import demo

    lines = [
        "# The demo detector on scenes it was not trained on",
        "",
        f"Made by `python tools/demo_shift.py{' --limit ' + str(limit) if limit else ''}` ({provenance()}). "
        "Model: zoo `yolo_lite` with its demo weights, TFLite on the host (int8: edgecnn's own "
        "quantization with the demo calibration set); COCO mAP from `edgecnn bench`.",
        "",
        "`val` is the ordinary demo detection val split. `val-shift` (`demo_path(\"detection\", \"val-shift\")`, "
        "generated into the cache on first use, the same bytes every run) has its own seeds, the same five "
        "classes and the same COCO label format; in each image each of the aspects "
        f"{', '.join(demo.SHIFT_ASPECTS)} is, with probability 1/2 (at least one per image), drawn in a style "
        "no train, val or calibration image has:",
        "",
        "- background: two-colour stripes or checks (period 6-26 px), a coloured mosaic, or a dark grainy "
        "ground, instead of a soft low-saturation gradient;",
        "- fill: an outline only (2-5 px, the box includes the stroke), a linear gradient, stripes, or a "
        "coarse two-tone texture, instead of one flat colour; the main colour is picked to stand out from "
        "what lies under the object;",
        "- clutter: 8-19 strokes plus 2-6 thick random-walk scribbles and up to 4 printed glyphs behind the "
        "objects and more in front, instead of 2-9 thin strokes;",
        f"- size: objects {demo.SHIFT_OBJECTS['detection'][0]}-{demo.SHIFT_OBJECTS['detection'][1]} px "
        f"(longest side), up to {demo.SHIFT_OBJECTS['detection'][2]} per image, instead of "
        f"{demo.CONFIGS['detection'].min_object}-{demo.CONFIGS['detection'].max_object} px and up to "
        f"{demo.CONFIGS['detection'].max_objects}.",
        "",
        "## Figures",
        "",
        *main_table(results, ["val", "val-shift"]),
        "",
    ]
    if ablation:
        lines += [
            "## What each aspect costs on its own",
            "",
            f"val-shift's first {results['val-shift']['fp32']['images']} scenes (`demo.generate(\"detection\", "
            "\"val-shift\", folder, aspects=[...])`, a temporary folder) with exactly the named aspects "
            "restyled in every image and the rest in the trained style; each part of a scene has its own "
            "random stream, so the objects (unless size is restyled), backgrounds and camera effects are "
            "the same in every row. `none` is those scenes entirely in the trained style.",
            "",
            *ablation_table(results, ablation),
            "",
            *sanity_line(results),
        ]
    lines += ["## Commands", "", "```"]
    lines += [" ".join(["python3", "-m", *bench_argv(Path(shown(p)), limit)]) for p in data.values()]
    lines += ["```", "", "Accuracy only: `--runs 1 --warmup 0`, since no latency is read here.", "",
              "## For README", "", readme_paragraph(results), ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, help="bench the first N images of each split only")
    ap.add_argument("--no-ablation", action="store_true", help="skip the one-aspect-at-a-time runs")
    ap.add_argument("--output", type=Path, default=REPO / "tools" / "demo_shift.md",
                    help="where the note goes [default: tools/demo_shift.md]")
    args = ap.parse_args(argv)
    from edgecnn.data import demo

    data = {split: demo.demo_path("detection", split) for split in ("val", "val-shift")}
    results: dict[str, dict] = {}
    for split, path in data.items():
        results[split] = run_bench(path, args.limit)
        print(split, json.dumps(results[split]), flush=True)
    ablation = [] if args.no_ablation else [("none", ())] + [(a, (a,)) for a in demo.SHIFT_ASPECTS] + [
        ("all four", demo.SHIFT_ASPECTS)]
    with tempfile.TemporaryDirectory(prefix="edgecnn-demo-shift-") as tmp:
        for name, aspects in ablation:
            folder = demo.generate("detection", "val-shift", Path(tmp) / name.replace(" ", "-"), count=args.limit,
                                   aspects=aspects)
            results[name] = run_bench(folder, args.limit)
            print(name, json.dumps(results[name]), flush=True)
    write_note(args.output, results, data, ablation, args.limit)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
