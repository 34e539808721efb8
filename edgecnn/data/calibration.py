"""Named calibration sets (calibration/<name>/manifest.toml) and plain image folders."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edgecnn.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
RECOMMENDED_MINIMUM = 200
_KEYS = {"name": str, "description": str, "task": str, "source": str, "count": int}


@dataclass(frozen=True)
class CalibrationSet:
    name: str
    description: str
    task: str | None
    images: list[Path]

    @property
    def too_small(self) -> bool:
        """Fewer images than edgecnn recommends (int8 ranges from a handful of images are fragile)."""
        return len(self.images) < RECOMMENDED_MINIMUM


def calibration_root() -> Path:
    env = os.environ.get("EDGECNN_CALIBRATION_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent.parent / "calibration"
    return repo if repo.is_dir() else Path(__file__).resolve().parent.parent / "_calibration"


def list_images(folder: Path) -> list[Path]:
    """Image files under a folder (recursively), sorted for a stable order."""
    if folder.exists() and not folder.is_dir():
        raise DataError(f"calibration set {folder} is a file, not a folder of images (or a named set under "
                        "calibration/)")
    if not folder.is_dir():
        raise DataError(f"calibration folder not found: {folder}")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DataError(f"no images (.jpg, .png, .bmp, .webp) in calibration folder {folder}")
    return images


def _read_manifest(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); TOML files are UTF-8") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    for key, value in data.items():
        if key not in _KEYS:
            raise DataError(f"{path}: unknown key '{key}' (known: {', '.join(_KEYS)})")
        if not isinstance(value, _KEYS[key]) or isinstance(value, bool):
            raise DataError(f"{path}: key '{key}' must be {'an integer' if _KEYS[key] is int else 'a string'}")
    for key in ("name", "source", "count"):
        if key not in data:
            raise DataError(f"{path}: missing required key '{key}'")
    if data["count"] < 1:
        raise DataError(f"{path}: 'count' must be at least 1, got {data['count']}")
    return data


def load_calibration_set(name_or_dir: str | Path) -> CalibrationSet:
    """A named set under calibration/ or any folder of images."""
    path = Path(name_or_dir)
    named = calibration_root() / str(name_or_dir)
    if not path.is_dir() and (named / "manifest.toml").is_file():
        path = named
    manifest = path / "manifest.toml"
    if not manifest.is_file():
        if not path.exists():
            known = sorted(p.name for p in calibration_root().glob("*/manifest.toml") for p in [p.parent])
            raise DataError(f"unknown calibration set '{name_or_dir}' (named sets: {', '.join(known)}; "
                            "or give a folder of images)")
        return CalibrationSet(path.name, f"images in {path}", None, list_images(path))
    data = _read_manifest(manifest)
    source = data["source"]
    if source.startswith("demo:"):
        from edgecnn.data.demo import demo_path

        task, _, split = source[len("demo:"):].partition("/")
        images = list_images(demo_path(task, split))
    else:
        images = list_images(path / source)
    if len(images) < data["count"]:
        raise DataError(f"calibration set '{data['name']}' should have {data['count']} images, found {len(images)}")
    return CalibrationSet(data["name"], data.get("description", ""), data.get("task"), images[: data["count"]])
