"""Targets: one TOML file per board under targets/, schema and validation here.

A target file is flat data (no logic): what the compile, emulate and bench
stages need to know about a board. A user adds a board by adding a file, or by
passing a path to one wherever a target name is accepted.

The facts derived from a target are decided here once, and every stage asks the
Target: the machine edgecnn runs on (`host_arch`), whether a target's code runs
here natively (`Target.runs_natively`) or under qemu (`Target.can_emulate`,
`Target.require_emulation`). Standard library only, and `tomllib` is imported
on load: the board-side runner imports `host_arch` from here, on Pythons older
than 3.11 too.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecnn.errors import TargetError
from edgecnn.kinds import Arch, Backend

# What platform.machine() says on other systems, in target terms.
_MACHINE_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}


def host_arch() -> str:
    """This machine's architecture as targets and manifests spell it: "aarch64", "x86_64", ..."""
    machine = platform.machine().lower()
    return _MACHINE_ALIASES.get(machine, machine)


# /proc/cpuinfo flags of the 8-bit dot-product instructions int8 kernels are built on (x86 VNNI, Arm dotprod).
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "asimddp")


def host_int8_dot() -> str | None:
    """The first INT8_DOT_FLAGS flag this CPU lists; None without one, or where /proc/cpuinfo cannot be read."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text(errors="replace").split())
    except OSError:
        return None
    return next((f for f in INT8_DOT_FLAGS if f in flags), None)


@dataclass(frozen=True)
class Gpu:
    name: str
    arch: str  # CUDA compute capability as TVM/nvcc spell it, e.g. "sm_53"
    memory_mb: int = 0


# The cost model's features (edgecnn.emulate.cost documents each).
COST_FEATURES = ("vec_fmul", "vec_imul", "l1_miss_all", "l2_miss", "futex")


@dataclass(frozen=True)
class Cache:
    """The board's data caches as the counting plugin models them: (bytes, ways) each, 64-byte lines.

    l1 is per core; l2 is one cache shared by every core of the cluster (the Pi 3/4's L2; the Pi 5's
    private L2s and shared L3 are modelled as their shared L3).
    """

    l1: tuple[int, int]
    l2: tuple[int, int]


@dataclass(frozen=True)
class Cost:
    """The board's fitted cost model (edgecnn.emulate.cost): ns per profile feature, from published figures.

    runtime: the runtime whose published latencies the weights were fitted on ("ncnn"); a prediction for
    another runtime's bundle is that runtime's counts on this runtime's scale, and says so.
    median_error / worst_error: leave-one-network-out error of the fit (fractions), the band bench shows.
    """

    weights_ns: dict[str, float]
    runtime: str
    median_error: float
    worst_error: float
    reference: str


@dataclass(frozen=True)
class Target:
    """One board. Field docs are the schema users read (`edgecnn targets show`)."""

    name: str
    description: str
    arch: str  # "aarch64" | "x86_64"
    triple: str  # GNU triple, e.g. "aarch64-linux-gnu"
    cpu: str  # LLVM/GCC CPU name, e.g. "cortex-a72"
    isa: str  # e.g. "armv8-a", "armv8.2-a"
    cores: int
    clock_mhz: int  # 0 when unknown (host)
    tvm: dict[str, Any]  # TVM target in dict form (0.27 rejects strings)
    backends: list[Backend]  # in order of preference
    aliases: list[str] = field(default_factory=list)
    board: str = ""
    features: list[str] = field(default_factory=list)  # e.g. ["neon", "dotprod", "fp16"]
    memory_mb: int = 0
    cross_compiler: str = ""  # C++ cross compiler; "" when the host builds natively
    qemu_cpu: str = ""  # qemu-aarch64 -cpu model; "" when not emulated
    cpu_part: str = ""  # MIDR part number for the emulated /proc/cpuinfo, e.g. "0xd08"
    gpu: Gpu | None = None
    cost: Cost | None = None
    cache: Cache | None = None
    source: str = ""  # the file this target came from

    @property
    def is_host(self) -> bool:
        return self.name == "host"

    @property
    def runs_natively(self) -> bool:
        """True when this machine executes the target's code itself (no qemu, no board)."""
        return self.is_host or self.arch == host_arch()

    def emulation_problem(self) -> str | None:
        """Why qemu-user cannot stand in for this board here, or None when it can."""
        if self.arch != Arch.AARCH64:
            return f'arch = "{self.arch}" is not emulated, only "aarch64" is'
        if not self.qemu_cpu:
            return "a target without a qemu_cpu (the qemu-aarch64 -cpu core) is not emulated"
        if self.qemu_cpu == "max":
            # `max` has every extension, so code the board's core lacks would pass.
            return 'qemu_cpu = "max" would hide illegal instructions; name the core'
        if not self.cpu_part:
            return "a target without a cpu_part (the CPU part of the guest's /proc/cpuinfo) is not emulated"
        return None

    @property
    def can_emulate(self) -> bool:
        """True when runs of this target can go under qemu-aarch64 with the board's core."""
        return self.emulation_problem() is None

    def require_emulation(self) -> "Target":
        """This target, or TargetError saying why it cannot be emulated."""
        problem = self.emulation_problem()
        if problem:
            raise TargetError(f"target {self.name} cannot be emulated: {problem}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Schema: key -> (python type, required). Lists are lists of str.
_SCHEMA: dict[str, tuple[type, bool]] = {
    "name": (str, True),
    "description": (str, True),
    "arch": (str, True),
    "triple": (str, True),
    "cpu": (str, True),
    "isa": (str, True),
    "cores": (int, True),
    "clock_mhz": (int, True),
    "tvm": (dict, True),
    "backends": (list, False),  # required, under this name or the old one (see _backends)
    "runtimes": (list, False),  # the old name of `backends`; still read
    "aliases": (list, False),
    "board": (str, False),
    "features": (list, False),
    "memory_mb": (int, False),
    "cross_compiler": (str, False),
    "qemu_cpu": (str, False),
    "cpu_part": (str, False),
    "gpu": (dict, False),
    "cost": (dict, False),
    "cache": (dict, False),
}
_GPU_SCHEMA: dict[str, tuple[type, bool]] = {"name": (str, True), "arch": (str, True), "memory_mb": (int, False)}
_COST_SCHEMA: dict[str, tuple[type, bool]] = {"weights_ns": (dict, True), "runtime": (str, True),
                                              "median_error": (float, True), "worst_error": (float, True),
                                              "reference": (str, True)}
# The TVM target keys edgecnn reads or completes. TVM knows many more (libs, mabi, max_num_threads, ...);
# those pass through to tvm.target.Target unchecked, which names a bad one itself.
_TVM_SCHEMA: dict[str, tuple[type, bool]] = {
    "kind": (str, False),  # required, with its own message (see _check_tvm)
    "mtriple": (str, False),
    "mcpu": (str, False),
    "mattr": (list, False),
    "num-cores": (int, False),
    "arch": (str, False),
    "host": (dict, False),
}
_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", list: "a list of strings", dict: "a table"}


def builtin_targets_dir() -> Path:
    """targets/ of the source tree, or the copy shipped inside the wheel."""
    env = os.environ.get("EDGECNN_TARGETS_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent / "targets"
    if repo.is_dir():
        return repo
    return Path(__file__).resolve().parent / "_targets"


def _check_table(data: dict, schema: dict[str, tuple[type, bool]], where: str, closed: bool = True) -> None:
    if closed:
        for key in data:
            if key not in schema:
                known = ", ".join(sorted(schema))
                raise TargetError(f"{where}: unknown key '{key}' (known keys: {known})")
    for key, (typ, required) in schema.items():
        if key not in data:
            if required:
                raise TargetError(f"{where}: missing required key '{key}'")
            continue
        value = data[key]
        # bool is an int subclass in Python; a target never means True by 4 cores.
        ok = isinstance(value, (int, float) if typ is float else typ) and not (
            typ in (int, float) and isinstance(value, bool))
        if ok and typ is list:
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise TargetError(
                f"{where}: key '{key}' must be {_TYPE_WORDS[typ]}, got {type(value).__name__} {value!r}"
            )


def _check_tvm(table: dict, source: str, name: str = "tvm") -> None:
    """The TVM target table and its [tvm.host]: types of the keys edgecnn relies on, checked at load."""
    if "kind" not in table:
        raise TargetError(f"{source}: table '{name}' needs a 'kind' (e.g. kind = \"llvm\")")
    _check_table(table, _TVM_SCHEMA, f"{source} [{name}]", closed=False)
    if table.get("num-cores", 1) < 1:
        raise TargetError(f"{source} [{name}]: 'num-cores' must be at least 1")
    if "host" in table:
        _check_tvm(table["host"], source, f"{name}.host")


def _backends(data: dict, source: str) -> list[Backend]:
    """The `backends` list (or the old `runtimes` one) as Backend members, in the file's order."""
    given = [key for key in ("backends", "runtimes") if key in data]
    if not given:
        raise TargetError(f"{source}: missing required key 'backends'")
    if len(given) == 2:
        raise TargetError(f"{source}: give 'backends' only ('runtimes' is its old name), not both")
    key = given[0]
    names = data[key]
    if not names:
        raise TargetError(f"{source}: '{key}' must name at least one backend")
    for name in names:
        if name not in Backend.values():
            raise TargetError(f"{source}: unknown backend {name!r} in '{key}' (known: {', '.join(Backend.values())})")
    return [Backend(name) for name in names]


def _resolve_native(data: dict) -> dict:
    """host.toml says `native`; fill in what this machine is."""
    data = dict(data)
    arch = host_arch()
    data["arch"] = arch
    if data.get("triple") == "native":
        data["triple"] = f"{arch}-linux-gnu"
    if data.get("cores") == 0:
        data["cores"] = os.cpu_count() or 1
    tvm = dict(data["tvm"])
    tvm.setdefault("num-cores", data["cores"])
    data["tvm"] = tvm
    return data


def parse_target(data: dict, source: str) -> Target:
    """Validate one target table (as read from TOML) and build a Target."""
    _check_table(data, _SCHEMA, source)
    if data["arch"] not in Arch.values():
        raise TargetError(f"{source}: key 'arch' must be one of {', '.join(Arch.values())}, got {data['arch']!r}")
    backends = _backends(data, source)
    _check_tvm(data["tvm"], source)
    if data["cores"] < 0 or data["clock_mhz"] < 0:
        raise TargetError(f"{source}: 'cores' and 'clock_mhz' must not be negative")
    if data["arch"] == Arch.NATIVE:
        data = _resolve_native(data)
    elif data["cores"] == 0:
        raise TargetError(f"{source}: 'cores' must be at least 1")
    gpu = None
    if "gpu" in data:
        _check_table(data["gpu"], _GPU_SCHEMA, f"{source} [gpu]")
        gpu = Gpu(**data["gpu"])
    cost = _cost(data["cost"], source) if "cost" in data else None
    cache = _cache(data["cache"], source) if "cache" in data else None
    fields = {k: v for k, v in data.items() if k not in ("gpu", "cost", "cache", "backends", "runtimes")}
    return Target(**fields, backends=backends, gpu=gpu, cost=cost, cache=cache, source=source)


def _cost(table: dict, source: str) -> Cost:
    _check_table(table, _COST_SCHEMA, f"{source} [cost]")
    weights = table["weights_ns"]
    for key, value in weights.items():
        if key not in COST_FEATURES:
            raise TargetError(f"{source} [cost.weights_ns]: unknown feature '{key}' (known: {', '.join(COST_FEATURES)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise TargetError(f"{source} [cost.weights_ns]: '{key}' must be a number >= 0, got {value!r}")
    if not any(weights.values()):
        raise TargetError(f"{source} [cost.weights_ns]: every weight is 0")
    return Cost({k: float(v) for k, v in weights.items()}, table["runtime"], float(table["median_error"]),
                float(table["worst_error"]), table["reference"])


def _cache(table: dict, source: str) -> Cache:
    sizes = {}
    for level in ("l1", "l2"):
        value = table.get(level)
        ok = (isinstance(value, list) and len(value) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))
        sets = value[0] // 64 // value[1] if ok else 0
        if not ok or sets & (sets - 1) or sets == 0:
            raise TargetError(f"{source} [cache]: '{level}' must be [bytes, ways] with a power-of-two number "
                              f"of 64-byte sets, got {value!r}")
        sizes[level] = (value[0], value[1])
    extra = set(table) - {"l1", "l2"}
    if extra:
        raise TargetError(f"{source} [cache]: unknown key '{sorted(extra)[0]}' (known keys: l1, l2)")
    return Cache(sizes["l1"], sizes["l2"])


def load_target_file(path: str | Path) -> Target:
    """Load and validate one target TOML file."""
    import tomllib  # here, not at the top: the runner imports this module on Pythons before 3.11

    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise TargetError(f"target file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:  # tomllib decodes the bytes itself and names no file
        raise TargetError(f"{path}: not UTF-8 text (byte {e.start}); TOML files are UTF-8, save it as UTF-8") \
            from None
    except OSError as e:
        raise TargetError(f"{path}: cannot read: {e.strerror}") from None
    return parse_target(data, str(path))


def list_targets(directory: Path | None = None) -> list[Target]:
    """All targets in a directory (default: the built-in targets/), sorted by name."""
    directory = directory or builtin_targets_dir()
    targets = [load_target_file(p) for p in sorted(directory.glob("*.toml"))]
    seen: dict[str, str] = {}
    for t in targets:
        for key in [t.name, *t.aliases]:
            if key in seen and seen[key] != t.source:
                raise TargetError(f"{t.source}: name or alias '{key}' is also used by {seen[key]}")
            seen[key] = t.source
    return targets


def get_target(name_or_path: str | Target) -> Target:
    """Look a target up by name, alias (case-insensitive) or path to a .toml file; a Target is returned as it is."""
    if isinstance(name_or_path, Target):
        return name_or_path
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        return load_target_file(name_or_path)
    wanted = name_or_path.lower()
    targets = list_targets()
    for t in targets:
        if wanted == t.name.lower() or wanted in (a.lower() for a in t.aliases):
            return t
    names = ", ".join(t.name for t in targets)
    raise TargetError(f"unknown target '{name_or_path}' (known: {names}; or give a path to a .toml file)")


def host_target() -> Target:
    """The `host` target, parsed once per targets folder: the native reference of emulated runs."""
    return _host_target(builtin_targets_dir())


@functools.lru_cache(maxsize=4)
def _host_target(directory: Path) -> Target:
    # Keyed by the folder, so EDGECNN_TARGETS_DIR (tests, a user's own boards) gets its own host.
    for t in list_targets(directory):
        if t.is_host:
            return t
    raise TargetError(f"{directory} has no host.toml: the host target describes this machine")
