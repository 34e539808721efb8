"""`edgecnn emulator setup` and `status`: the pieces of the aarch64 environment.

    host tools (apt)  ->  sysroot (mmdebstrap)  ->  aarch64 wheels (host pip)
                      ->  counting plugin (qemu source header + gcc)
                      ->  one view per target (symlinks + its /proc/cpuinfo)

Every piece lives under cache_dir("emulator"), is keyed by what it was built
from, is built under a temporary name and renamed, and is reused when present,
so setup is idempotent and cheap to call before every run. A file lock keeps two
concurrent set-ups from replacing each other's work.
TVM's aarch64 runtime is optional (with_tvm / --with-tvm): a 95 MB download that
only TVM bundles need.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from edgecnn.emulate import plugin, sysroot, tools, wheels
from edgecnn.errors import ToolError
from edgecnn.paths import cache_dir
from edgecnn.targets import Target, get_target, list_targets


@dataclass(frozen=True)
class Piece:
    """One line of `edgecnn emulator status`."""

    name: str
    ok: bool
    version: str = ""
    path: str = ""
    hint: str = ""  # what to do when not ok
    required: bool = True  # False: reported, but the environment works without it

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Ready:
    """Paths a guest run needs for one target."""

    sysroot: Path
    view: Path
    site: Path  # host paths; the guest sees site, tvm and guest/ under /edgecnn (sysroot.guest_mount)
    plugin: Path | None
    tvm: Path | None  # the optional TVM runtime site dir


def emulated_targets() -> list[Target]:
    """The built-in targets qemu can stand in for."""
    return [t for t in list_targets() if t.can_emulate]


@contextmanager
def _setup_lock() -> Iterator[None]:
    with open(cache_dir("emulator") / ".setup.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def setup(target: str | Target | None = None, with_tvm: bool = False, log=print) -> list[Piece]:
    """Make the whole environment (views for `target`, or for every emulated target).

    with_tvm adds the apache-tvm aarch64 runtime; without it an installed one is kept.

    Returns status() afterwards. Raises ToolError with the apt command when host
    tools are missing.
    """
    targets = [get_target(target).require_emulation()] if target is not None else emulated_targets()
    tools.require_tools()
    started = time.perf_counter()
    with _setup_lock():
        root = sysroot.build_sysroot(log)
        glibc = sysroot.glibc_version(root)
        site = wheels.install_wheels(glibc, log)
        if with_tvm:
            wheels.install_tvm_runtime(glibc, log)
        plugin.build_plugin(log)
        mounts = _mounts(site, wheels.tvm_site_path(glibc))
        for t in targets:
            sysroot.ensure_view(t, root, mounts)
    log(f"emulator environment ready in {time.perf_counter() - started:.1f} s")
    return status()


def _current_site(root: Path) -> Path | None:
    """The site dir matching the host's pins and the sysroot's glibc, if installed."""
    if not sysroot.sysroot_info(root):
        return None
    try:
        site = wheels.site_path(wheels.host_pins(), wheels.platform_tags(sysroot.glibc_version(root)))
    except ToolError:
        return None
    return site if wheels.site_info(site) else None


def require_environment(target: Target, need_plugin: bool = False) -> Ready:
    """What a run needs; TargetError when qemu cannot stand in for `target`, else one ToolError
    saying to run `edgecnn emulator setup`.

    A missing view is made here (a few symlinks), so switching targets needs no
    new set-up.
    """
    target.require_emulation()
    tools.require_tools(["qemu-aarch64"])
    if shutil.which("setarch") is None:
        raise ToolError("setarch not found: apt-get install util-linux")
    root = sysroot.sysroot_path()
    if not sysroot.sysroot_info(root):
        raise ToolError("no aarch64 sysroot yet: run `edgecnn emulator setup`")
    site = _current_site(root)
    if site is None:
        raise ToolError("the aarch64 wheels are missing or older than the host's: run `edgecnn emulator setup`")
    built = plugin.installed_plugin()
    if need_plugin and built is None:
        raise ToolError("the instruction-counting plugin is not built: run `edgecnn emulator setup`")
    tvm = wheels.tvm_site_path(sysroot.glibc_version(root))
    mounts = _mounts(site, tvm)
    if not sysroot.view_is_current(target, root, mounts):
        # Under the set-up lock: two first runs of a target must not replace each other's view.
        with _setup_lock():
            sysroot.ensure_view(target, root, mounts)
    return Ready(root, sysroot.view_path(target), site, built, tvm)


def _mounts(site: Path, tvm: Path | None) -> dict[str, Path]:
    """Host dirs the guest sees at fixed paths: /edgecnn/site, /edgecnn/tvm, /edgecnn/guest, and
    edgecnn's own package at /edgecnn/src/edgecnn (the guest runs edgecnn.runner.sessions from it)."""
    mounts = {"site": site, "guest": sysroot.GUEST_DIR, sysroot.PACKAGE_MOUNT: sysroot.PACKAGE_DIR}
    if tvm is not None:
        mounts["tvm"] = tvm
    return mounts


def status() -> list[Piece]:
    """Each piece of the environment: present or not, its version, where it is."""
    pieces = []
    for t in tools.TOOLS:
        path = shutil.which(t.command)
        version = ""
        if path and t.command == "qemu-aarch64":
            try:
                version = tools.qemu_version()
            except ToolError as e:
                pieces.append(Piece(t.command, False, "", path, str(e)))
                continue
        pieces.append(Piece(t.command, path is not None, version, path or "", "" if path else
                            tools.install_hint([t])))
    root = sysroot.sysroot_path()
    info = sysroot.sysroot_info(root)
    setup_hint = "edgecnn emulator setup"
    if info:
        pieces.append(Piece("sysroot", True, f"{info['suite']} arm64, python3.11 {info['versions']['python3.11']}",
                            str(root)))
    else:
        pieces.append(Piece("sysroot", False, "", str(root), setup_hint))
    site = _current_site(root)
    if site is not None:
        versions = wheels.site_info(site)["pins"]
        pieces.append(Piece("aarch64 wheels", True, ", ".join(f"{n} {v}" for n, v in versions.items()), str(site)))
    else:
        pieces.append(Piece("aarch64 wheels", False, "", "", setup_hint))
    built = plugin.installed_plugin()
    pieces.append(Piece("counting plugin", built is not None, "qemu plugin API 1" if built else "",
                        str(built or ""), "" if built else setup_hint))
    for t in emulated_targets():
        part = sysroot.view_cpu_part(t)
        ok = part == t.cpu_part.lower()
        pieces.append(Piece(f"view {t.name}", ok, f"-cpu {t.qemu_cpu}, CPU part {part}" if part else "",
                            str(sysroot.view_path(t)) if part else "",
                            "" if ok else f"made on first run, or: edgecnn emulator setup --target {t.name}"))
    tvm = wheels.tvm_site_path(sysroot.glibc_version(root)) if info else None
    if tvm is not None:
        versions = wheels.site_info(tvm)["pins"]
        pieces.append(Piece("apache-tvm aarch64 runtime", True, ", ".join(f"{n} {v}" for n, v in versions.items()),
                            str(tvm), required=False))
    else:
        pieces.append(Piece("apache-tvm aarch64 runtime", False, "", "", "edgecnn emulator setup --with-tvm",
                            required=False))
    return pieces


def is_ready(pieces: list[Piece]) -> bool:
    """True when every required piece is there."""
    return all(p.ok for p in pieces if p.required)
