"""Emulator set-up logic without qemu: cpuinfo text, wheel tags and pins, apt sources, status."""

import dataclasses
import gzip

import pytest

from edgecnn.emulate import sysroot, tools, wheels
from edgecnn.errors import TargetError, ToolError
from edgecnn.targets import get_target


@pytest.mark.parametrize("name, part", [("a53", "0xd03"), ("a72", "0xd08"), ("a76", "0xd0b")])
def test_cpuinfo_names_arm_and_the_targets_core(name, part):
    t = get_target(name)
    text = sysroot.cpuinfo_text(t)
    blocks = [b for b in text.split("\n\n") if b.startswith("processor")]
    assert len(blocks) == t.cores
    for block in blocks:
        assert "CPU implementer\t: 0x41" in block and f"CPU part\t: {part}" in block
        assert "CPU architecture: 8" in block


def test_cpuinfo_features_follow_the_target():
    a53, a76 = sysroot.cpuinfo_text(get_target("a53")), sysroot.cpuinfo_text(get_target("a76"))
    features = lambda text: next(l for l in text.splitlines() if l.startswith("Features")).split(":")[1].split()
    assert {"fp", "asimd", "crc32"} <= set(features(a53)) and "asimddp" not in features(a53)
    assert {"asimddp", "fphp", "asimdhp", "lrcpc"} <= set(features(a76))


def test_cpuinfo_refuses_a_target_that_is_not_emulated():
    with pytest.raises(TargetError, match="not emulated"):
        sysroot.cpuinfo_text(get_target("host"))


def test_platform_tags_list_every_manylinux_up_to_the_sysroot_glibc():
    tags = wheels.platform_tags((2, 36))
    assert tags[0] == "manylinux2014_aarch64"
    assert tags[1:] == [f"manylinux_2_{n}_aarch64" for n in range(17, 37)]
    with pytest.raises(ToolError, match="older than manylinux2014"):
        wheels.platform_tags((2, 12))


def test_pip_command_pins_and_targets_aarch64_cp311(tmp_path):
    pins = {"numpy": "2.4.6", "ai-edge-litert": "2.3.0"}
    cmd = wheels.pip_command(tmp_path / "site", pins, wheels.platform_tags((2, 36)))
    assert cmd[1:4] == ["-m", "pip", "install"]
    assert "--only-binary=:all:" in cmd and cmd[cmd.index("--target") + 1] == str(tmp_path / "site")
    assert cmd[cmd.index("--python-version") + 1] == "3.11" and cmd[cmd.index("--implementation") + 1] == "cp"
    platforms = [cmd[i + 1] for i, word in enumerate(cmd) if word == "--platform"]
    assert platforms == wheels.platform_tags((2, 36))
    assert cmd[-2:] == ["numpy==2.4.6", "ai-edge-litert==2.3.0"] and "--no-deps" not in cmd
    assert "--no-deps" in wheels.pip_command(tmp_path, pins, ["manylinux2014_aarch64"], no_deps=True)


def test_host_pins_match_the_host_and_name_a_missing_package():
    from importlib.metadata import version

    assert wheels.host_pins(("numpy",)) == {"numpy": version("numpy")}
    with pytest.raises(ToolError, match="not installed on the host"):
        wheels.host_pins(("no-such-package-edgecnn",))


def test_version_check_catches_the_silent_old_wheel(tmp_path):
    for name in ("ai_edge_litert-1.4.0.dist-info", "numpy-2.4.6.dist-info"):
        (tmp_path / name).mkdir()
    found = wheels.installed_versions(tmp_path)
    assert found == {"ai-edge-litert": "1.4.0", "numpy": "2.4.6"}
    wheels.check_versions(found, {"numpy": "2.4.6"})
    with pytest.raises(ToolError, match="ai-edge-litert 1.4.0 for aarch64, expected 2.3.0"):
        wheels.check_versions(found, {"ai-edge-litert": "2.3.0"})


def test_sysroot_versions_come_from_debian_changelogs(tmp_path):
    doc = tmp_path / "usr" / "share" / "doc" / "libc6"
    doc.mkdir(parents=True)
    with gzip.open(doc / "changelog.Debian.gz", "wt") as f:
        f.write("glibc (2.36-9+deb12u14) bookworm; urgency=medium\n\n  * ...\n")
    assert sysroot.read_dpkg_versions(tmp_path, ("libc6", "python3.11")) == {"libc6": "2.36-9+deb12u14"}
    assert sysroot.glibc_version(tmp_path) == (2, 36)
    with pytest.raises(ToolError, match="edgecnn emulator setup"):
        sysroot.glibc_version(tmp_path / "nothing")


DEB822 = """Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://example.org/src
Suites: bookworm
Components: main
"""


def test_apt_sources_both_formats():
    found = tools.parse_deb822_sources(DEB822)
    assert [(s.uri, s.suite) for s in found] == [("http://deb.debian.org/debian", "bookworm"),
                                                 ("http://deb.debian.org/debian", "bookworm-updates")]
    assert found[0].line("deb-src") == ("deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                                        "http://deb.debian.org/debian bookworm main")
    lines = tools.parse_one_line_sources(
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main contrib\n"
        "deb-src http://m/debian bookworm main\ndeb http://security/ bookworm-security main\n")
    assert [(s.uri, s.suite, s.components, s.signed_by) for s in lines] == [
        ("http://m/debian", "bookworm", ("main", "contrib"), "/k.gpg"),
        ("http://security/", "bookworm-security", ("main",), "")]


def test_mirror_is_the_hosts_bookworm_main_archive(monkeypatch):
    monkeypatch.delenv("EDGECNN_DEBIAN_MIRROR", raising=False)
    sources = tools.parse_deb822_sources(DEB822)
    assert tools.debian_mirror("bookworm", sources) == "http://deb.debian.org/debian"
    with pytest.raises(ToolError, match="EDGECNN_DEBIAN_MIRROR"):
        tools.debian_mirror("trixie", sources)
    monkeypatch.setenv("EDGECNN_DEBIAN_MIRROR", "http://mirror.local/debian")
    assert tools.debian_mirror("trixie", sources) == "http://mirror.local/debian"


def test_missing_tools_name_the_apt_packages(monkeypatch):
    monkeypatch.setattr(tools.shutil, "which", lambda cmd: None)
    with pytest.raises(ToolError) as err:
        tools.require_tools()
    message = str(err.value)
    assert "apt-get install qemu-user gcc-aarch64-linux-gnu g++-aarch64-linux-gnu mmdebstrap gcc" in message
    assert "\n" not in message


def test_static_qemu_is_called_out(monkeypatch):
    monkeypatch.setattr(tools.shutil, "which", lambda cmd: "/usr/bin/x" if cmd == "qemu-aarch64-static" else None)
    with pytest.raises(ToolError, match="qemu-user-static is installed.*apt-get install qemu-user"):
        tools.require_tools(["qemu-aarch64"])


def test_status_and_views_in_an_empty_cache(monkeypatch, tmp_path):
    from edgecnn.emulate.environment import is_ready, require_environment, status

    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path))
    pieces = {p.name: p for p in status()}
    assert not pieces["sysroot"].ok and pieces["sysroot"].hint == "edgecnn emulator setup"
    assert not is_ready(list(pieces.values()))
    tvm = pieces["apache-tvm aarch64 runtime"]
    assert not tvm.required and not tvm.ok and tvm.hint == "edgecnn emulator setup --with-tvm"
    assert {"view a53", "view a72", "view a76"} <= set(pieces)
    with pytest.raises(ToolError, match="run `edgecnn emulator setup`"):
        sysroot.ensure_view(get_target("a72"))
    monkeypatch.setattr(tools.shutil, "which", lambda cmd: "/usr/bin/" + cmd)
    with pytest.raises(ToolError, match="no aarch64 sysroot yet: run `edgecnn emulator setup`"):
        require_environment(get_target("a72"))


def test_one_view_per_target(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path))
    root = sysroot.sysroot_path()
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / sysroot.MANIFEST).write_text('{"suite": "bookworm", "versions": {"python3.11": "3.11.2"}}')
    a53, a72 = get_target("a53"), get_target("a72")
    v53, v72 = sysroot.ensure_view(a53), sysroot.ensure_view(a72)
    assert v53 != v72 and (v53 / "usr").resolve() == (root / "usr").resolve()
    assert not (v53 / "tmp").exists() and not (v53 / "dev").exists()
    assert sysroot.view_cpu_part(a53) == "0xd03" and sysroot.view_cpu_part(a72) == "0xd08"
    before = (v72 / "proc" / "cpuinfo").stat().st_mtime_ns
    assert sysroot.ensure_view(a72) == v72 and (v72 / "proc" / "cpuinfo").stat().st_mtime_ns == before
    edited = dataclasses.replace(a72, cpu_part="0xd0c")
    sysroot.ensure_view(edited)
    assert sysroot.view_cpu_part(a72) == "0xd0c"  # a changed target file rebuilds its view
    site = tmp_path / "site"
    site.mkdir()
    assert not sysroot.view_is_current(a72, root, {"site": site})
    view = sysroot.ensure_view(a72, root, {"site": site, "guest": sysroot.GUEST_DIR})
    assert sysroot.guest_mount("site") == "/edgecnn/site"
    assert (view / "edgecnn" / "site").resolve() == site.resolve()
    assert (view / "edgecnn" / "guest" / "edgecnn_marker.py").is_file()


def test_cli_status_json_and_setup_errors(monkeypatch, tmp_path):
    import json

    from click.testing import CliRunner

    from edgecnn.cli import cli

    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path))
    result = CliRunner().invoke(cli, ["emulator", "status", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is False and {p["name"] for p in data["pieces"]} >= {"qemu-aarch64", "sysroot", "view a72"}
    monkeypatch.setattr(tools.shutil, "which", lambda cmd: None)
    result = CliRunner().invoke(cli, ["emulator", "setup", "--target", "a72"])
    assert isinstance(result.exception, ToolError) and "apt-get install qemu-user" in str(result.exception)
    result = CliRunner().invoke(cli, ["emulator", "setup", "--target", "host"])
    assert isinstance(result.exception, TargetError)
