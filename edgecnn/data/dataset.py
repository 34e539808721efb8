"""In-memory data set types shared by every loader, the demo generator and evaluation.

Loaders (formats.py) turn COCO JSON, Pascal VOC XML, YOLO txt and class folders
into these; evaluation turns a DetectionDataset back into COCO ground truth.
Images stay on disk: a sample holds a path, never pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecnn.kinds import Task

__all__ = ["ClassificationDataset", "ClassificationSample", "DetectionDataset", "DetectionSample", "Task"]


@dataclass(frozen=True)
class DetectionSample:
    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32, [x1, y1, x2, y2] in pixels
    labels: np.ndarray  # (N,) int64, index into DetectionDataset.classes


@dataclass
class DetectionDataset:
    classes: list[str]
    samples: list[DetectionSample]
    name: str = ""
    task: Task = field(default=Task.DETECTION, init=False)

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, limit: int | None) -> "DetectionDataset":
        """The first `limit` samples (all when None): a stable, reproducible sample."""
        if limit is None or limit >= len(self.samples):
            return self
        return DetectionDataset(self.classes, self.samples[:limit], self.name)

    def to_coco(self) -> dict:
        """COCO ground truth (category ids are class index + 1; boxes as xywh)."""
        images, annotations = [], []
        for s in self.samples:
            images.append({"id": s.image_id, "file_name": s.path.name, "width": s.width, "height": s.height})
            for box, label in zip(s.boxes, s.labels):
                x1, y1, x2, y2 = (float(v) for v in box)
                w, h = x2 - x1, y2 - y1
                annotations.append({
                    "id": len(annotations) + 1, "image_id": s.image_id, "category_id": int(label) + 1,
                    "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0,
                })
        categories = [{"id": i + 1, "name": c} for i, c in enumerate(self.classes)]
        return {"images": images, "annotations": annotations, "categories": categories}


@dataclass(frozen=True)
class ClassificationSample:
    path: Path
    label: int


@dataclass
class ClassificationDataset:
    classes: list[str]
    samples: list[ClassificationSample]
    name: str = ""
    task: Task = field(default=Task.CLASSIFICATION, init=False)

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, limit: int | None) -> "ClassificationDataset":
        if limit is None or limit >= len(self.samples):
            return self
        return ClassificationDataset(self.classes, self.samples[:limit], self.name)
