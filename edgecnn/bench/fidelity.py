"""How closely a bench variant's outputs follow its source model's, output by output, on the bench's own inputs.

Every row gets this, and for a generic model (segmentation maps, landmarks, embeddings, raw outputs) it is
the figure that says whether the deployed artifact still computes the model: max |difference|, mean cosine
and SNR per output (edgecnn.runner.metrics.output_agreement). The inputs are the first images of --data
(labelled or not), else synthetic ones, and the row says which. It runs on this machine: the bundle itself
when its bytes run here (.tflite/.onnx, or a library built for this machine), else a host build of the same
source (TVM for a board), which the record names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

IMAGES = 4


def inputs_for(bundle, data: str | None, count: int = IMAGES) -> tuple[str, list[np.ndarray]]:
    """("data" | "synthetic", one preprocessed (1, H, W, 3) batch per image) in the bundle's preprocessing."""
    if data is None:
        from edgecnn.runner.run import synthetic_input

        return "synthetic", [synthetic_input(bundle, seed)[0] for seed in range(count)]
    from edgecnn.data.formats import load_dataset
    from edgecnn.data.preprocess import Preprocessing

    dataset = load_dataset(data, unlabelled=True).subset(count)
    prep = Preprocessing.from_dict(bundle.manifest.preprocessing)
    batches = [prep(s.path)[0] for s in dataset.samples]
    return "data", [b if b.ndim == 4 else b[None] for b in batches]


def fidelity(runnable, source, data: str | None, built_from: str = "same artifact") -> dict[str, Any]:
    """{"images", "inputs", "from", "outputs": [{"name", "max_abs_diff", "cosine", "snr_db"}]} of a bundle that
    runs here (`runnable`) against the source model on the same inputs."""
    from edgecnn.compile.verify import source_predictor
    from edgecnn.runner.metrics import output_agreement
    from edgecnn.runner.sessions import open_session

    kind, batches = inputs_for(runnable, data)
    session = open_session(runnable, threads=1)
    reference = source_predictor(source)
    ref = [reference(b) for b in batches]
    out = [session(b) for b in batches]
    names = [o.name for o in runnable.manifest.outputs]
    if len(ref[0]) != len(out[0]):
        return {"images": len(batches), "inputs": kind, "from": built_from, "outputs": [],
                "error": f"the bundle gives {len(out[0])} outputs, the source model {len(ref[0])}"}
    figures = []
    for k, name in enumerate(names):
        fig = output_agreement(np.concatenate([np.asarray(r[k], np.float64) for r in ref]),
                               np.concatenate([np.asarray(o[k], np.float64) for o in out]))
        figures.append({"name": name, "max_abs_diff": float(f"{fig.max_abs_diff:.4g}"),
                        "cosine": round(fig.cosine, 6),
                        "snr_db": None if fig.snr_db == float("inf") else round(fig.snr_db, 2)})
    return {"images": len(batches), "inputs": kind, "from": built_from, "outputs": figures}


def runs_here(bundle) -> bool:
    """True when this machine can run the bundle's bytes: portable files, or a library built for this machine."""
    from edgecnn.targets import host_arch

    from edgecnn.kinds import PORTABLE_BACKENDS

    return bundle.manifest.backend in PORTABLE_BACKENDS or bundle.manifest.arch == host_arch()
