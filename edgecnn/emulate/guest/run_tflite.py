"""Guest side: run a .tflite model once with ai-edge-litert and count the invoke.

Runs inside the aarch64 guest (numpy + ai-edge-litert only). Usage:
    run_tflite.py MODEL OUT.npz WARMUP INPUT.npy [INPUT.npy ...]
Warm-up invokes run before the counted one, so one-off work (XNNPACK weight
packing on the first invoke) stays out of the figure. One thread: the count is
the calling thread's, and worker threads would make it depend on scheduling.
Exit 2 with "edgecnn-guest-error: ..." on stderr for input the user can fix.
"""

import sys

import numpy as np

import edgecnn_marker


def fail(message):
    print(f"edgecnn-guest-error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv):
    model, out, warmup, inputs = argv[0], argv[1], int(argv[2]), argv[3:]
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=model, num_threads=1)
    interp.allocate_tensors()
    details = interp.get_input_details()
    if len(inputs) != len(details):
        fail(f"the model has {len(details)} input(s), got {len(inputs)} .npy file(s)")
    for path, det in zip(inputs, details):
        data = np.load(path, allow_pickle=False)
        wanted = tuple(int(d) for d in det["shape"])
        if tuple(data.shape) != wanted or data.dtype != det["dtype"]:
            fail(f"{path}: shape {tuple(data.shape)} {data.dtype}, the model wants {wanted} {np.dtype(det['dtype'])}")
        interp.set_tensor(det["index"], data)
    for _ in range(warmup):
        interp.invoke()
    edgecnn_marker.start()
    interp.invoke()
    edgecnn_marker.stop()
    outputs = [interp.get_tensor(d["index"]) for d in interp.get_output_details()]
    np.savez(out, *outputs)


if __name__ == "__main__":
    main(sys.argv[1:])
