"""Host tools the emulator needs, and the Debian archive the host's apt already uses.

Everything here is looked up, never installed: edgecnn does not run apt for the
user (tools/setup.sh does, from tools/apt-packages.txt). A missing tool is one
ToolError line that names the apt package to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgecnn.errors import ToolError


@dataclass(frozen=True)
class HostTool:
    """One executable on the host and the Debian package that provides it."""

    command: str
    package: str
    why: str


# qemu-user, not qemu-user-static: only the dynamically linked build can dlopen a
# TCG plugin (-plugin), and the instruction counter is such a plugin.
TOOLS: tuple[HostTool, ...] = (
    HostTool("qemu-aarch64", "qemu-user", "runs aarch64 Linux programs on this machine"),
    HostTool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu", "cross-compiles C for the boards"),
    HostTool("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", "cross-compiles C++ (TVM bundles)"),
    HostTool("mmdebstrap", "mmdebstrap", "builds the arm64 Debian sysroot"),
    HostTool("gcc", "gcc", "builds the qemu instruction-counting plugin"),
)

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")


def missing_tools() -> list[HostTool]:
    """The tools from TOOLS that are not on PATH."""
    return [t for t in TOOLS if shutil.which(t.command) is None]


def install_hint(tools: list[HostTool]) -> str:
    packages = " ".join(dict.fromkeys(t.package for t in tools))
    return f"apt-get install {packages} (or run bash tools/setup.sh)"


def require_tools(commands: list[str] | None = None) -> None:
    """Raise one ToolError naming every missing tool (all of TOOLS, or just `commands`)."""
    wanted = [t for t in TOOLS if commands is None or t.command in commands]
    missing = [t for t in wanted if shutil.which(t.command) is None]
    if not missing:
        return
    names = ", ".join(t.command for t in missing)
    extra = ""
    if any(t.command == "qemu-aarch64" for t in missing) and shutil.which("qemu-aarch64-static"):
        extra = " (qemu-user-static is installed, but its static build cannot load the counting plugin)"
    raise ToolError(f"missing {names}{extra}: {install_hint(missing)}")


def _run(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise ToolError(f"cannot run {cmd[0]}: {e.strerror}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ToolError(f"{' '.join(cmd[:3])} failed (exit {done.returncode}): {last}")
    return done.stdout


def qemu_version() -> str:
    """'7.2.x' style version of qemu-aarch64, checked to accept -plugin."""
    require_tools(["qemu-aarch64"])
    out = _run(["qemu-aarch64", "-version"])
    m = re.search(r"version (\S+)", out)
    if "-plugin" not in _run(["qemu-aarch64", "-h"]):
        raise ToolError("this qemu-aarch64 has no -plugin option (a static build?): apt-get install qemu-user")
    return m.group(1) if m else out.strip().splitlines()[0]


def package_version(package: str) -> tuple[str, str, str]:
    """(version, source package, source version) of an installed Debian package."""
    if shutil.which("dpkg-query") is None:
        raise ToolError("dpkg-query not found: the emulator set-up needs a Debian or Ubuntu host")
    fmt = "${Version}\t${source:Package}\t${source:Version}\t${Status}"
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f", fmt, package], capture_output=True, text=True)
    except OSError as e:
        raise ToolError(f"cannot run dpkg-query: {e.strerror}") from None
    parts = done.stdout.split("\t")
    if done.returncode != 0 or len(parts) != 4 or "install ok installed" not in parts[3]:
        raise ToolError(f"Debian package {package} is not installed: apt-get install {package}")
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class AptSource:
    """One `deb` line (or deb822 stanza entry) of the host's apt configuration."""

    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str = ""

    def line(self, kind: str = "deb") -> str:
        opts = f" [signed-by={self.signed_by}]" if self.signed_by else ""
        return f"{kind}{opts} {self.uri} {self.suite} {' '.join(self.components)}"


def parse_one_line_sources(text: str) -> list[AptSource]:
    """`deb [opts] uri suite comp...` lines; deb-src and comments are skipped."""
    found = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        signed_by = ""
        m = re.match(r"deb\s+\[([^\]]*)\]\s+(.*)", line)
        if m:
            opts, line = m.group(1), "deb " + m.group(2)
            sm = re.search(r"signed-by=(\S+)", opts)
            signed_by = sm.group(1) if sm else ""
        words = line.split()
        if len(words) >= 3:
            found.append(AptSource(words[1], words[2], tuple(words[3:]), signed_by))
    return found


def parse_deb822_sources(text: str) -> list[AptSource]:
    """deb822 `.sources` stanzas; one AptSource per (URI, suite) with Types: deb."""
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, value = raw.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        comps = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                found.append(AptSource(uri, suite, comps, fields.get("signed-by", "")))
    return found


def host_apt_sources() -> list[AptSource]:
    """Every binary source the host's apt reads, in apt's file order."""
    sources: list[AptSource] = []
    if APT_SOURCES.is_file():
        sources += parse_one_line_sources(APT_SOURCES.read_text(errors="replace"))
    if APT_SOURCES_DIR.is_dir():
        for path in sorted(APT_SOURCES_DIR.iterdir()):
            if path.suffix == ".list":
                sources += parse_one_line_sources(path.read_text(errors="replace"))
            elif path.suffix == ".sources":
                sources += parse_deb822_sources(path.read_text(errors="replace"))
    return sources


def debian_mirror(suite: str, sources: list[AptSource] | None = None) -> str:
    """The archive URI the host's apt uses for `suite` main ($EDGECNN_DEBIAN_MIRROR wins)."""
    env = os.environ.get("EDGECNN_DEBIAN_MIRROR")
    if env:
        return env
    for src in host_apt_sources() if sources is None else sources:
        if src.suite == suite and "main" in src.components:
            return src.uri
    raise ToolError(
        f"no Debian '{suite} main' archive in the host's apt sources: "
        f"set EDGECNN_DEBIAN_MIRROR (e.g. http://deb.debian.org/debian)"
    )
