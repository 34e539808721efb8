"""A build that uses an instruction the target's core lacks must fail as it would on
the board: SDOT (ARMv8.2 dot product) runs on cortex-a76 and dies on cortex-a53."""

import shutil
import subprocess

import pytest

from edgecnn.emulate import run_guest
from edgecnn.errors import ToolError

pytestmark = pytest.mark.emulated

SDOT_C = r"""
#include <stdio.h>
int main(void) {
    __attribute__((aligned(16))) signed char a[16], b[16];
    __attribute__((aligned(16))) int acc[4] = {0, 0, 0, 0};
    for (int i = 0; i < 16; i++) { a[i] = (signed char)(i + 1); b[i] = 2; }
    __asm__ volatile("ld1 {v0.16b}, [%[a]]\n ld1 {v1.16b}, [%[b]]\n ld1 {v2.4s}, [%[acc]]\n"
                     "sdot v2.4s, v0.16b, v1.16b\n st1 {v2.4s}, [%[acc]]\n"
                     : : [a] "r"(a), [b] "r"(b), [acc] "r"(acc) : "v0", "v1", "v2", "memory");
    printf("%d %d %d %d\n", acc[0], acc[1], acc[2], acc[3]);
    return 0;
}
"""


@pytest.fixture(scope="module")
def sdot_binary(tmp_path_factory):
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.fail("aarch64-linux-gnu-gcc missing: apt-get install gcc-aarch64-linux-gnu", pytrace=False)
    work = tmp_path_factory.mktemp("sdot")
    (work / "sdot.c").write_text(SDOT_C)
    subprocess.run(["aarch64-linux-gnu-gcc", "-O1", "-march=armv8.2-a+dotprod", "-o", str(work / "sdot"),
                    str(work / "sdot.c")], check=True, capture_output=True)
    return work / "sdot"


def test_dotprod_runs_on_cortex_a76(emulator, sdot_binary):
    # acc[k] = 2 * (4k+1 + 4k+2 + 4k+3 + 4k+4)
    assert run_guest("a76", sdot_binary).stdout.split() == ["20", "52", "84", "116"]


def test_dotprod_on_cortex_a53_is_an_illegal_instruction(emulator, sdot_binary, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ToolError) as err:
        run_guest("a53", sdot_binary)
    assert str(err.value) == "illegal instruction on cortex-a53 running sdot"
    assert list(tmp_path.iterdir()) == []  # no qemu core file in the current directory
    assert run_guest("a53", sdot_binary, check=False).returncode == -4
