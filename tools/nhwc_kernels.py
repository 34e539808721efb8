"""Single MobileNetV2 1.0/224 kernels tuned in NCHW and in NHWC for the same trials, side by side.

    python tools/nhwc_kernels.py [--trials 64] [KERNEL ...]

Why compile.tvm imports a Keras model for tuning through its TFLite export (NHWC): each kernel here is
one fused convolution (+bias, +ReLU6 where the model has it) with random weights, built as Relax,
lowered as compile.tune.tuned_build lowers (weights layout-free, so prepacking is open to both), and
tuned with compile.tune.tune_tasks, the same batches, search and builder as `edgecnn compile --tune`.
It prints MetaSchedule's best measured time for each layout and their ratio. Results are kept in
--out (one JSON object, kernel-layout -> figures), so an interrupted run resumes where it stopped.
Time it on an idle machine: it is a timing run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

# name: (in channels, out channels, input height = width, kernel, stride, depthwise, ReLU6)
KERNELS = {
    "pw7_320_1280": (320, 1280, 7, 1, 1, False, True),
    "pw7_960_320": (960, 320, 7, 1, 1, False, False),
    "pw112_16_96": (16, 96, 112, 1, 1, False, True),
    "dw112_96_s2": (96, 96, 112, 3, 2, True, True),
    "dw56_144": (144, 144, 56, 3, 1, True, True),
    "pw56_144_24": (144, 24, 56, 1, 1, False, False),
    "pw14_96_576": (96, 576, 14, 1, 1, False, True),
}
LAYOUTS = ("NCHW", "NHWC")


def kernel_module(name: str, layout: str):
    """One kernel as a Relax IRModule; NCHW/OIHW as ONNX imports it, NHWC/HWIO (HWOI depthwise) as TFLite does."""
    import numpy as np
    from tvm import relax

    cin, cout, hw, k, stride, depthwise, relu6 = KERNELS[name]
    groups = cin if depthwise else 1
    # TFLite's SAME: symmetric for stride 1, bottom/right only for stride 2 (what both frontends give)
    padding = [k // 2] * 4 if stride == 1 else [0, 0, k // 2, k // 2]
    if layout == "NCHW":
        shape, weight, kernel_layout, bias = (1, cin, hw, hw), (cout, cin // groups, k, k), "OIHW", (1, cout, 1, 1)
    else:
        shape, bias = (1, hw, hw, cin), (1, 1, 1, cout)
        weight, kernel_layout = ((k, k, cout, 1), "HWOI") if depthwise else ((k, k, cin, cout), "HWIO")
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(rng.standard_normal(weight).astype("float32")),
                                           strides=stride, padding=padding, groups=groups, data_layout=layout,
                                           kernel_layout=kernel_layout))
            y = bb.emit(relax.op.add(y, relax.const(rng.standard_normal(bias).astype("float32"))))
            if relu6:
                y = bb.emit(relax.op.clip(y, 0.0, 6.0))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def best_seconds(folder: Path) -> float:
    """The best mean run time among the records MetaSchedule measured."""
    best = float("inf")
    for line in (folder / "database_tuning_record.json").read_text().splitlines():
        runs = json.loads(line)[1][1] if line.strip() else None
        if runs:
            best = min(best, sum(float(r) for r in runs) / len(runs))
    return best


def tune_one(name: str, layout: str, trials: int, target) -> dict:
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from edgecnn.compile.tune import tune_tasks

    lower = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                      relax.transform.CanonicalizeBindings(), relax.get_pipeline("zero"),
                                      relax.transform.AttachAttrLayoutFreeBuffers()])
    with target:
        lowered = lower(kernel_module(name, layout))
    tasks = [t for t in ms.relax_integration.extract_tasks(lowered, target) if "conv" in t.task_name]
    folder = Path(tempfile.mkdtemp(prefix=f"nhwc-{name}-{layout}-"))
    try:
        started = time.perf_counter()
        tune_tasks(tasks, folder, trials)
        return {"best_us": round(best_seconds(folder) * 1e6, 1), "task": tasks[0].task_name,
                "tuning_seconds": round(time.perf_counter() - started, 1)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kernels", nargs="*", help=f"any of {', '.join(KERNELS)} (default: all)")
    p.add_argument("--trials", type=int, default=64, help="per kernel and layout")
    p.add_argument("--out", type=Path, default=None, help="default /tmp/nhwc_kernels-<trials>.json")
    args = p.parse_args()
    unknown = [k for k in args.kernels if k not in KERNELS]
    if unknown:
        p.error(f"unknown kernel(s) {', '.join(unknown)}: choose from {', '.join(KERNELS)}")
    import os

    import tvm

    from edgecnn.compile.tvm import tvm_target_dict
    from edgecnn.targets import get_target

    target = tvm.target.Target(tvm_target_dict(get_target("host")))
    out = args.out or Path(f"/tmp/nhwc_kernels-{args.trials}.json")
    results = json.loads(out.read_text()) if out.is_file() else {}
    names = args.kernels or list(KERNELS)
    print(f"target {target}, {args.trials} trials per kernel and layout, load average {os.getloadavg()[0]:.2f}")
    for name in names:
        for layout in LAYOUTS:
            key = f"{name}-{layout}"
            if key not in results:
                results[key] = tune_one(name, layout, args.trials, target)
                out.write_text(json.dumps(results, indent=1))
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("| kernel | NCHW us | NHWC us | NHWC / NCHW |\n|---|---:|---:|---:|")
    for name in names:
        a, b = (results[f"{name}-{layout}"]["best_us"] for layout in LAYOUTS)
        print(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
