"""Where TVM's CUDA kernels get compiled on this machine: a CUDA toolkit, or NVRTC from pip.

TVM 0.27 compiles generated CUDA C through NVRTC (cuda-python's bindings) by
default, or through nvcc when TVM_CUDA_COMPILE_MODE=nvcc; both need the CUDA
headers under $CUDA_PATH/include. No GPU is needed to compile, so a PC
without one can build a Jetson bundle. Two ways to have that here:

- a CUDA toolkit (nvcc on PATH, or $CUDA_PATH): used as it is;
- the `jetson` extra (pip install 'edgecnn[jetson]'): cuda-bindings with NVRTC
  and the runtime/CCCL header wheels. Their headers sit in separate wheel
  folders, so they are joined (symlinks) into one root in the cache, which
  then serves as $CUDA_PATH for TVM.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgecnn.errors import ToolError
from edgecnn.paths import atomic_dir, cache_dir

INSTALL_HINT = ("install the CUDA toolkit (nvcc), or NVRTC from pip: pip install 'edgecnn[jetson]' "
                "(cuda-bindings 12.x, nvidia-cuda-nvrtc-cu12, nvidia-cuda-runtime-cu12, nvidia-cuda-cccl-cu12)")
HEADER_WHEELS = ("cuda_runtime", "cuda_cccl")  # nvidia.<name>/include, joined in this order


@dataclass(frozen=True)
class Toolchain:
    mode: str  # "nvcc" | "nvrtc"
    cuda_path: Path
    version: str

    def environ(self) -> dict[str, str]:
        """What TVM's nvcc module reads: the compiler it calls and where the headers are (nvcc: on PATH too)."""
        env = {"CUDA_PATH": str(self.cuda_path), "TVM_CUDA_COMPILE_MODE": self.mode}
        if self.mode == "nvcc":
            env["PATH"] = f"{self.cuda_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        return env


def find_toolchain(arch: str | None = None) -> Toolchain:
    """The CUDA compiler to use here for `arch` (sm_xx); ToolError with the install hint when there is none.

    A toolkit on PATH wins when its version can build `arch`; else NVRTC from pip.
    """
    toolkit = _toolkit()
    if toolkit is not None and supports(toolkit.version, arch):
        return toolkit
    version = _nvrtc_version()
    if version is not None and supports(version, arch):
        return Toolchain("nvrtc", _pip_header_root(), version)
    found = [f"{t.mode} {t.version}" for t in [toolkit] if t is not None] + ([f"nvrtc {version}"] if version else [])
    if found:
        raise ToolError(f"no CUDA compiler here builds {arch} ({', '.join(found)}; CUDA 13 dropped sm_50..sm_72): "
                        f"{INSTALL_HINT}")
    raise ToolError(f"compiling CUDA kernels needs NVRTC or nvcc, and neither is here: {INSTALL_HINT}")


def supports(version: str, arch: str | None) -> bool:
    """Whether CUDA `version` compiles for `arch`: 12.x builds sm_50 and up, 13.x sm_75 and up."""
    if arch is None or not arch.startswith("sm_"):
        return True
    try:
        major, sm = int(version.split(".")[0]), int(arch[3:].rstrip("af"))
    except ValueError:
        return True  # unknown versions are left to the compiler, whose error then names the problem
    return sm >= (75 if major >= 13 else 50)


def _toolkit() -> Toolchain | None:
    root = os.environ.get("CUDA_PATH")
    nvcc = Path(root, "bin", "nvcc") if root else None
    if nvcc is None or not nvcc.exists():
        found = shutil.which("nvcc")
        nvcc = Path(found) if found else None
    if nvcc is None:
        return None
    home = nvcc.resolve().parent.parent
    if not (home / "include" / "cuda_runtime.h").exists():
        return None  # a bare nvcc (e.g. a wheel's) without headers cannot build TVM's kernels
    return Toolchain("nvcc", home, _version_from_header(home / "include"))


def _nvrtc_version() -> str | None:
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        return None
    try:
        result, major, minor = nvrtc.nvrtcVersion()
    except Exception:  # noqa: BLE001 - the bindings raise their own not-found error when libnvrtc is missing
        return None
    return f"{major}.{minor}" if result == nvrtc.nvrtcResult.NVRTC_SUCCESS else None


def _pip_header_root() -> Path:
    """One include/ folder joining the header wheels, made once per set of wheel folders."""
    sources = []
    for name in HEADER_WHEELS:
        try:
            module = __import__(f"nvidia.{name}", fromlist=["_"])
        except ImportError:
            raise ToolError(f"NVRTC is installed but the CUDA headers (nvidia-{name.replace('_', '-')}-cu12) are "
                            f"not: {INSTALL_HINT}") from None
        sources.append(Path(next(iter(module.__path__))) / "include")
    key = hashlib.sha256("\n".join(str(s) for s in sources).encode()).hexdigest()[:16]
    root = cache_dir("cuda") / key
    if (root / "include" / "cuda_runtime.h").exists():
        return root
    with atomic_dir(root) as tmp:
        include = tmp / "include"
        include.mkdir()
        for src in sources:
            for path in src.rglob("*"):
                dest = include / path.relative_to(src)
                if path.is_dir():
                    dest.mkdir(exist_ok=True)
                elif not dest.exists():  # runtime's headers win over CCCL's copies
                    dest.symlink_to(path)
    return root


def _version_from_header(include: Path) -> str:
    try:
        for line in (include / "cuda.h").read_text(errors="replace").splitlines():
            if line.startswith("#define CUDA_VERSION "):
                v = int(line.split()[2])
                return f"{v // 1000}.{v % 1000 // 10}"
    except OSError:
        pass
    return "unknown"
