"""aarch64 wheels for the guest, installed by the host's pip into a cached site dir.

pip can install for another platform (`--platform ... --only-binary=:all:`) but
it only considers the wheel tags it is told about. Give it too few
manylinux_2_N tags and it quietly falls back to an old release that still
carries a listed tag (ai-edge-litert 1.4.0 instead of 2.x). So the list names
every tag from manylinux2014 up to the sysroot's glibc, the versions are pinned
to what the host runs (outputs are compared with the host run), and what pip
installed is read back and checked.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from edgecnn.errors import ToolError
from edgecnn.paths import atomic_dir, cache_dir

# Distribution names the guest needs; versions come from the host.
GUEST_PACKAGES = ("numpy", "onnxruntime", "ai-edge-litert", "ncnn")
TVM_PACKAGES = ("apache-tvm", "apache-tvm-ffi")  # optional: `edgecnn emulator setup --with-tvm`
GUEST_PYTHON_VERSION = "3.11"
MANIFEST = "edgecnn-site.json"


def platform_tags(glibc: tuple[int, int]) -> list[str]:
    """Every aarch64 manylinux tag a guest with this glibc can load, oldest first."""
    major, minor = glibc
    if major != 2 or minor < 17:
        raise ToolError(f"the sysroot's glibc {major}.{minor} is older than manylinux2014 (2.17)")
    return ["manylinux2014_aarch64"] + [f"manylinux_2_{n}_aarch64" for n in range(17, minor + 1)]


def host_pins(packages: tuple[str, ...] = GUEST_PACKAGES) -> dict[str, str]:
    """{name: version} of the packages as installed on the host."""
    pins = {}
    for name in packages:
        try:
            pins[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise ToolError(f"{name} is not installed on the host: pip install -e . (edgecnn's dependencies)") from None
    return pins


def pip_command(target_dir: Path, pins: dict[str, str], tags: list[str], no_deps: bool = False) -> list[str]:
    """The host-pip command that installs aarch64 cp311 wheels into target_dir."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-input", "--target", str(target_dir), "--only-binary=:all:",
           "--python-version", GUEST_PYTHON_VERSION, "--implementation", "cp"]
    for tag in tags:
        cmd += ["--platform", tag]
    if no_deps:
        cmd.append("--no-deps")
    return cmd + [f"{name}=={version}" for name, version in pins.items()]


def site_path(pins: dict[str, str], tags: list[str], kind: str = "site") -> Path:
    key = hashlib.sha256(json.dumps([GUEST_PYTHON_VERSION, sorted(pins.items()), tags]).encode()).hexdigest()
    return cache_dir("emulator", kind) / f"cp311-aarch64-{key[:10]}"


def installed_versions(site: Path) -> dict[str, str]:
    """{normalised name: version} from the *.dist-info folders in a --target dir."""
    found = {}
    for info in site.glob("*.dist-info"):
        m = re.match(r"(.+)-([^-]+)\.dist-info$", info.name)
        if m:
            found[_normalise(m.group(1))] = m.group(2)
    return found


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_versions(site_versions: dict[str, str], pins: dict[str, str]) -> None:
    """Raise when pip put anything other than the pinned version of a guest package in site."""
    for name, version in pins.items():
        got = site_versions.get(_normalise(name))
        if got != version:
            raise ToolError(f"pip installed {name} {got or 'nothing'} for aarch64, expected {version} "
                            f"(a missing manylinux tag makes pip pick old wheels)")


def site_info(site: Path) -> dict | None:
    try:
        return json.loads((site / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def install_wheels(glibc: tuple[int, int], log=print) -> Path:
    """The cached site dir with the pinned aarch64 wheels (built once, atomically)."""
    return _install(host_pins(), platform_tags(glibc), "site", log)


def tvm_site_path(glibc: tuple[int, int]) -> Path | None:
    """The TVM runtime site dir for the host's apache-tvm pins, when installed."""
    try:
        site = site_path(host_pins(TVM_PACKAGES), platform_tags(glibc), "tvm")
    except ToolError:
        return None
    return site if site_info(site) else None


def install_tvm_runtime(glibc: tuple[int, int], log=print) -> Path:
    """apache-tvm + apache-tvm-ffi for aarch64, runtime only, in their own site dir.

    Its own dir because it is optional and large. --no-deps: what the runtime
    imports (numpy, ml_dtypes, typing_extensions) is in the main site already.
    The compiler library (240 MB) goes: bundles are compiled on the host, and the
    guest runs them with TVM_USE_RUNTIME_LIB=1 through tvm.runtime.vm.
    """
    return _install(host_pins(TVM_PACKAGES), platform_tags(glibc), "tvm", log, no_deps=True,
                    prune=("tvm/lib/libtvm_compiler.so",))


def _install(pins: dict[str, str], tags: list[str], kind: str, log, no_deps: bool = False,
             prune: tuple[str, ...] = ()) -> Path:
    final = site_path(pins, tags, kind)
    if site_info(final):
        return final
    log(f"installing aarch64 wheels ({kind}): " + ", ".join(f"{n}=={v}" for n, v in pins.items()))
    with atomic_dir(final) as tmp:
        done = subprocess.run(pip_command(tmp, pins, tags, no_deps), capture_output=True, text=True)
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.strip().splitlines() if not ln.startswith("WARNING")]
            raise ToolError(f"pip could not install the aarch64 wheels: {(lines or ['no message'])[-1]}")
        versions = installed_versions(tmp)
        check_versions(versions, pins)
        for rel in prune:
            (tmp / rel).unlink(missing_ok=True)
        manifest = {"python": GUEST_PYTHON_VERSION, "pins": pins, "tags": tags, "versions": versions}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return final
