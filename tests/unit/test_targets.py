"""Targets: every built-in file loads; the schema rejects bad files with the file and key named."""

import dataclasses
import re

import pytest

from edgecnn.errors import TargetError
from edgecnn.kinds import Backend
from edgecnn.targets import (COST_FEATURES, builtin_targets_dir, get_target, host_arch, host_target, list_targets,
                             load_target_file)

A72 = (builtin_targets_dir() / "a72.toml").read_text()


def test_builtin_targets_load_and_cover_the_boards():
    names = {t.name for t in list_targets()}
    assert {"a53", "a72", "a76", "jetson-nano", "jetson-orin", "host"} <= names
    for t in list_targets():
        assert t.backends and all(b in Backend.values() for b in t.backends)
        assert t.tvm["kind"] in {"llvm", "cuda"}
        if t.arch == "aarch64":
            assert t.qemu_cpu and t.cpu_part.startswith("0xd") and t.cross_compiler


def test_board_facts():
    a53, a72, a76 = get_target("a53"), get_target("a72"), get_target("a76")
    assert (a53.cpu_part, a72.cpu_part, a76.cpu_part) == ("0xd03", "0xd08", "0xd0b")
    assert "dotprod" not in a53.features and "dotprod" not in a72.features
    assert "dotprod" in a76.features and "+dotprod" in a76.tvm["mattr"]
    nano, orin = get_target("jetson-nano"), get_target("jetson-orin")
    assert nano.gpu.arch == "sm_53" and nano.tvm["arch"] == "sm_53" and nano.tvm["host"]["mtriple"] == "aarch64-linux-gnu"
    assert orin.gpu.arch == "sm_87" and orin.cores == 6


@pytest.mark.parametrize("alias", ["rpi4", "PI4", "cortex-a72", "a72"])
def test_lookup_by_alias_case_insensitive(alias):
    assert get_target(alias).name == "a72"


def test_host_is_resolved_to_this_machine():
    import os
    import platform

    host = get_target("host")
    assert host.arch == {"arm64": "aarch64", "amd64": "x86_64"}.get(platform.machine().lower(), platform.machine().lower())
    assert host.cores == os.cpu_count()
    assert host.tvm["num-cores"] == host.cores


def test_unknown_target_lists_known_ones():
    with pytest.raises(TargetError, match="unknown target 'pi9'.*a72"):
        get_target("pi9")


def test_cost_model_and_caches_of_the_pi_targets():
    cost = get_target("a72").cost
    assert cost is not None and cost.runtime == "ncnn" and "benchncnn" in cost.reference
    assert 0 < cost.median_error <= cost.worst_error < 1
    assert set(cost.weights_ns) <= set(COST_FEATURES) and all(w >= 0 for w in cost.weights_ns.values())
    assert any(w > 0 for w in cost.weights_ns.values())
    assert get_target("a72").cache.l1 == (32768, 2) and get_target("a72").cache.l2 == (1 << 20, 16)
    assert get_target("a53").cache.l2 == (512 << 10, 16)
    assert get_target("host").cost is None and get_target("host").cache is None  # measured, nothing to predict


def test_user_file_by_path(tmp_path):
    f = tmp_path / "myboard.toml"
    f.write_text(A72.replace('name = "a72"', 'name = "myboard"').replace("aliases = [", "aliases = [\"mine\", "))
    t = get_target(str(f))
    assert t.name == "myboard" and t.cores == 4 and "mine" in t.aliases


@pytest.mark.parametrize("edit, message", [
    (lambda s: 'colour = "red"\n' + s, "unknown key 'colour'"),
    (lambda s: s.replace("cores = 4\n", 'cores = "four"\n', 1), "key 'cores' must be an integer"),
    (lambda s: s.replace("cores = 4\n", "cores = true\n", 1), "key 'cores' must be an integer"),
    (lambda s: s.replace('cpu = "cortex-a72"\n', "", 1), "missing required key 'cpu'"),
    (lambda s: s.replace('backends = ["tflite", "onnx", "tvm", "ncnn"]', 'backends = ["tflite", "coreml"]'), "unknown backend 'coreml'"),
    (lambda s: s.replace('backends = ["tflite", "onnx", "tvm", "ncnn"]', 'runtimes = ["coreml"]'), "unknown backend 'coreml' in 'runtimes'"),
    (lambda s: s.replace('backends = ["tflite", "onnx", "tvm", "ncnn"]', "backends = []"), "'backends' must name at least one"),
    (lambda s: s.replace('backends = ["tflite", "onnx", "tvm", "ncnn"]\n', ""), "missing required key 'backends'"),
    (lambda s: s.replace('backends = ["tflite", "onnx", "tvm", "ncnn"]', 'backends = ["tflite"]\nruntimes = ["tflite"]'),
     "give 'backends' only"),
    (lambda s: s.replace('mcpu = "cortex-a72"', "mcpu = 72"), r"\[tvm\]: key 'mcpu' must be a string"),
    (lambda s: s.replace('mattr = ["+neon"]', 'mattr = "+neon"'), r"\[tvm\]: key 'mattr' must be a list of strings"),
    (lambda s: s.replace("num-cores = 4", 'num-cores = "4"'), r"\[tvm\]: key 'num-cores' must be an integer"),
    (lambda s: s.replace("num-cores = 4", "num-cores = 0"), r"\[tvm\]: 'num-cores' must be at least 1"),
    (lambda s: s.replace('mtriple = "aarch64-linux-gnu"', "mtriple = true"), r"\[tvm\]: key 'mtriple' must be a string"),
    (lambda s: s.replace('arch = "aarch64"', 'arch = "riscv"'), "key 'arch' must be one of"),
    (lambda s: s.replace('features = ["neon", "crc"]', "features = [1, 2]"), "key 'features' must be a list of strings"),
    (lambda s: s.replace('kind = "llvm"\n', ""), "table 'tvm' needs a 'kind'"),
    (lambda s: s + "[gpu]\nname = \"x\"\n", r"\[gpu\]: missing required key 'arch'"),
    (lambda s: s + "name = \n", "not valid TOML"),
    (lambda s: s.replace("[cost.weights_ns]\n", "[cost.weights_ns]\nturbo = 1.0\n"), "unknown feature 'turbo'"),
    (lambda s: re.sub(r"(?m)^futex = .*$", "futex = -1.0", s), "must be a number >= 0"),
    (lambda s: s.replace('runtime = "ncnn"\n', ""), r"\[cost\]: missing required key 'runtime'"),
    (lambda s: s.replace("l1 = [32768, 2]", "l1 = [30000, 2]"), r"\[cache\]: 'l1' must be \[bytes, ways\]"),
    (lambda s: s.replace("l2 = [1048576, 16]", 'l2 = "1M"'), r"\[cache\]: 'l2' must be"),
])
def test_schema_errors_name_file_and_key(tmp_path, edit, message):
    f = tmp_path / "bad.toml"
    f.write_text(edit(A72))
    with pytest.raises(TargetError, match=message) as e:
        load_target_file(f)
    assert str(f) in str(e.value)


def test_file_that_is_not_utf8_is_named(tmp_path):
    f = tmp_path / "latin1.toml"
    f.write_bytes(A72.replace('description = "', 'description = "caf\xe9 ').encode("latin-1"))
    with pytest.raises(TargetError, match="not UTF-8") as e:
        get_target(str(f))
    assert str(f) in str(e.value)


def test_duplicate_alias_across_files_is_an_error(tmp_path):
    (tmp_path / "a72.toml").write_text(A72)
    (tmp_path / "copy.toml").write_text(A72.replace('name = "a72"', 'name = "copy"'))
    with pytest.raises(TargetError, match="also used by"):
        list_targets(tmp_path)


def test_missing_file():
    with pytest.raises(TargetError, match="target file not found"):
        get_target("/nonexistent/board.toml")


def test_backends_key_and_its_old_name_load_alike(tmp_path):
    new = tmp_path / "new.toml"
    new.write_text(A72.replace('name = "a72"', 'name = "new"').replace('backends = ["tflite", "onnx", "tvm", "ncnn"]',
                                                                     'backends = ["onnx", "tflite"]'))
    old = tmp_path / "old.toml"
    old.write_text(new.read_text().replace("backends = [", "runtimes = [").replace('name = "new"', 'name = "old"'))
    assert load_target_file(new).backends == load_target_file(old).backends == [Backend.ONNX, Backend.TFLITE]
    assert "runtimes" not in load_target_file(old).to_dict()


def test_tvm_host_table_is_checked_at_load(tmp_path):
    nano = (builtin_targets_dir() / "jetson-nano.toml").read_text()
    f = tmp_path / "nano.toml"
    f.write_text(nano.replace('name = "jetson-nano"', 'name = "n"').replace("num-cores = 4", "num-cores = [4]"))
    with pytest.raises(TargetError, match=r"\[tvm.host\]: key 'num-cores' must be an integer") as e:
        load_target_file(f)
    assert str(f) in str(e.value)
    f.write_text(nano.replace('kind = "llvm"\n', ""))
    with pytest.raises(TargetError, match="table 'tvm.host' needs a 'kind'"):
        load_target_file(f)


def test_native_and_emulated_are_decided_by_the_target():
    host, a72 = get_target("host"), get_target("a72")
    assert host.arch == host_arch() and host.runs_natively and not host.can_emulate
    assert a72.can_emulate and a72.require_emulation() is a72 and a72.runs_natively == (host_arch() == "aarch64")
    with pytest.raises(TargetError, match="host cannot be emulated"):
        host.require_emulation()
    assert "cpu_part" in dataclasses.replace(a72, cpu_part="").emulation_problem()
    assert host_target() is host_target() and host_target().name == "host"
