"""Loaders for real data set layouts: COCO JSON, Pascal VOC XML, YOLO txt and class folders.

Each turns files on disk into a DetectionDataset or ClassificationDataset and
rejects anything malformed with a DataError naming the file. Boxes are always
float32 [x1, y1, x2, y2] in 0-based pixel coordinates of the original image.
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.data.dataset import (ClassificationDataset, ClassificationSample, DetectionDataset, DetectionSample,
                                  ImageFolder, ImageSample)
from edgecnn.data.preprocess import IMAGE_EXTENSIONS, load_image
from edgecnn.errors import DataError

FORMATS_HELP = (
    "a COCO .json file (or a folder with annotations*.json / instances*.json), a Pascal VOC folder "
    "(Annotations/, JPEGImages/), a YOLO folder (images/, labels/, data.yaml or classes.txt), "
    "or a folder of class subfolders with images"
)

PathLike = str | os.PathLike


def _boxes(boxes: list, labels: list) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64).reshape(-1)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, decoded the same way the pipeline will decode it."""
    height, width = load_image(path).shape[:2]
    return width, height


def _get(entry: Any, key: str, json_path: Path, what: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise DataError(f"{json_path}: {what} has no '{key}'")
    return entry[key]


def _int(value: Any, json_path: Path, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{json_path}: {what} must be an integer, got {value!r}")
    return value


def load_coco_json(json_path: PathLike, images_dir: PathLike | None = None) -> DetectionDataset:
    """COCO instances JSON -> DetectionDataset.

    Labels are class indices in category-id order; the file's own category and image ids are kept,
    so results score with any COCO tool. bbox xywh becomes xyxy; iscrowd annotations become ignore
    regions; images without annotations are kept. Image files are looked up in images_dir
    (default: the JSON's folder, then its images/ subfolder).
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise DataError(f"COCO annotation file not found: {json_path}")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{json_path}: invalid JSON ({e})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DataError(f"{json_path}: missing '{key}' list (is this a COCO instances file?)")

    cat_ids = sorted(_int(_get(c, "id", json_path, "a category"), json_path, "category id")
                     for c in data["categories"])
    if len(set(cat_ids)) != len(cat_ids):
        raise DataError(f"{json_path}: duplicate category ids")
    names = {c["id"]: str(_get(c, "name", json_path, f"category {c['id']}")) for c in data["categories"]}
    label_of = {cid: i for i, cid in enumerate(cat_ids)}

    search = [Path(images_dir)] if images_dir is not None else [json_path.parent, json_path.parent / "images"]
    images: dict[int, dict] = {}
    for img in data["images"]:
        image_id = _int(_get(img, "id", json_path, "an image"), json_path, "image id")
        if image_id in images:
            raise DataError(f"{json_path}: duplicate image id {image_id}")
        images[image_id] = img
    found: dict[int, tuple] = {i: ([[], []], [[], []]) for i in images}  # ([boxes, labels], crowd's)
    for ann in data["annotations"]:
        image_id = _int(_get(ann, "image_id", json_path, "an annotation"), json_path, "annotation image_id")
        category_id = _int(_get(ann, "category_id", json_path, "an annotation"), json_path, "annotation category_id")
        bbox = _get(ann, "bbox", json_path, "an annotation")
        if image_id not in images:
            raise DataError(f"{json_path}: annotation {ann.get('id')} refers to unknown image id {image_id}")
        if category_id not in label_of:
            raise DataError(f"{json_path}: annotation {ann.get('id')} refers to unknown category id {category_id}")
        try:
            x, y, w, h = (float(v) for v in bbox)
            valid = all(math.isfinite(v) for v in (x, y, w, h)) and w >= 0 and h >= 0
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise DataError(f"{json_path}: annotation {ann.get('id')} has an invalid bbox {bbox!r}")
        boxes, labels = found[image_id][1 if ann.get("iscrowd", 0) else 0]
        boxes.append([x, y, x + w, y + h])
        labels.append(label_of[category_id])

    samples = []
    for image_id in sorted(images):
        img = images[image_id]
        file_name = str(_get(img, "file_name", json_path, f"image {image_id}"))
        width = _int(_get(img, "width", json_path, f"image {image_id}"), json_path, f"image {image_id} width")
        height = _int(_get(img, "height", json_path, f"image {image_id}"), json_path, f"image {image_id} height")
        path = next((d / file_name for d in search if (d / file_name).is_file()), None)
        if path is None:
            tried = " or ".join(str(d) for d in search)
            raise DataError(f"{json_path}: image file '{file_name}' (id {image_id}) not found in {tried}")
        objects, crowd = found[image_id]
        samples.append(DetectionSample(image_id, path, width, height, *_boxes(*objects), *_boxes(*crowd)))
    return DetectionDataset([names[c] for c in cat_ids], samples, json_path.stem, cat_ids)


def _parse_voc_xml(xml_path: Path, image_dir: Path) -> tuple[Path, int, int, list[tuple[str, list[float], bool]]]:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{xml_path}: invalid XML ({e})") from None
    file_name = root.findtext("filename") or f"{xml_path.stem}.jpg"
    candidates = [image_dir / file_name] + [image_dir / f"{xml_path.stem}{ext}" for ext in IMAGE_EXTENSIONS]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataError(f"{xml_path}: image '{file_name}' not found in {image_dir}")
    try:
        width, height = int(float(root.findtext("size/width", "0"))), int(float(root.findtext("size/height", "0")))
    except ValueError:
        raise DataError(f"{xml_path}: <size> width/height are not numbers") from None
    if width <= 0 or height <= 0:  # some exporters write 0 or omit <size>; the file knows
        width, height = _image_size(path)

    objects = []
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{xml_path}: object {i} has no <name>")
        try:
            x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            difficult = int(float(obj.findtext("difficult") or 0)) == 1
        except (TypeError, ValueError):
            raise DataError(f"{xml_path}: object {i} ('{name}') has a missing or invalid <bndbox>") from None
        if x2 < x1 or y2 < y1:
            raise DataError(f"{xml_path}: object {i} ('{name}') has xmax < xmin or ymax < ymin")
        # VOC pixels are 1-based and inclusive: pixel xmin covers [xmin-1, xmin) in 0-based coordinates.
        objects.append((name, [x1 - 1, y1 - 1, x2, y2], difficult))
    return path, width, height, objects


def load_voc(
    root: PathLike, split: str | None = None, classes: list[str] | None = None, keep_difficult: bool = False
) -> DetectionDataset:
    """Pascal VOC folder (Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt) -> DetectionDataset.

    Boxes become 0-based xyxy. Difficult objects become ignore regions (VOC's own evaluator ignores
    them; here by COCO's crowd rule, iscrowd=1 in to_coco), or ordinary objects with keep_difficult.
    classes defaults to the sorted set of object names found; other names in a given list are an error.
    """
    root = Path(root)
    ann_dir = root / "Annotations"
    if not ann_dir.is_dir():
        raise DataError(f"{root}: no Annotations/ folder (not a Pascal VOC data set)")
    if split is None:
        xml_paths = sorted(ann_dir.glob("*.xml"))
    else:
        split_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file():
            raise DataError(f"{root}: split file {split_file} not found")
        ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        xml_paths = sorted({ann_dir / f"{i}.xml" for i in ids})
        missing = next((p for p in xml_paths if not p.is_file()), None)
        if missing is not None:
            raise DataError(f"{split_file}: lists '{missing.stem}' but {missing} does not exist")
    if not xml_paths:
        raise DataError(f"{ann_dir}: no annotation files" + (f" for split '{split}'" if split else ""))

    parsed = [(p, _parse_voc_xml(p, root / "JPEGImages")) for p in xml_paths]
    if classes is None:
        classes = sorted({name for _, (*_, objects) in parsed for name, _, _ in objects})
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for image_id, (xml_path, (path, width, height, objects)) in enumerate(parsed, start=1):
        kept, ignored = ([], []), ([], [])
        for name, box, difficult in objects:
            if name not in index:
                raise DataError(f"{xml_path}: object class '{name}' is not in the given classes {list(classes)}")
            boxes, labels = ignored if difficult and not keep_difficult else kept
            boxes.append(box)
            labels.append(index[name])
        samples.append(DetectionSample(image_id, path, width, height, *_boxes(*kept), *_boxes(*ignored)))
    return DetectionDataset(list(classes), samples, root.name + (f"-{split}" if split else ""))


def _unquoted(text: str):
    """(index, char) of the characters outside YAML quotes."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"" and (i == 0 or text[i - 1] in " [{,:"):
            quote = ch
        else:
            yield i, ch


def _strip_comment(text: str) -> str:
    end = next((i for i, ch in _unquoted(text) if ch == "#" and (i == 0 or text[i - 1].isspace())), len(text))
    return text[:end].strip()


def _split_flow(text: str) -> list[str]:
    cuts = [-1] + [i for i, ch in _unquoted(text) if ch == ","] + [len(text)]
    return [part for a, b in zip(cuts, cuts[1:]) if (part := text[a + 1 : b].strip())]


def _scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


def _names_from_yaml(text: str, path: Path) -> list[str]:
    """`names:` from a data.yaml: flow or block list, or an {index: name} mapping (a YAML subset)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"names\s*:", line)), None)
    if start is None:
        raise DataError(f"{path}: no top-level 'names:' entry")
    rest = _strip_comment(lines[start].split(":", 1)[1])
    if rest.startswith("[") and rest.endswith("]"):
        return [_scalar(p) for p in _split_flow(rest[1:-1])]
    if rest.startswith("{") and rest.endswith("}"):
        entries = _split_flow(rest[1:-1])
    elif rest:
        raise DataError(f"{path}: cannot read 'names: {rest}' (expected a list or an index: name mapping)")
    else:
        items, entries = [], []
        for line in lines[start + 1 :]:
            body = _strip_comment(line)
            if not body:
                continue
            if not line[0].isspace() and not body.startswith("-"):
                break  # the next top-level key
            if body.startswith("-"):
                items.append(_scalar(body[1:]))
            elif ":" in body:
                entries.append(body)
            else:
                raise DataError(f"{path}: cannot read names entry '{body}'")
        if items and entries:
            raise DataError(f"{path}: 'names' mixes list items and index: name entries")
        if items:
            return items
    try:
        pairs = [(int(_scalar(k)), _scalar(v)) for k, v in (e.split(":", 1) for e in entries)]
    except ValueError:
        raise DataError(f"{path}: 'names' must map integer class indices to names") from None
    mapping = dict(pairs)
    if len(mapping) != len(pairs) or sorted(mapping) != list(range(len(pairs))):
        raise DataError(f"{path}: 'names' indices must be 0..{len(pairs) - 1} once each, got {[k for k, _ in pairs]}")
    return [mapping[i] for i in range(len(mapping))]


def _yolo_classes(root: Path) -> list[str]:
    if (root / "data.yaml").is_file():
        names = _names_from_yaml((root / "data.yaml").read_text(encoding="utf-8"), root / "data.yaml")
    elif (root / "classes.txt").is_file():
        names = [n.strip() for n in (root / "classes.txt").read_text(encoding="utf-8").splitlines() if n.strip()]
    else:
        raise DataError(f"{root}: no data.yaml or classes.txt giving the class names")
    if not names:
        raise DataError(f"{root}: the class name list is empty")
    return names


def _parse_yolo_labels(label_file: Path, width: int, height: int, num_classes: int) -> tuple[list, list]:
    boxes, labels = [], []
    for lineno, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        where = f"{label_file}:{lineno}"
        if len(values) != 5:
            raise DataError(f"{where}: expected 'class cx cy w h', got {len(values)} values (no polygon support)")
        try:
            cls, (cx, cy, w, h) = int(values[0]), (float(v) for v in values[1:])
        except ValueError:
            raise DataError(f"{where}: not numbers: '{line.strip()}'") from None
        if not 0 <= cls < num_classes:
            raise DataError(f"{where}: class {cls} out of range (data set has {num_classes} classes)")
        if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
            raise DataError(f"{where}: coordinates must be normalized to 0..1, got '{line.strip()}'")
        boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
        labels.append(cls)
    return boxes, labels


def load_yolo_txt(root: PathLike, split: str = "val") -> DetectionDataset:
    """Ultralytics layout (images/<split>/, labels/<split>/*.txt, data.yaml or classes.txt) -> DetectionDataset.

    Flat images/ + labels/ folders are used when images/ has no split subfolders. An image without
    a label file has no objects.
    """
    root = Path(root)
    if not (root / "images").is_dir():
        raise DataError(f"{root}: no images/ folder (not a YOLO data set)")
    if (root / "images" / split).is_dir():
        images_dir, labels_dir = root / "images" / split, root / "labels" / split
    else:
        splits = sorted(p.name for p in (root / "images").iterdir() if p.is_dir())
        if splits:
            raise DataError(f"{root}: no images/{split}/ folder (splits found: {', '.join(splits)})")
        images_dir, labels_dir = root / "images", root / "labels"
    if not labels_dir.is_dir():
        raise DataError(f"{root}: no {labels_dir.relative_to(root)}/ folder next to {images_dir.relative_to(root)}/")
    classes = _yolo_classes(root)
    image_paths = _images_in(images_dir)
    if not image_paths:
        raise DataError(f"{images_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    samples = []
    for image_id, path in enumerate(image_paths, start=1):
        width, height = _image_size(path)
        label_file = labels_dir / f"{path.stem}.txt"
        found = _parse_yolo_labels(label_file, width, height, len(classes)) if label_file.is_file() else ([], [])
        samples.append(DetectionSample(image_id, path, width, height, *_boxes(*found)))
    return DetectionDataset(classes, samples, f"{root.name}-{split}" if images_dir.name == split else root.name)


def load_class_folders(root: PathLike) -> ClassificationDataset:
    """root/<class_name>/*.{jpg,jpeg,png,bmp} -> ClassificationDataset, classes and files sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data set folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class subfolders")
    samples = []
    for label, folder in enumerate(folders):
        images = _images_in(folder)
        if not images:
            raise DataError(f"{folder}: class folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
        samples.extend(ClassificationSample(p, label) for p in images)
    return ClassificationDataset([f.name for f in folders], samples, root.name)


def _coco_json_in(root: Path, split: str | None) -> Path | None:
    found = sorted(p for p in root.glob("*.json") if p.name.startswith(("annotations", "instances")))
    if split is not None:
        found = [p for p in found if split in p.stem]
    if len(found) > 1:
        raise DataError(f"{root}: several COCO files ({', '.join(p.name for p in found)}); pass one of them")
    return found[0] if found else None


def dataset_layout(path: PathLike, split: str | None = None, unlabelled: bool = False) -> str:
    """Which layout `path` holds ("coco", "voc", "yolo", "class_folders", and with `unlabelled` "images": a
    folder of images without labels), from names alone; DataError otherwise.

    Cheap (no annotation or image is read), so a command checks its data argument before any work.
    """
    path = Path(path)
    try:
        if not path.exists():
            raise DataError(f"data set not found: {path}")
        if path.is_file():
            if path.suffix.lower() == ".json":
                return "coco"
            raise DataError(f"{path}: not a data set; expected {FORMATS_HELP}")
        if (path / "Annotations").is_dir():
            return "voc"
        if (path / "labels").is_dir():
            return "yolo"
        # Before class folders: a COCO folder's images/ subfolder would look like a single class.
        if _coco_json_in(path, split) is not None:
            return "coco"
        subfolders = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if subfolders and any(_images_in(p) for p in subfolders):
            return "class_folders"
        if _images_in(path):
            if unlabelled:
                return "images"
            raise DataError(f"{path}: a folder of images without labels; accuracy needs labelled data: "
                            f"{FORMATS_HELP}")
    except PermissionError as e:
        raise DataError(f"cannot read data set {path}: {e.strerror}") from None
    raise DataError(f"{path}: unrecognised data set layout; expected {FORMATS_HELP}"
                    + (", or a folder of images (timing and fidelity only)" if unlabelled else ""))


def load_dataset(path: PathLike, split: str | None = None,
                 unlabelled: bool = False) -> DetectionDataset | ClassificationDataset | ImageFolder:
    """Detect the layout at path and load it; see FORMATS_HELP for what is accepted. With `unlabelled`, a
    folder of bare images is accepted too (an ImageFolder: timing and fidelity, no accuracy)."""
    path = Path(path)
    layout = dataset_layout(path, split, unlabelled)
    if layout == "images":
        return ImageFolder([ImageSample(p) for p in _images_in(path)], path.name)
    if layout == "voc":
        return load_voc(path, split)
    if layout == "yolo":
        return load_yolo_txt(path, split or "val")
    if layout == "coco":
        return load_coco_json(path if path.is_file() else _coco_json_in(path, split))
    return load_class_folders(path)
