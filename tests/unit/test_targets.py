"""Targets: every built-in file loads; the schema rejects bad files with the file and key named."""

import pytest

from edgecnn.errors import TargetError
from edgecnn.targets import Runtime, builtin_targets_dir, get_target, list_targets, load_target_file

A72 = (builtin_targets_dir() / "a72.toml").read_text()


def test_builtin_targets_load_and_cover_the_boards():
    names = {t.name for t in list_targets()}
    assert {"a53", "a72", "a76", "jetson-nano", "jetson-orin", "host"} <= names
    for t in list_targets():
        assert t.runtimes and all(r in {x.value for x in Runtime} for r in t.runtimes)
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


def test_cost_model_of_the_pi_targets():
    for name in ("a53", "a72", "a76"):
        cost = get_target(name).cost
        assert cost is not None and 0 < cost.ns_per_instruction < 1 and "MobileNetV2" in cost.reference
    assert get_target("host").cost is None  # measured for real, nothing to predict


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
    (lambda s: s.replace('runtimes = ["tflite", "onnx", "tvm"]', 'runtimes = ["tflite", "coreml"]'), "unknown runtime 'coreml'"),
    (lambda s: s.replace('arch = "aarch64"', 'arch = "riscv"'), "key 'arch' must be one of"),
    (lambda s: s.replace('features = ["neon", "crc"]', "features = [1, 2]"), "key 'features' must be a list of strings"),
    (lambda s: s.replace('kind = "llvm"\n', ""), "table 'tvm' needs a 'kind'"),
    (lambda s: s + "[gpu]\nname = \"x\"\n", r"\[gpu\]: missing required key 'arch'"),
    (lambda s: s + "name = \n", "not valid TOML"),
    (lambda s: s.replace("ns_per_instruction = 0.5042", 'ns_per_instruction = "fast"'),
     r"\[cost\]: key 'ns_per_instruction' must be a number"),
    (lambda s: s.replace("ns_per_instruction = 0.5042", "ns_per_instruction = -1.0"), "must be positive"),
])
def test_schema_errors_name_file_and_key(tmp_path, edit, message):
    f = tmp_path / "bad.toml"
    f.write_text(edit(A72))
    with pytest.raises(TargetError, match=message) as e:
        load_target_file(f)
    assert str(f) in str(e.value)


def test_duplicate_alias_across_files_is_an_error(tmp_path):
    (tmp_path / "a72.toml").write_text(A72)
    (tmp_path / "copy.toml").write_text(A72.replace('name = "a72"', 'name = "copy"'))
    with pytest.raises(TargetError, match="also used by"):
        list_targets(tmp_path)


def test_missing_file():
    with pytest.raises(TargetError, match="target file not found"):
        get_target("/nonexistent/board.toml")
