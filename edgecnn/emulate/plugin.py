"""Build the instruction-counting TCG plugin (insn_count.c) against the host's qemu.

Debian ships no qemu plugin binaries and no package carries qemu-plugin.h, but
the qemu *source* package has it (include/qemu/qemu-plugin.h). The host usually
has no deb-src lines, so apt-get runs with a private sources list (the host's own
archives, as deb-src) and private lists/cache dirs: the system's apt state is
never touched, and apt still checks the archive signatures. Only the header is
taken from the tarball; the plugin needs nothing else (no glib in the 7.2 API).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgecnn.emulate.tools import host_apt_sources, package_version, qemu_version, require_tools
from edgecnn.errors import ToolError
from edgecnn.paths import atomic_write_bytes, cache_dir

SOURCE = Path(__file__).with_name("insn_count.c")
HEADER = "include/qemu/qemu-plugin.h"


def plugin_dir() -> Path:
    return cache_dir("emulator", "plugin")


def header_path(source_version: str) -> Path:
    safe = source_version.replace(":", "_")
    return plugin_dir() / f"qemu-{safe}" / "qemu-plugin.h"


def plugin_path(source_version: str) -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:10]
    return header_path(source_version).parent / f"libinsncount-{digest}.so"


def _apt_options(work: Path) -> list[str]:
    opts = [
        f"-o=Dir::Etc::SourceList={work / 'sources.list'}", "-o=Dir::Etc::SourceParts=/nonexistent",
        f"-o=Dir::State::Lists={work / 'lists'}", f"-o=Dir::Cache={work / 'cache'}",
    ]
    if os.geteuid() != 0:
        # Private dirs need no lock; apt cannot drop to its _apt sandbox user anyway.
        opts += ["-o=Debug::NoLocking=1", "-o=APT::Sandbox::User="]
    return opts


def _apt(args: list[str], work: Path, cwd: Path) -> None:
    done = subprocess.run(["apt-get", "-q", *_apt_options(work), *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("E:")] or done.stderr.splitlines()
        raise ToolError(f"apt-get {args[0]} failed: {(errors or ['no message'])[-1]}")


def fetch_header(log=print) -> Path:
    """qemu-plugin.h from the source package of the installed qemu-user (cached)."""
    _, src_pkg, src_version = package_version("qemu-user")
    final = header_path(src_version)
    if final.is_file():
        return final
    sources = host_apt_sources()
    if not sources:
        raise ToolError("the host's apt has no sources to fetch the qemu source package from")
    log(f"fetching {HEADER} from the Debian source package {src_pkg} {src_version}")
    with tempfile.TemporaryDirectory(prefix="edgecnn-qemu-src-") as tmp:
        work = Path(tmp)
        (work / "lists" / "partial").mkdir(parents=True)
        (work / "cache" / "archives" / "partial").mkdir(parents=True)
        (work / "dl").mkdir()
        lines = dict.fromkeys(s.line("deb-src") for s in sources)
        (work / "sources.list").write_text("\n".join(lines) + "\n")
        _apt(["update"], work, work)
        _apt(["source", "--download-only", f"{src_pkg}={src_version}"], work, work / "dl")
        tarballs = sorted((work / "dl").glob("*.orig.tar.*"))
        if not tarballs:
            raise ToolError(f"apt-get source {src_pkg} gave no .orig tarball")
        data = _extract_member(tarballs[0], HEADER)
    atomic_write_bytes(final, data)
    return final


def _extract_member(tarball: Path, suffix: str) -> bytes:
    with tarfile.open(tarball) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith("/" + suffix):
                f = tar.extractfile(member)
                if f is not None:
                    return f.read()
    raise ToolError(f"{tarball.name} has no {suffix}")


def build_plugin(log=print) -> Path:
    """The compiled counting plugin for the installed qemu (built once per source/qemu version)."""
    require_tools(["gcc", "qemu-aarch64"])
    qemu_version()  # also checks that this qemu accepts -plugin
    _, _, src_version = package_version("qemu-user")
    final = plugin_path(src_version)
    if final.is_file():
        return final
    header = fetch_header(log)
    log(f"building {final.name}")
    tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}")
    cmd = ["gcc", "-O2", "-shared", "-fPIC", "-Wall", "-I", str(header.parent), "-o", str(tmp), str(SOURCE)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise ToolError(f"building the qemu plugin failed: {first}")
    os.replace(tmp, final)
    return final


def installed_plugin() -> Path | None:
    """The built plugin for the installed qemu-user, or None."""
    try:
        _, _, src_version = package_version("qemu-user")
    except ToolError:
        return None
    path = plugin_path(src_version)
    return path if path.is_file() else None


@dataclass(frozen=True)
class Counts:
    """What the plugin reported: one instruction count per marked region (the calling thread's).

    `threads` (profile runs only): per region, each thread that ran in it (by qemu's vCPU index, the calling
    thread included) -> its statistics: insn, loads, stores, load_bytes, store_bytes, l1_miss, l2_miss, futex
    and the instruction classes (CLASSES).
    """

    regions: list[int]
    errors: list[str]
    finished: bool  # the guest exited normally (the atexit line was written)
    threads: list[dict[int, dict[str, int]]] = field(default_factory=list)


# The plugin's instruction classes (insn_count.c, class_names), decoded from the A64 encoding groups.
CLASSES = ("branch", "int", "int_mul", "load", "store", "vec_load", "vec_store", "vec_fmul", "vec_imul",
           "vec_other")


def profile_args(l1: tuple[int, int] | None = None, l2: tuple[int, int] | None = None) -> list[str]:
    """The plugin arguments of a profile run: classes and memory, with a cache model of (bytes, ways) each.

    Instrumentation starts at the guest's warm marker (start=warm; guest/run_bundle.py sends it before its
    warm-up invokes), not with the interpreter's start-up: a run that sends none gets an error line.
    """
    args = ["profile=1", "start=warm"]
    if l1:
        args.append(f"l1={int(l1[0])}:{int(l1[1])}")
    if l2:
        if not l1:
            raise ValueError("an L2 model needs an L1 model")
        args.append(f"l2={int(l2[0])}:{int(l2[1])}")
    return args


def parse_counts(text: str) -> Counts:
    """Parse the plugin's output file."""
    regions, errors, finished, threads = [], [], False, []
    pending: dict[int, dict[str, int]] = {}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "thread" and len(words) >= 3:
            pending[int(words[2])] = {k: int(v) for k, v in (w.split("=", 1) for w in words[3:])}
        elif words[0] == "region" and len(words) == 3:
            regions.append(int(words[2]))
            if pending:
                threads.append(pending)
                pending = {}
        elif words[0] == "error":
            errors.append(" ".join(words[1:]))
        elif words[0] == "exit":
            finished = True
    return Counts(regions, errors, finished, threads)
