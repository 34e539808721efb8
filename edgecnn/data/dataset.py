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

__all__ = ["ClassificationDataset", "ClassificationSample", "DetectionDataset", "DetectionSample", "ImageSample",
           "ImageFolder", "Task"]


def _no_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


def _no_labels() -> np.ndarray:
    return np.zeros((0,), np.int64)


@dataclass(frozen=True)
class DetectionSample:
    """One image's ground truth. Ignore regions (COCO iscrowd annotations, VOC difficult objects) are
    scored as COCO scores crowd regions: a detection on one counts neither as hit nor as false positive."""

    image_id: int  # the data set's own id (COCO image id), so results match its ground truth
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32, [x1, y1, x2, y2] in pixels
    labels: np.ndarray  # (N,) int64, index into DetectionDataset.classes
    ignore_boxes: np.ndarray = field(default_factory=_no_boxes)  # (M, 4) float32, like boxes
    ignore_labels: np.ndarray = field(default_factory=_no_labels)  # (M,) int64, like labels


@dataclass
class DetectionDataset:
    """Detection ground truth. `category_ids[i]` is the data set's own id of class i (COCO ids run
    1..90 with gaps); None for layouts without ids (VOC, YOLO txt, the demo sets), which means i + 1."""

    classes: list[str]
    samples: list[DetectionSample]
    name: str = ""
    category_ids: list[int] | None = None
    task: Task = field(default=Task.DETECTION, init=False)

    def __post_init__(self) -> None:
        ids = self.category_ids
        if ids is not None and (len(ids) != len(self.classes) or len(set(ids)) != len(ids)):
            raise ValueError(f"category_ids {ids} must give one distinct id per class ({len(self.classes)})")

    def __len__(self) -> int:
        return len(self.samples)

    def category_id(self, label: int) -> int:
        """The data set's category id of class index `label` (what COCO files and results carry)."""
        return int(label) + 1 if self.category_ids is None else self.category_ids[int(label)]

    def subset(self, limit: int | None) -> "DetectionDataset":
        """The first `limit` samples (all when None): a stable, reproducible sample."""
        if limit is None or limit >= len(self.samples):
            return self
        return DetectionDataset(self.classes, self.samples[:limit], self.name, self.category_ids)

    def to_coco(self) -> dict:
        """COCO ground truth with the data set's own image and category ids; boxes as xywh, and ignore
        regions as iscrowd=1 annotations (area w*h), which COCO evaluators ignore the same way."""
        images, annotations = [], []
        for s in self.samples:
            images.append({"id": s.image_id, "file_name": s.path.name, "width": s.width, "height": s.height})
            for crowd, boxes, labels in ((0, s.boxes, s.labels), (1, s.ignore_boxes, s.ignore_labels)):
                for box, label in zip(boxes, labels):
                    x1, y1, x2, y2 = (float(v) for v in box)
                    w, h = x2 - x1, y2 - y1
                    annotations.append({
                        "id": len(annotations) + 1, "image_id": s.image_id, "category_id": self.category_id(label),
                        "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": crowd,
                    })
        categories = [{"id": self.category_id(i), "name": c} for i, c in enumerate(self.classes)]
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


@dataclass(frozen=True)
class ImageSample:
    path: Path


@dataclass
class ImageFolder:
    """Images without labels: what a model is timed on and compared with its source model, never scored."""

    samples: list[ImageSample]
    name: str = ""
    task: None = field(default=None, init=False)
    classes: list[str] = field(default_factory=list, init=False)

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, limit: int | None) -> "ImageFolder":
        if limit is None or limit >= len(self.samples):
            return self
        return ImageFolder(self.samples[:limit], self.name)
