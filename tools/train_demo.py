#!/usr/bin/env python3
"""Train the demo models on the demo data set and commit-ready their weights.

    python tools/train_demo.py                      # train what is missing, then evaluate
    python tools/train_demo.py --models yolo_lite   # one model
    python tools/train_demo.py --eval-only          # re-measure the committed weights on the val split

Resumable: Keras' BackupAndRestore keeps each model's progress under
$EDGECNN_CACHE/train/<model>-v<N>/, so a killed run continues at its last
finished epoch. Deterministic inputs: the demo set is generated from fixed seeds,
augmentation and shuffling are seeded, and so is weight initialisation.
Results go to edgecnn/zoo/weights/<model>.weights.h5 plus a <model>.json with
the classes, anchors, preprocessing, training settings and measured accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgecnn import zoo  # noqa: E402
from edgecnn.data import demo  # noqa: E402
from edgecnn.data.dataset import Task  # noqa: E402
from edgecnn.paths import atomic_write_bytes, cache_dir  # noqa: E402
from edgecnn.runner import metrics as scoring  # noqa: E402

WEIGHTS_DIR = REPO / "edgecnn" / "zoo" / "weights"
# mobilenet_v3_small: the known hard case for int8 (hard-swish, squeeze-excite), trained so that
# quantization's --fallback can be shown on a real network, not a random one.
DEMO_MODELS = ["yolo_lite", "mobilenet_v2", "mobilenet_v1", "mobilenet_v3_small"]
EPOCHS = {"yolo_lite": 30, "mobilenet_v2": 30, "mobilenet_v1": 45, "mobilenet_v3_small": 30}
# Bump when the training recipe changes, so a resumed run never mixes two recipes.
RECIPE = 2
LEARNING_RATE = {"yolo_lite": 2e-3, "mobilenet_v2": 2e-3, "mobilenet_v1": 2e-3, "mobilenet_v3_small": 2e-3}


def detector_head(spec, train_ds) -> dict:
    """The spec's grid and stride, with anchors clustered on the training boxes (YOLOv2's recipe)."""
    from edgecnn.train.yolo import kmeans_anchors

    head = dict(spec.head)
    grid = head["grid"]
    wh = np.concatenate([
        np.stack([(s.boxes[:, 2] - s.boxes[:, 0]) / s.width * grid, (s.boxes[:, 3] - s.boxes[:, 1]) / s.height * grid], 1)
        for s in train_ds.samples if len(s.boxes)
    ])
    head["anchors"] = [[round(float(w), 4), round(float(h), 4)] for w, h in kmeans_anchors(wh, len(head["anchors"]))]
    return head


def evaluate(model, spec, metadata: dict, split: str = "val") -> dict:
    """Accuracy of a Keras model on a demo split, through the same pre/post-processing as deployment."""
    return scoring.evaluate(model.predict_on_batch, metadata, demo.demo_dataset(spec.task, split))


def train_one(name: str, epochs: int, verbose: int) -> dict:
    from edgecnn.train.fit import fit, load_arrays

    spec = zoo.get_spec(name)
    train_ds = demo.demo_dataset(spec.task, "train")
    if sorted(train_ds.classes) != sorted(demo.CLASSES):  # class folders come back sorted by name
        raise SystemExit(f"demo classes changed: {train_ds.classes}")
    preprocessing = dict(spec.preprocessing)
    size = tuple(preprocessing["size"])
    head = detector_head(spec, train_ds) if spec.task == Task.DETECTION else None
    fold = name == "yolo_lite"
    if fold:
        # YOLO-Lite's deployed network has no batch norm (the paper's speed-up), but without it
        # training from scratch crawls: train with batch norm, then fold it into the convolutions.
        from edgecnn.zoo.yolo_lite import fold_batch_norm, yolo_lite

        model = yolo_lite(**spec.defaults, batch_norm=True)
    else:
        model = zoo.build(name)
    arrays = load_arrays(train_ds, size)
    # Not keyed by the epoch count: asking for more epochs continues a finished run (the cosine
    # schedule stretches to the new length) instead of starting over.
    state = cache_dir("train", f"{name}-data{demo.VERSION}-recipe{RECIPE}")
    t0 = time.time()
    history = fit(model, arrays, epochs=epochs, state_dir=state, preprocessing=preprocessing, head=head,
                  learning_rate=LEARNING_RATE[name], verbose=verbose)
    train_s = time.time() - t0
    if fold:
        plain = zoo.build(name)
        fold_batch_norm(model, plain)
        model = plain
    metadata = {
        "model": name, "classes": list(train_ds.classes), "preprocessing": preprocessing, "head": head,
        "data": {"generator": "edgecnn.data.demo", "version": demo.VERSION, "train_images": len(train_ds)},
        "training": {"recipe": RECIPE, "epochs": epochs, "learning_rate": LEARNING_RATE[name], "batch_size": 32,
                     "batch_norm_folded": fold,
                     "final_loss": float(history.history["loss"][-1]) if history.history.get("loss") else None,
                     "seconds_this_run": round(train_s, 1)},
    }
    if getattr(model, "optimizer", None) is not None:
        # save_weights on a compiled model also writes the optimizer's slots (3x the file for Adam):
        # ship the weights alone, from a fresh model of the same architecture.
        clean = zoo.build(name)
        clean.set_weights(model.get_weights())
        model = clean
    metadata["metrics"] = {"val": evaluate(model, spec, metadata)}
    weights = WEIGHTS_DIR / f"{name}.weights.h5"
    tmp = weights.with_name(f".tmp-{weights.name}")
    model.save_weights(str(tmp))
    os.replace(tmp, weights)
    atomic_write_bytes(WEIGHTS_DIR / f"{name}.json", (json.dumps(metadata, indent=1) + "\n").encode())
    return metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEMO_MODELS), help="comma-separated zoo names")
    parser.add_argument("--epochs", type=int, help="override the per-model epoch count")
    parser.add_argument("--eval-only", action="store_true", help="measure the committed weights, train nothing")
    parser.add_argument("--retrain", action="store_true", help="train even when weights exist")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--threads", type=int, help="TensorFlow threads (two trainings side by side: 1 each)")
    args = parser.parse_args()
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    for name in args.models.split(","):
        spec = zoo.get_spec(name)
        weights = WEIGHTS_DIR / f"{name}.weights.h5"
        if args.eval_only or (weights.exists() and not args.retrain):
            model = zoo.load(name, weights="demo")
            metrics = evaluate(model, spec, zoo.demo_metadata(name))
            print(json.dumps({"model": name, "split": "val", **metrics}))
            continue
        meta = train_one(name, args.epochs or EPOCHS[name], 0 if args.quiet else 2)
        print(json.dumps({"model": name, "split": "val", **meta["metrics"]["val"]}))


if __name__ == "__main__":
    main()
