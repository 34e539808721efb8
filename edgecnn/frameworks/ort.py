"""onnxruntime on the PC side: one way to open an .onnx (bytes or path) and run it on a batch.

Host checks run on CPUExecutionProvider with one inter-op thread, so a figure
depends on the model and the thread count alone. QDQ models take and give
floats, so nothing is (de)quantized here; a model with a fixed batch of one
is fed image by image with the runner's own loop (edgecnn.runner.tensors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgecnn.errors import ModelError

QUIET = 3  # onnxruntime's ERROR severity: its warnings about unused initializers are noise on every load

# A model's own word on the graph optimisers it runs faster without (edgecnn.quantize.onnx's speed check writes
# it): a comma-separated list in the model's metadata_props, honoured by every session edgecnn opens and copied
# into a bundle's backend options for the runner.
DISABLED_OPTIMIZERS_KEY = "edgecnn.onnxruntime.disabled_optimizers"


def disabled_optimizers(model: bytes | Path | str) -> list[str]:
    """The onnxruntime optimisers the model asks to run without (DISABLED_OPTIMIZERS_KEY); [] when none."""
    import onnx

    try:
        proto = (onnx.load_from_string(bytes(model)) if isinstance(model, (bytes, bytearray))
                 else onnx.load(str(model), load_external_data=False))
    except Exception:  # noqa: BLE001 - not a readable ONNX file: the session's own load says why
        return []
    return _names({p.key: p.value for p in proto.metadata_props})


def _names(metadata: dict[str, str]) -> list[str]:
    return [name for name in metadata.get(DISABLED_OPTIMIZERS_KEY, "").split(",") if name]


def session(model: bytes | Path | str, threads: int = 1, disabled: list[str] | None = None):
    """An InferenceSession on the CPU provider; ModelError for a model onnxruntime cannot load.

    disabled: graph optimisers to leave out; None means what the model itself asks for (read from the loaded
    session's metadata, so a model that asks for nothing is read once; one that asks is loaded again without them).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = QUIET
    source = model if isinstance(model, (bytes, bytearray)) else str(model)
    try:
        sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=disabled or [])
        asked = _names(sess.get_modelmeta().custom_metadata_map) if disabled is None else []
        if asked:
            sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"], disabled_optimizers=asked)
        return sess
    except _load_errors() as e:
        raise ModelError(f"onnxruntime cannot load the model: {str(e).splitlines()[0]}") from None


def _load_errors() -> tuple[type[BaseException], ...]:
    # onnxruntime's own errors (InvalidProtobuf, Fail, InvalidGraph, ...) derive from Exception, not RuntimeError.
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    own = tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))
    return own + (RuntimeError, ValueError)


def predictor(model: bytes | Path | str, threads: int = 1,
              layout: str = "NHWC") -> Callable[[np.ndarray], list[np.ndarray]]:
    """batch (N, H, W, 3) float32 images -> list of float32 outputs; in one call where the batch is free.

    layout: the model's input layout; an NCHW model gets the images transposed, as the runner does.
    """
    from edgecnn.runner.tensors import per_image, to_layout

    sess = session(model, threads)
    name = sess.get_inputs()[0].name
    fixed_batch = isinstance(sess.get_inputs()[0].shape[0], int)

    def run(batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(to_layout(np.asarray(batch, np.float32), layout))
        if not fixed_batch:
            return [np.asarray(o, np.float32) for o in sess.run(None, {name: batch})]
        return [o.astype(np.float32) for o in per_image(lambda x: sess.run(None, {name: x}), batch)]

    return run


def output_names(model: bytes | Path | str) -> list[str]:
    """The model's output names, in output order."""
    return [o.name for o in session(model).get_outputs()]


# What onnxruntime's CPU provider turns a QDQ node unit into when it fuses it: the op then runs in integers.
# A unit it leaves alone runs as the float op between DequantizeLinear/QuantizeLinear (or inside a float
# FusedConv / NCHWc Conv), which is why the quantized ops are counted rather than the float ones.
INTEGER_FORMS = {
    "Conv": ("QLinearConv", "ConvInteger"),
    "Add": ("QLinearAdd",),
    "Mul": ("QLinearMul",),
    "MatMul": ("QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat"),
    "Gemm": ("QGemm",),
}


def _meant_integer(model) -> dict[str, int]:
    """Per op type: the nodes whose data inputs all come from DequantizeLinear, i.e. that the quantizer made int8.

    A node kept in float on purpose (nodes_to_exclude) reads a float weight, so it is not counted.
    """
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    counts = dict.fromkeys(INTEGER_FORMS, 0)
    for node in model.graph.node:
        if node.op_type in counts and node.domain in ("", "ai.onnx"):
            data = [i for i in node.input[:2] if i]  # Conv/Gemm's bias (third input) does not decide it
            if data and all(i in dq_outputs for i in data):
                counts[node.op_type] += 1
    return counts


def float_ops_after_optimisation(model_path: Path | str, work: Path | str | None = None,
                                 int8_allowed: bool | None = None) -> dict[str, tuple[int, int]]:
    """Per op type of a QDQ model: (nodes onnxruntime still runs in float, nodes the quantizer made int8),
    after onnxruntime's graph optimisation on this machine's CPU provider at ORT_ENABLE_ALL, the level
    every edgecnn session runs at, without the optimisers the model asks to run without.

    Only op types the model quantizes appear. `int8_allowed` overrides onnxruntime's own choice of fusing
    QDQ units with signed int8 activations (session.qdqisint8allowed; its default is on for ARM, off for
    x86), so an x86 machine can show which units an ARM onnxruntime fuses. The optimised model is written
    into `work` (a temporary folder when None). ModelError when onnxruntime cannot load the model.
    """
    import tempfile

    import onnx
    import onnxruntime as ort

    model_path = Path(model_path)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        optimised = Path(tmp) / "optimised.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(optimised)
        opts.log_severity_level = QUIET  # it warns that an ENABLE_ALL model is tied to this machine: known
        if int8_allowed is not None:
            opts.add_session_config_entry("session.qdqisint8allowed", "1" if int8_allowed else "0")
        try:
            ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=disabled_optimizers(model_path))
        except _load_errors() as e:
            raise ModelError(f"onnxruntime cannot load {model_path.name}: {str(e).splitlines()[0]}") from None
        nodes = onnx.load(str(optimised), load_external_data=False).graph.node
    meant = {op: n for op, n in _meant_integer(onnx.load(str(model_path), load_external_data=False)).items() if n}
    fused = {op: sum(1 for n in nodes if n.op_type in INTEGER_FORMS[op]) for op in meant}
    return {op: (max(0, total - fused[op]), total) for op, total in meant.items()}


def describe_float_ops(counts: dict[str, tuple[int, int]]) -> str | None:
    """'3 of 52 Conv and 10 of 10 Add' for the op types with any node left in float; None when none is."""
    left = [f"{n} of {total} {op}" for op, (n, total) in counts.items() if n]
    if not left:
        return None
    return ", ".join(left[:-1]) + (" and " if len(left) > 1 else "") + left[-1]
