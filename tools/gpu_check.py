"""Run edgecnn's TVM CUDA bundles (the Jetson path) on a real NVIDIA GPU.

A Jetson bundle is built on a PC without a GPU: TVM generates the CUDA kernels,
edgecnn compiles them with NVRTC for the board's sm_xx (kernels.cubin) and the
host code for the board's CPU (model.so). Neither can run on the PC. This tool
checks the same path end to end on a machine that has an NVIDIA GPU: the
demo models compiled here for tools/gpu_check/x86-h100.toml (sm_90 kernels, an
x86-64 host library, built exactly as for a Jetson), then loaded there by
edgecnn's own runner with TVM's runtime alone (no compiler, no NVRTC):

    python tools/gpu_check.py prepare -o .gpu_check          # here: bundles, references, data, runtime
    python tools/gpu_check.py run .gpu_check --out DIR        # on the GPU machine
    python tools/gpu_check.py report DIR/results.json         # here: mAP of the detector, one table

`run` compares each bundle's outputs with the Keras model's on the same images
(max |diff| relative to the reference's range, cosine), times it with the
runner (latency percentiles) and scores it on the demo val split. `prepare`
also writes the payload the GPU machine needs: TVM's Python package without
its compiler library, and the apache-tvm-ffi wheel for that machine's Python.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tools" / "gpu_check" / "x86-h100.toml"
MODELS = ("mobilenet_v2", "yolo_lite")
IMAGES = 8
MAX_REL_DIFF, MIN_COSINE = 1e-3, 0.9999  # compile's fp32 verification limits


def prepare(out: Path, models: list[str], python: str) -> None:
    from edgecnn.compile import compile_model
    from edgecnn.source import load_source
    from edgecnn.compile.verify import source_predictor, verification_images
    from edgecnn.data.demo import demo_path

    out.mkdir(parents=True, exist_ok=True)
    for name in models:
        t = time.perf_counter()
        result = compile_model(name, TARGET, backend="tvm", output_dir=out / "bundles" / name)
        files = {f: (out / "bundles" / name / f).stat().st_size for f in result.bundle.manifest.files.values()}
        print(f"{name}: bundle in {time.perf_counter() - t:.1f} s, files {files}")
        source = load_source(name)
        _, images = verification_images(source, None, IMAGES)
        reference = source_predictor(source)(images)
        np.savez(out / f"{name}-reference.npz", images=images, *reference)
    for task in ("classification", "detection"):
        dest = out / "data" / task
        if not dest.exists():
            shutil.copytree(demo_path(task, "val"), dest)
    _runtime_payload(out, python)


def _runtime_payload(out: Path, python: str) -> None:
    """TVM's Python package minus its compiler, and tvm-ffi's wheel for the GPU machine's Python."""
    import tvm

    site = out / "site"
    if not (site / "tvm").exists():
        src = Path(tvm.__file__).resolve().parent
        shutil.copytree(src, site / "tvm", ignore=shutil.ignore_patterns(
            "libtvm_compiler.so", "3rdparty", "src", "__pycache__"))
    from importlib.metadata import version

    wheels = out / "wheels"
    if not list(wheels.glob("apache_tvm_ffi-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", python, "--implementation", "cp",
                        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                        "-d", str(wheels), f"apache-tvm-ffi=={version('apache-tvm-ffi')}"], check=True)


def run(payload: Path, out: Path, runs: int) -> None:
    from edgecnn.artifacts import load_bundle
    from edgecnn.runner.run import run_bundle
    from edgecnn.runner.sessions import open_session

    out.mkdir(parents=True, exist_ok=True)
    results = []
    for folder in sorted((payload / "bundles").iterdir()):
        bundle = load_bundle(folder)
        m = bundle.manifest
        with np.load(payload / f"{m.name}-reference.npz") as npz:
            images = npz["images"]
            reference = [npz[f"arr_{i}"] for i in range(len(npz.files) - 1)]
        session = open_session(bundle)
        outputs = [session(images[i:i + 1]) for i in range(len(images))]
        outputs = [np.concatenate([o[k] for o in outputs]) for k in range(len(reference))]
        match = []
        for ref, got in zip(reference, outputs):
            rel = float(np.max(np.abs(ref - got)) / max(float(np.max(np.abs(ref))), 1e-12))
            cos = float(np.dot(ref.ravel(), got.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(got) + 1e-30))
            match.append({"max_rel_diff": rel, "cosine": cos, "ok": rel <= MAX_REL_DIFF and cos >= MIN_COSINE})
        result = run_bundle(bundle, data=payload / "data" / m.task, runs=runs)
        result.update(match=match, kernels=m.backend_options.get("cuda_kernels"))
        results.append(result)
        print(f"{m.name}: outputs {match}; p50 {result['latency_ms']['p50']:.3f} ms; accuracy {result['accuracy']}",
              flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))


def report(path: Path) -> int:
    from edgecnn.runner.metrics import coco_map_from_results
    from edgecnn.data.demo import demo_path
    from edgecnn.data.formats import load_dataset

    results = json.loads(path.read_text())
    failed = 0
    print(f"{'model':14} {'outputs vs Keras':28} {'p50 ms':>8} {'p99 ms':>8} {'accuracy':>10}")
    for r in results:
        if r["accuracy"] is None and r["task"] == "detection":
            r["accuracy"] = coco_map_from_results(load_dataset(demo_path("detection", "val")), r["predictions"])
        acc = r["accuracy"]
        score = acc.get("top1", acc.get("map50_95"))
        worst = max(m["max_rel_diff"] for m in r["match"])
        cos = min(m["cosine"] for m in r["match"])
        ok = all(m["ok"] for m in r["match"])
        failed += not ok
        print(f"{r['model']:14} {'ok' if ok else 'MISMATCH'} rel {worst:.1e} cos {cos:.6f}  "
              f"{r['latency_ms']['p50']:8.3f} {r['latency_ms']['p99']:8.3f} {score:10.4f}")
    return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("-o", "--out", type=Path, default=ROOT / ".gpu_check")
    a.add_argument("--models", default=",".join(MODELS))
    a.add_argument("--python", default="3.12", help="Python version of the GPU machine (for tvm-ffi's wheel)")
    b = sub.add_parser("run")
    b.add_argument("payload", type=Path)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--runs", type=int, default=200)
    c = sub.add_parser("report")
    c.add_argument("results", type=Path)
    args = p.parse_args()
    if args.cmd == "prepare":
        prepare(args.out, args.models.split(","), args.python)
        return 0
    if args.cmd == "run":
        run(args.payload, args.out, args.runs)
        return 0
    return report(args.results)


if __name__ == "__main__":
    sys.exit(main())
