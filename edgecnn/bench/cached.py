"""Pruned models for bench, cached by content: pruning plus fine-tuning takes minutes, so it runs once.

The key covers what decides the result: the model reference, the bytes of its
weights (the demo weights file, or the user's file), the pruning method and ratio,
and the source of edgecnn.prune itself (a changed algorithm must not reuse an old
result). The folder is written through paths.atomic_dir, so an interrupted prune
leaves nothing that looks finished; prune's own fine-tuning checkpoint resumes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from edgecnn.errors import ModelError
from edgecnn.paths import atomic_dir, cache_dir

# Fine-tuning epochs bench gives a pruned model (the prune command's default).
BENCH_FINETUNE_EPOCHS = 3


def _prune_code_digest() -> str:
    import edgecnn.prune

    h = hashlib.sha256()
    for p in sorted(Path(edgecnn.prune.__file__).parent.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _weights_digest(model: str, weights: str) -> str:
    from edgecnn import zoo

    path = Path(model)
    if path.exists():  # a user's model file: its bytes (and sidecar) are the weights
        files = [path, path.with_suffix(".json")]
    elif weights == "demo":
        files = [zoo.demo_weights_path(model.partition(":")[0])]
    else:
        files = [Path(weights)]
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def pruned_model(model: str, pruning: dict, weights: str = "demo",
                 log: Callable[[str], None] = lambda m: None) -> Path:
    """The pruned .keras file (with its sidecar) for `model`; pruned and fine-tuned on first use."""
    from edgecnn.prune import prune

    parts = {"model": model, "weights": weights, "weights_sha256": _weights_digest(model, weights),
             "method": pruning["method"], "ratio": pruning["ratio"], "finetune_epochs": BENCH_FINETUNE_EPOCHS,
             "code": _prune_code_digest()}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    final = cache_dir("pruned") / key
    found = sorted(final.glob("*.keras")) if final.is_dir() else []
    if found:
        return found[0]
    log(f"{model}: pruning {pruning['method']}:{pruning['ratio']} and fine-tuning ({BENCH_FINETUNE_EPOCHS} epochs)")
    with atomic_dir(final) as tmp:
        result = prune(model, pruning["method"], pruning["ratio"], weights=weights, output_dir=tmp,
                       finetune_epochs=BENCH_FINETUNE_EPOCHS, log=log)
        (tmp / "key.json").write_text(json.dumps(parts, indent=1) + "\n")
        name = Path(result.output).name
    out = final / name
    if not out.is_file():
        raise ModelError(f"pruning {model} wrote no model file in {final}")
    return out


RUNTIMES = ("ai-edge-litert", "onnxruntime", "apache-tvm", "ncnn", "numpy", "opencv-python-headless")
# What a native scoring run gives that an emulated row keeps (edgecnn.bench.emulated.run_emulated).
EVALUATION_KEYS = ("images", "accuracy", "inputs", "predictions")
# Manifest fields that decide what the runner computes from the bundle's files; target, build facts and
# verification do not (an a53 and an a72 bundle of the same bytes score alike).
_SCORED_FIELDS = ("backend", "precision", "inputs", "outputs", "task", "preprocessing", "classes", "head",
                  "postprocess", "backend_options", "input_step")


def _code_digest(*packages: str) -> str:
    import importlib

    h = hashlib.sha256()
    for name in packages:
        for p in sorted(Path(importlib.import_module(name).__file__).parent.glob("*.py")):
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _data_digest(data: str | None) -> str | None:
    """Every file of the data set by path, size and modification time (a changed label file is a new key)."""
    if data is None:
        return None
    root = Path(data)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256(str(root.resolve()).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root) if f != root else f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def evaluation_key(bundle, data: str | None, limit: int | None, threads: int | None) -> str:
    """Content key of scoring `bundle` natively on `data`: its files' bytes and scored manifest fields, the
    data set's files, limit and threads, the runtimes' versions and edgecnn's runner and data code."""
    from edgecnn.compile.cache import tool_versions

    manifest = json.loads((Path(bundle.path) / "manifest.json").read_text())
    files = {name: hashlib.sha256((Path(bundle.path) / rel).read_bytes()).hexdigest()
             for name, rel in sorted(manifest.get("files", {}).items())}
    parts = {"files": files, **{k: manifest.get(k) for k in _SCORED_FIELDS}, "data": _data_digest(data),
             "limit": limit, "threads": threads, "tools": tool_versions(list(RUNTIMES)),
             "code": _code_digest("edgecnn.runner", "edgecnn.data")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def cached_evaluation(bundle, data: str | None, limit: int | None, threads: int | None,
                      run: Callable[[], dict]) -> dict:
    """`run()`'s EVALUATION_KEYS, from the cache when this bundle's bytes were scored on this data before.

    Bench scores an emulated row natively on the whole split; the host build that scores a TVM row, or the
    .tflite an a53 and an a72 bundle share, is the same artifact for every board, so it is scored once.
    """
    from edgecnn.paths import atomic_write_bytes

    path = cache_dir("evaluations") / f"{evaluation_key(bundle, data, limit, threads)}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # unreadable: score again and replace it
    result = {k: v for k, v in run().items() if k in EVALUATION_KEYS}
    try:
        text = json.dumps(result)
    except (TypeError, ValueError):
        return result  # not JSON (a runner field this cache does not know): returned, not kept
    atomic_write_bytes(path, text.encode())
    return result
