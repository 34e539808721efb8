"""The arm64 Debian sysroot (Python 3.11) and a per-target view of it for `qemu -L`.

Why a view per target: onnxruntime and ai-edge-litert read /proc/cpuinfo at
import (the cpuinfo library) and crash under qemu-user when they find the host's
x86 one. qemu's -L redirects an absolute path to PREFIX/path when that exists,
so an ARM `PREFIX/proc/cpuinfo` is what the guest reads. It must match the
emulated core, because XNNPACK picks its kernels from the CPU part (MobileNetV2:
196 M instructions with A53 kernels, 123 M with A72). Rewriting one shared file
before each run would race whenever two targets run at once (pytest-xdist, a53
and a72 CI jobs sharing a cache) and silently give wrong-kernel counts. A view is
a directory of a few symlinks into the shared sysroot plus its own proc/cpuinfo:
no copying, no race, and each target's file is written once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from edgecnn.emulate.tools import debian_mirror, require_tools
from edgecnn.errors import ToolError
from edgecnn.paths import atomic_dir, atomic_write_bytes, cache_dir
from edgecnn.targets import Target

SUITE = "bookworm"
PACKAGES = ("python3.11", "libstdc++6", "libgcc-s1")
GUEST_PYTHON = "/usr/bin/python3.11"
MANIFEST = "edgecnn-sysroot.json"
# Top-level sysroot entries a view links to. /tmp and /dev stay the host's, so a
# guest writing a temp file or opening /dev/null reaches the real one.
VIEW_LINKS = ("bin", "etc", "lib", "sbin", "usr", "var")
GUEST_MOUNT = "/edgecnn"  # where the views show edgecnn's own dirs (wheels, guest scripts)
GUEST_DIR = Path(__file__).with_name("guest")  # guest-side scripts (stdlib + numpy + a runtime only)
# edgecnn itself, for guest scripts that run the board runner (edgecnn.runner.sessions, edgecnn.artifacts):
# the guest sees it as /edgecnn/src/edgecnn, so PYTHONPATH=/edgecnn/src imports it.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
PACKAGE_MOUNT = "src/edgecnn"

# MIDR variant/revision of the cores on the boards (r0p4 Pi 3, r0p3 Pi 4, r4p1 Pi 5).
_REVISION = {"0xd03": ("0x0", "4"), "0xd08": ("0x0", "3"), "0xd0b": ("0x4", "1"), "0xd07": ("0x1", "1")}
# Target feature names -> the words Linux prints on the Features line.
_FEATURE_WORDS = {
    "crc": ["crc32"], "crypto": ["aes", "pmull", "sha1", "sha2"], "fp16": ["fphp", "asimdhp"],
    "dotprod": ["asimddp"], "rcpc": ["lrcpc"], "atomics": ["atomics"], "i8mm": ["i8mm"],
}


def sysroot_key() -> str:
    return hashlib.sha256(json.dumps([SUITE, "arm64", "extract", PACKAGES]).encode()).hexdigest()[:10]


def sysroot_path() -> Path:
    """Where the sysroot for the current package list lives (it may not exist yet)."""
    return cache_dir("emulator", "sysroot") / f"{SUITE}-arm64-{sysroot_key()}"


def cpuinfo_text(target: Target) -> str:
    """An ARM /proc/cpuinfo for `target`: implementer 0x41 (Arm) and the target's CPU part."""
    target.require_emulation()
    variant, revision = _REVISION.get(target.cpu_part.lower(), ("0x0", "0"))
    words = ["fp", "asimd", "evtstrm"]
    for feat in target.features:
        words += [w for w in _FEATURE_WORDS.get(feat, []) if w not in words]
    words.append("cpuid")
    block = (
        "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {feat}\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: {var}\nCPU part\t: {part}\nCPU revision\t: {rev}\n\n"
    )
    text = "".join(
        block.format(n=n, feat=" ".join(words), var=variant, part=target.cpu_part.lower(), rev=revision)
        for n in range(max(1, target.cores))
    )
    return text + f"Hardware\t: edgecnn emulated {target.qemu_cpu}\n"


def read_dpkg_versions(root: Path, packages: tuple[str, ...]) -> dict[str, str]:
    """Versions of installed `packages` in a sysroot, from their Debian changelogs.

    The extract variant unpacks packages without dpkg, so var/lib/dpkg/status
    stays empty; every Debian package's changelog starts "source (version) ...".
    """
    found: dict[str, str] = {}
    for name in packages:
        log = root / "usr" / "share" / "doc" / name / "changelog.Debian.gz"
        try:
            with gzip.open(log, "rt", errors="replace") as f:
                first = f.readline()
        except OSError:
            continue
        m = re.match(r"\S+ \(([^)]+)\)", first)
        if m:
            found[name] = m.group(1)
    return found


def sysroot_info(root: Path | None = None) -> dict | None:
    """The manifest of a complete sysroot, or None when there is none."""
    root = root or sysroot_path()
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def glibc_version(root: Path) -> tuple[int, int]:
    """(2, 36) for bookworm: the newest manylinux tag the guest can load."""
    version = read_dpkg_versions(root, ("libc6",)).get("libc6", "")
    parts = version.split("-")[0].split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        raise ToolError(f"cannot read the glibc version of the sysroot {root}: run `edgecnn emulator setup`")
    return int(parts[0]), int(parts[1])


def build_sysroot(log=print) -> Path:
    """Create the sysroot with mmdebstrap (extract variant: no scripts run, no binfmt needed).

    Reused when its manifest exists; built under a temporary name and renamed.
    """
    final = sysroot_path()
    if sysroot_info(final):
        return final
    require_tools(["mmdebstrap"])
    mirror = debian_mirror(SUITE)
    # --mode=root needs root; without it, unshare runs the same extraction in a user namespace.
    mode = "root" if os.geteuid() == 0 else "unshare"
    log(f"building the arm64 {SUITE} sysroot from {mirror} (mmdebstrap --mode={mode})")
    with atomic_dir(final) as tmp:
        cmd = ["mmdebstrap", f"--mode={mode}", "--arch=arm64", "--variant=extract", "--quiet",
               f"--include={','.join(PACKAGES)}", SUITE, str(tmp), mirror]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise ToolError(f"mmdebstrap failed (exit {done.returncode}): {last}")
        _compile_stdlib(tmp)
        versions = read_dpkg_versions(tmp, ("python3.11", "libc6", "libstdc++6"))
        if "python3.11" not in versions:
            raise ToolError(f"mmdebstrap made a sysroot without python3.11 (from {mirror})")
        manifest = {"suite": SUITE, "arch": "arm64", "mirror": mirror, "packages": list(PACKAGES),
                    "versions": versions}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return final


def _compile_stdlib(root: Path) -> None:
    """Byte-compile the guest stdlib with the host's 3.11 (same bytecode within 3.11).

    Debian compiles .pyc in maintainer scripts, which the extract variant never
    runs; without this every emulated run would recompile the stdlib under qemu.
    """
    lib = root / "usr" / "lib" / "python3.11"
    if sys.version_info[:2] != (3, 11) or not lib.is_dir():
        return  # the guest then compiles on the fly: slower, still correct
    cmd = [sys.executable, "-m", "compileall", "-q", "-j", "1", "-d", "/usr/lib/python3.11", str(lib)]
    subprocess.run(cmd, capture_output=True, check=False)


def view_path(target: Target) -> Path:
    return cache_dir("emulator", "views") / target.name


def guest_mount(name: str) -> str:
    """The fixed guest path of a host directory mounted into the views (see ensure_view)."""
    return f"{GUEST_MOUNT}/{name}"


def ensure_view(target: Target, root: Path | None = None, mounts: dict[str, Path] | None = None) -> Path:
    """The `-L` prefix for `target`: symlinks into the sysroot plus the target's proc/cpuinfo.

    `mounts` (name -> host dir) appear to the guest as /edgecnn/<name>. The guest's
    paths (PYTHONPATH, script names) then read the same on every machine: their
    lengths shift Python's heap layout and with it the instruction count.
    """
    root = root or sysroot_path()
    if not sysroot_info(root):
        raise ToolError("no aarch64 sysroot yet: run `edgecnn emulator setup`")
    final = view_path(target)
    if view_is_current(target, root, mounts):
        return final
    with atomic_dir(final) as tmp:
        for name in VIEW_LINKS:
            if (root / name).exists():
                os.symlink(root / name, tmp / name)
        atomic_write_bytes(tmp / "proc" / "cpuinfo", cpuinfo_text(target).encode())
        for name, host_dir in (mounts or {}).items():
            link = tmp / guest_mount(name).lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(host_dir.resolve(), link)
        (tmp / "edgecnn-view.json").write_text(_view_stamp(target, root, mounts))
    return final


def _view_stamp(target: Target, root: Path, mounts: dict[str, Path] | None) -> str:
    links = {name: str(path.resolve()) for name, path in (mounts or {}).items()}
    return json.dumps({"sysroot": str(root), "cpuinfo": cpuinfo_text(target), "mounts": links}, sort_keys=True)


def view_is_current(target: Target, root: Path | None = None, mounts: dict[str, Path] | None = None) -> bool:
    """True when the target's view exists and matches the sysroot, the target file and the mounts."""
    root = root or sysroot_path()
    return _read(view_path(target) / "edgecnn-view.json") == _view_stamp(target, root, mounts)


def view_cpu_part(target: Target) -> str | None:
    """The CPU part the target's view currently shows the guest (None: no view)."""
    text = _read(view_path(target) / "proc" / "cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("CPU part"):
            return line.split(":", 1)[1].strip()
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
