"""The bundle cache: content-hash keys, lookup, and atomic copies out to the user's folder.

A key covers everything that decides the bundle's bytes: the source model's
content hash (weights, graph, data contract), backend, precision, the target as
data, the versions of every tool used, the tuning database when tuned, the
calibration set for int8, and the compile code itself (edgecnn/compile/*.py and
the manifest schema). Bundles live in cache_dir("bundles")/<key> and are
written through paths.atomic_dir, so a folder there with a manifest.json is
always complete. Copied out to -o only over a new or empty folder or an older
bundle (check_output_dir): edgecnn never deletes a file it did not write.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from contextlib import contextmanager
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from edgecnn.artifacts import MANIFEST, Bundle, load_bundle
from edgecnn.errors import ModelError
from edgecnn.paths import PathError, atomic_dir, cache_dir, check_output

KEY_CHARS = 32


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the compile package and the manifest schema: a changed compiler never reads a stale bundle."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(here.glob("*.py")) + [here.parent / "artifacts.py"]:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def bundle_key(parts: dict[str, Any]) -> str:
    """Stable hash of the key parts (canonical JSON)."""
    text = json.dumps({**parts, "code": code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_CHARS]


def package_version(dist: str) -> str:
    """Installed version of a Python distribution, "" when absent."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def tool_versions(dists: list[str], commands: list[str] = ()) -> dict[str, str]:
    """name -> version for Python distributions and external commands (first line of --version)."""
    out = {d: v for d in dists if (v := package_version(d))}
    for cmd in commands:
        out[cmd] = _command_version(cmd)
    return out


@lru_cache(maxsize=None)
def _command_version(cmd: str) -> str:
    try:
        done = subprocess.run([cmd, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]
    # gcc puts its version on the first line, nvcc on the last ("Build cuda_13.0...").
    if not lines:
        return ""
    return lines[-1] if cmd.endswith("nvcc") else lines[0]


def bundle_path(key: str) -> Path:
    return cache_dir("bundles") / key


def lookup(key: str) -> Bundle | None:
    """The cached bundle for a key, or None (a damaged entry counts as absent and is rebuilt)."""
    path = bundle_path(key)
    if not (path / MANIFEST).is_file():
        return None
    try:
        bundle = load_bundle(path)
    except ModelError:
        return None
    return bundle if bundle.manifest.cache_key == key else None


@contextmanager
def building(key: str) -> Iterator[Path]:
    """A temporary folder that becomes cache_dir("bundles")/key only when the block finishes."""
    with atomic_dir(bundle_path(key)) as tmp:
        yield tmp


def check_output_dir(dest: Path) -> None:
    """-o of compile: a new or empty folder, or an edgecnn bundle, which is replaced as a whole.

    Anything else is refused, naming the entries edgecnn did not write, and nothing is changed:
    edgecnn never deletes a user's file.
    """
    check_output(dest, "dir", "--output", renamed=True)
    if not dest.is_dir():
        return
    foreign = foreign_entries(dest)
    if not foreign:
        return
    names = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    if (dest / MANIFEST).is_file() and MANIFEST not in foreign:
        raise PathError(f"output folder {dest} is a bundle with entries edgecnn did not write ({names}); move them "
                        "or pick a new or empty folder (nothing was changed)")
    raise PathError(f"output folder {dest} is not empty and not a bundle ({names}); pick a new or empty folder "
                    "(nothing was changed)")


def foreign_entries(folder: Path) -> list[str]:
    """Names in `folder` that are not part of the edgecnn bundle there: all of them without a readable manifest.

    A bundle is manifest.json plus the regular files its `files` lists (one missing is still ours).
    """
    names = sorted(p.name for p in folder.iterdir())
    if MANIFEST not in names:
        return names
    try:
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"].values()
        ours = {MANIFEST, *(n for n in listed if isinstance(n, str))}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return names  # nothing there is known to be edgecnn's
    return [n for n in names if n not in ours or (folder / n).is_symlink() or not (folder / n).is_file()]


def copy_out(bundle: Bundle, dest: Path) -> Bundle:
    """Copy a cached bundle to dest atomically (an existing bundle there is replaced as a whole, nothing else)."""
    dest = Path(dest)
    if dest.resolve() == bundle.path.resolve():
        return bundle
    check_output_dir(dest)
    with atomic_dir(dest) as tmp:
        for name in [MANIFEST, *bundle.manifest.files.values()]:
            shutil.copy2(bundle.path / name, tmp / name)
    return load_bundle(dest)
