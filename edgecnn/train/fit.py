"""Resumable Keras training on an in-memory copy of a data set.

Used by tools/train_demo.py for the demo models and by pruning to fine-tune.
Keras' BackupAndRestore keeps weights, optimizer state and the epoch counter in
`state_dir`, so a killed run continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecnn.data.dataset import ClassificationDataset, DetectionDataset
from edgecnn.data.preprocess import load_image, resize
from edgecnn.train.yolo import encode_targets, make_yolo_loss


@dataclass
class Arrays:
    """A data set resized to the model's input: uint8 images plus labels or boxes."""

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: list[np.ndarray] | np.ndarray  # (N,) for classifiers; per image (K,) for detectors
    boxes: list[np.ndarray] | None = None  # per image (K, 4) xyxy in input pixels


def load_arrays(dataset: DetectionDataset | ClassificationDataset, size: tuple[int, int]) -> Arrays:
    """Decode and resize (stretch) every image of a data set once."""
    images = np.empty((len(dataset), size[0], size[1], 3), np.uint8)
    if isinstance(dataset, ClassificationDataset):
        for i, s in enumerate(dataset.samples):
            images[i] = resize(load_image(s.path), size, mode="stretch")[0]
        return Arrays(images, np.array([s.label for s in dataset.samples], np.int64))
    boxes, labels = [], []
    for i, s in enumerate(dataset.samples):
        images[i] = resize(load_image(s.path), size, mode="stretch")[0]
        scale = np.array([size[1] / s.width, size[0] / s.height] * 2, np.float32)
        boxes.append(s.boxes * scale)
        labels.append(s.labels)
    return Arrays(images, labels, boxes)


def _augment(image: np.ndarray, boxes: np.ndarray | None, rng: np.random.Generator):
    """Flips and quarter turns (exact for boxes on square inputs) plus a channel shuffle and exposure."""
    w = image.shape[1]
    if rng.random() < 0.5:
        image = image[:, ::-1]
        if boxes is not None:
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    if image.shape[0] == image.shape[1]:
        for _ in range(int(rng.integers(0, 4))):
            image = np.rot90(image)
            if boxes is not None:  # counter-clockwise: (x, y) -> (y, W - x)
                boxes = np.stack([boxes[:, 1], w - boxes[:, 2], boxes[:, 3], w - boxes[:, 0]], 1)
    image = image[..., rng.permutation(3)].astype(np.float32) * rng.uniform(0.8, 1.2)
    return np.clip(image, 0, 255), boxes


def _batches(arrays: Arrays, batch_size: int, scale: float, offset: float, seed: int, head: dict | None):
    """A keras PyDataset yielding augmented, normalized batches (reshuffled each epoch)."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0
            self.order = np.random.default_rng(seed).permutation(len(arrays.images))

        def __len__(self):
            return len(arrays.images) // batch_size

        def on_epoch_end(self):
            self.epoch += 1
            self.order = np.random.default_rng([seed, self.epoch]).permutation(len(arrays.images))

        def __getitem__(self, index):
            rng = np.random.default_rng([seed, self.epoch, index])
            idx = self.order[index * batch_size:(index + 1) * batch_size]
            xs, ys = [], []
            for i in idx:
                boxes = arrays.boxes[i] if arrays.boxes is not None else None
                img, boxes = _augment(arrays.images[i], boxes, rng)
                xs.append(img * scale + offset)
                if head is None:
                    ys.append(arrays.labels[i])
                else:
                    ys.append(encode_targets(boxes, arrays.labels[i], np.asarray(head["anchors"], np.float32),
                                             (head["grid"], head["grid"]), img.shape[:2]))
            return np.stack(xs).astype(np.float32), np.stack(ys)

    return Batches()


def fit(model, arrays: Arrays, *, epochs: int, state_dir: Path, preprocessing: dict, head: dict | None = None,
        batch_size: int = 32, learning_rate: float = 2e-3, seed: int = 0, verbose: int = 2,
        bn_momentum: float | None = 0.9, callbacks: list | None = None):
    """Train `model` in place: a classifier when head is None, else a YOLO region detector.

    Cosine-decayed Adam. Resumes from `state_dir` when a previous run was interrupted.
    `bn_momentum` caps batch-norm momentum: keras.applications use 0.999, whose
    moving statistics lag ~1000 steps behind the weights, so after a short schedule
    the model in inference mode is far worse than in training (None keeps the model's own).
    `callbacks` run after the checkpoint restore (pruning uses one to hold its masks).
    """
    import keras

    keras.utils.set_random_seed(seed)
    if bn_momentum is not None:
        for layer in model._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = min(layer.momentum, bn_momentum)
    data = _batches(arrays, batch_size, preprocessing["scale"], preprocessing["offset"], seed, head)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=epochs * len(data), alpha=0.02)
    optimizer = keras.optimizers.Adam(schedule)
    if head is None:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not _ends_in_softmax(model))
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    else:
        num_classes = model.output_shape[-1] // len(head["anchors"]) - 5
        model.compile(optimizer=optimizer, loss=make_yolo_loss(len(head["anchors"]), num_classes))
    state_dir.mkdir(parents=True, exist_ok=True)
    backup = keras.callbacks.BackupAndRestore(str(state_dir), save_freq="epoch", delete_checkpoint=False)
    return model.fit(data, epochs=epochs, callbacks=[backup, *(callbacks or [])], verbose=verbose)


def _ends_in_softmax(model) -> bool:
    act = getattr(model.layers[-1], "activation", None)
    return getattr(act, "__name__", "") == "softmax"
