"""Guest side: run a bundle with the board runner's own Session and count each inference.

Runs inside the aarch64 guest with numpy, the bundle's runtime and edgecnn's
package on PYTHONPATH (edgecnn.runner.sessions and edgecnn.artifacts: standard
library and numpy only at import). Usage:
    run_bundle.py BUNDLE OUT.npz WARMUP INPUT.npy [INPUT.npy ...]
Each INPUT.npy is one inference (the model's only input, float or already in its
integer type). WARMUP invokes on the first input run before anything is counted
(XNNPACK packs weights on the first invoke). Then each input is fed, and only its
invoke() runs between the markers: one counted region per input. One thread (the
count is the calling thread's) unless EDGECNN_THREADS says more (profile runs,
where the plugin reports every thread). Exit 2 with "edgecnn-guest-error: Kind: message"
on stderr for a problem the user can fix.
"""

import os
import sys

import numpy as np

import edgecnn_marker


def fail(kind, message):
    print(f"edgecnn-guest-error: {kind}: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv):
    from edgecnn.artifacts import load_bundle
    from edgecnn.errors import EdgecnnError
    from edgecnn.runner.sessions import open_session

    bundle, out, warmup, inputs = argv[0], argv[1], int(argv[2]), argv[3:]
    outputs = {}
    try:
        session = open_session(load_bundle(bundle), threads=int(os.environ.get("EDGECNN_THREADS", "1")))
        arrays = [np.load(p, allow_pickle=False) for p in inputs]
        session.feed(arrays[0])
        edgecnn_marker.warm()  # profile runs (start=warm) are instrumented from here, not from start-up
        for _ in range(warmup):
            session.invoke()
        for i, x in enumerate(arrays):
            session.feed(x)
            edgecnn_marker.start()
            session.invoke()
            edgecnn_marker.stop()
            for k, y in enumerate(session.fetch()):
                outputs[f"{i}_{k}"] = y
    except EdgecnnError as e:
        fail(type(e).__name__, e)
    np.savez(out, **outputs)


if __name__ == "__main__":
    main(sys.argv[1:])
