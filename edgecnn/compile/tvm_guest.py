"""Runs inside the aarch64 guest (qemu-user): a TVM bundle's library on a batch of images.

    python3.11 tvm_guest.py model.so images.npy outputs.npz

numpy and the TVM runtime only (TVM_USE_RUNTIME_LIB=1: no compiler library in
the guest). One image per call, as the board's runner does; outputs are saved
in order as arr_0, arr_1, ...
"""

import sys

import numpy as np
import tvm.runtime
import tvm.runtime.vm


def main(lib: str, images: str, out: str) -> None:
    vm = tvm.runtime.vm.VirtualMachine(tvm.runtime.load_module(lib), tvm.runtime.cpu())
    batch = np.load(images)
    results = []
    for i in range(len(batch)):
        y = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(batch[i:i + 1])))
        outs = [y] if hasattr(y, "numpy") else list(y)
        results.append([o.numpy() for o in outs])
    np.savez(out, *[np.concatenate([r[k] for r in results]) for k in range(len(results[0]))])


if __name__ == "__main__":
    main(*sys.argv[1:4])
