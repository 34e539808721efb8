"""The optional TVM runtime: a Relax module cross-compiled on the host runs in the
guest through tvm.runtime.vm, with the compiler library deleted (TVM_USE_RUNTIME_LIB=1)."""

import numpy as np
import pytest

from edgecnn.emulate import run_python, setup
from edgecnn.emulate.environment import require_environment
from edgecnn.targets import get_target

pytestmark = pytest.mark.emulated

RUN = """
import sys
import numpy as np
import tvm.runtime, tvm.runtime.vm
vm = tvm.runtime.vm.VirtualMachine(tvm.runtime.load_module(sys.argv[1]), tvm.runtime.cpu())
x, w = np.load(sys.argv[2]), np.load(sys.argv[3])
np.save(sys.argv[4], vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy())
"""


@pytest.fixture(scope="module")
def tvm_runtime(emulator):
    setup("a72", with_tvm=True, log=lambda msg: None)
    ready = require_environment(get_target("a72"))
    assert ready.tvm is not None and not (ready.tvm / "tvm" / "lib" / "libtvm_compiler.so").exists()
    return ready.tvm


def test_cross_compiled_relax_module_runs_in_the_guest(tvm_runtime, tmp_path):
    import tvm
    from tvm.script import relax as R

    @tvm.script.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 64), "float32"), w: R.Tensor((64, 8), "float32")):
            with R.dataflow():
                y = R.nn.relu(R.matmul(x, w))
                R.output(y)
            return y

    t = get_target("a72")
    lib = tmp_path / "m.so"
    tvm.compile(Module, tvm.target.Target(t.tvm)).export_library(
        str(lib), fcompile=tvm.support.cc.cross_compiler(t.cross_compiler))
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 64), dtype=np.float32), rng.standard_normal((64, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    (tmp_path / "run.py").write_text(RUN)
    args = [str(lib), str(tmp_path / "x.npy"), str(tmp_path / "w.npy"), str(tmp_path / "y.npy")]
    run_python(t, tmp_path / "run.py", args)
    assert np.allclose(np.load(tmp_path / "y.npy"), np.maximum(x @ w, 0), atol=1e-4)
