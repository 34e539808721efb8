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
