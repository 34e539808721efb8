"""ONNX backend: QDQ static quantization with onnxruntime.quantization.

Keras models are exported with tf2onnx first (checked with TF 2.21 / Keras 3 /
protobuf 7 here); .onnx files are taken as they are. onnxruntime's recipe is
followed: quant_pre_process (shape inference and graph optimisation), then
quantize_static in QDQ format, symmetric int8 weights (per channel by default)
and 8-bit activations whose signedness suits the target CPU (quant_types), with
MinMax, Entropy or Percentile calibration. The calibration ranges are cached in
the work folder, so fallback search calibrates once. fused_warning says which
quantized ops onnxruntime's CPU provider would still run in float. Per-layer
sensitivity uses onnxruntime's qdq_loss_debug tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecnn.errors import EdgecnnError
from edgecnn.frameworks.tf import onnx_float
from edgecnn.kinds import Arch
from edgecnn.quantize.calibration import CalibrationData

SUFFIX = ".onnx"


def export_float(model, work: Path) -> Path:
    """Keras -> ONNX (NHWC input named 'input', batch dimension free) as work/float.onnx; returns the file."""
    return onnx_float(model, work / "float.onnx")


def input_name(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in weights][0]


# Per-channel QDQ (DequantizeLinear's axis) exists from opset 13: older exports (Paddle's opset 11/12) are
# lifted to it with onnx's own version converter before onnxruntime quantizes them.
MIN_QDQ_OPSET = 13


def preprocess(float_path: Path, work: Path) -> Path:
    """onnxruntime's quant_pre_process (symbolic shape inference plus graph optimisation), at opset >= 13."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(float_path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_QDQ_OPSET)
    if opset < MIN_QDQ_OPSET:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, MIN_QDQ_OPSET)
        except Exception as e:  # noqa: BLE001 - the converter raises plain RuntimeErrors/ValueErrors per op
            raise EdgecnnError(f"{float_path.name} is opset {opset}; int8 QDQ needs opset {MIN_QDQ_OPSET} and onnx's "
                               f"version converter cannot lift it ({str(e).splitlines()[0][:120]}): re-export "
                               f"it at opset {MIN_QDQ_OPSET} or newer") from None
        float_path = work / "float-opset13.onnx"
        onnx.save(model, str(float_path))
    out = work / "float-pre.onnx"
    quant_pre_process(str(float_path), str(out))
    return out


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


@dataclass(frozen=True)
class QuantTypes:
    """The 8-bit types of one QDQ quantization, spelled as reports and manifests give them."""

    activations: str  # "uint8" | "int8"
    weights: str  # "int8"
    reduce_range: bool  # 7-bit weights, against U8S8 saturation on x86 without VNNI
    arch: str  # the CPU architecture they were chosen for

    def settings(self) -> dict:
        """What QuantizeResult.settings (and so the manifest's verification.quantization) records."""
        return {"arch": self.arch, "activation_type": self.activations, "weight_type": self.weights,
                "reduce_range": self.reduce_range}


# Activation/weight signedness per architecture. onnxruntime's CPU provider fuses a QDQ unit into its
# integer kernel (QLinearConv, QLinearAdd, ...) only for the types it has fast kernels for there.
# - x86_64: U8S8. Measured with onnxruntime 1.32 on the demo mobilenet_v2: signed activations leave 15 of
#   52 Conv and all 10 Add in float between DequantizeLinear/QuantizeLinear (its QDQ fusion refuses int8
#   activations on x86: session.qdqisint8allowed defaults to off there); with uint8 activations all fuse.
#   quantize_static's own guidance ("Choosing parameters for CPU inference") says the same: QUInt8
#   activations and QInt8 weights on x86/x64, with reduce_range only without VNNI.
# - aarch64: S8S8. The same guidance: "ARM cores generally handle symmetric QInt8 activations well. Use
#   activation_type=QuantType.QInt8 and weight_type=QuantType.QInt8 with reduce_range=False"; and the
#   quantization guide (onnxruntime.ai/docs/performance/model-optimizations/quantization.html, "Data type
#   selection") calls S8S8 with QDQ the default and first choice, the U8S8 saturation issue absent on ARM.
# - anything else: onnxruntime's default, S8S8.
_TYPES = {Arch.X86_64.value: ("uint8", "int8"), Arch.AARCH64.value: ("int8", "int8")}
_DEFAULT_TYPES = ("int8", "int8")


def quant_types(arch: str | None = None, vnni: bool | None = None) -> QuantTypes:
    """The types to quantize for `arch` (None or "native": this machine's).

    reduce_range is set for x86_64 without VNNI only: there VPMADDUBSW adds two uint8 x int8 products in
    16 bits and can saturate, which 7-bit weights rule out (onnxruntime's guide, "When to use
    reduce-range"); with VNNI, or on ARM, it would only cost weight precision. `vnni`: whether the CPU
    has VNNI; None asks this machine when it is the x86_64 one, and assumes not on any other.
    """
    from edgecnn.targets import host_arch

    arch = host_arch() if arch in (None, Arch.NATIVE.value) else arch
    activations, weights = _TYPES.get(arch, _DEFAULT_TYPES)
    if vnni is None:
        vnni = arch == host_arch() and _host_has_vnni()
    reduce_range = arch == Arch.X86_64.value and activations == "uint8" and not vnni
    return QuantTypes(activations, weights, reduce_range, arch)


def _host_has_vnni() -> bool:
    """True when this CPU has AVX512-VNNI or AVX-VNNI; False where it cannot tell."""
    from edgecnn.targets import host_int8_dot

    return host_int8_dot() in ("avx512_vnni", "avx_vnni")


# Ops with weights: where a model's learned part ends, going back from its outputs.
_WEIGHTED = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def output_tail(path: Path) -> list[str]:
    """Names of the nodes between the graph outputs and the last weighted op on each path back from them.

    In an anchor-free YOLO export that tail is the decode: box arithmetic, sigmoid scores and the final
    Concat of boxes in pixels with scores in 0..1, where one int8 scale for the mixed tensor (0..320 beside
    0..1) rounds every score to zero (nudenet's YOLOv8n: mAP@0.5:0.95 0.393 fp32 -> 0.000 int8; 0.381 with
    the tail in float). It has no weights, so keeping it in float costs little; the layers before it are int8.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    tail: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen or node.op_type in _WEIGHTED:
            continue
        seen.add(node.name)
        tail.append(node.name)
        stack.extend(node.input)
    return tail


def quantize(pre_path: Path, calib: CalibrationData, work: Path, per_channel: bool = True,
             method: str = "minmax", float_layers: Sequence[str] = (), types: QuantTypes | None = None,
             float_tail: bool = False) -> Path:
    """QDQ int8 model; float_layers are node names left unquantized, and with float_tail the output_tail too
    (anchor-free YOLO heads); types default to this machine's (quant_types()). Returns the written file."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    types = types or quant_types()
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    tag = f"{types.activations[0]}{types.weights[0]}{'r' if types.reduce_range else ''}"
    out = work / f"int8-{tag}-{len(float_layers)}{'-tail' if float_tail else ''}.onnx"
    excluded = sorted({*float_layers, *(output_tail(pre_path) if float_tail else ())})
    # The cached ranges are float min/max per tensor, the same whatever 8-bit types they are mapped to.
    cache = work / f"calibration-{method}-{'pc' if per_channel else 'pt'}.json"
    reader = None if cache.is_file() else calib.ort_reader()
    quantize_static(str(pre_path), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    reduce_range=types.reduce_range,
                    activation_type=qtype[types.activations], weight_type=qtype[types.weights],
                    nodes_to_exclude=excluded or None,
                    calibrate_method=_method(method),
                    calibration_cache_path=str(cache),
                    # Symmetric int8 weights (zero point 0) are what the int8 kernels of onnxruntime's MLAS
                    # (and TFLite) expect; activations keep a zero point, so a ReLU output uses all 256 steps.
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                   **({"CalibStridedMinMax": calib.calibration_stride()} if method == "minmax"
                                      else {})})
    return out


def fused_warning(qdq_path: Path, types: QuantTypes, work: Path) -> str | None:
    """A warning naming the quantized ops onnxruntime's CPU provider would still run in float; None when all fuse.

    Checked on this machine after onnxruntime's graph optimisation. For another architecture only its
    QDQ fusion rule for signed activations is carried over (session.qdqisint8allowed: on for ARM), so
    the check says what that rule leaves, not what the board's kernels do.
    """
    from edgecnn.frameworks.ort import describe_float_ops, float_ops_after_optimisation
    from edgecnn.targets import host_arch

    here = types.arch == host_arch()
    counts = float_ops_after_optimisation(qdq_path, work, int8_allowed=None if here else
                                          _INT8_QDQ_FUSED.get(types.arch))
    left = describe_float_ops(counts)
    if left is None:
        return None
    where = "on this machine" if here else f"for {types.arch} (its QDQ fusion rule, checked on this machine)"
    return (f"onnxruntime's CPU provider runs {left} of the int8 model in float {where} "
            f"(DequantizeLinear/QuantizeLinear around them; {types.activations} activations, {types.weights} "
            "weights): those layers gain nothing from int8 and the model may be slower than fp32")


# onnxruntime's default for session.qdqisint8allowed per architecture (fuse QDQ units with int8 activations).
_INT8_QDQ_FUSED = {Arch.AARCH64.value: True, Arch.X86_64.value: False}


# Latency-checked float prefix. onnxruntime's int8 convolutions (MLAS) are slow where channels are few: on
# this project's x86 machine the demo MobileNetV1's stem (3 -> 8 channels) took 2.6x its fp32 NCHWc time and
# the first depthwise (8 channels) 3x, so the all-int8 model was slower than fp32 (int8/fp32 1.05); with its
# first two convolutions in float it was 0.69. How many leading layers pay off differs per model (MobileNetV2:
# three, 0.86 -> 0.68; YOLO-Lite: none, where a float stem leaves a uint8 MaxPool in NCHW, a slow kernel), so
# it is measured, not guessed: each candidate prefix is quantized and timed against the all-int8 model.
#
# onnxruntime's QDQ propagation moves a QuantizeLinear up through value-preserving ops such as MaxPool. At the
# end of a float prefix that hoists the quantization above the prefix's last pooling: YOLO-Lite's first MaxPool
# then ran on uint8 in NCHW (4.5 ms, against 0.2 ms in float NCHWc) and its one-convolution prefix took 1.41x
# the fp32 time; without the pass the same file took 0.81x. So each form is also timed without it, and a form
# chosen that way says so in its own metadata (frameworks.ort.DISABLED_OPTIMIZERS_KEY), which every session
# edgecnn opens, and the runner through the bundle's backend options, honours.
FLOAT_PREFIX_CANDIDATES = 4  # prefixes of 1..4 convolutions
UNPROPAGATED = ["QDQPropagationTransformer"]
PREFIX_GAIN = 0.95  # a float prefix is kept only when it makes the model at least 5% faster
PREFIX_ROUNDS, PREFIX_RUNS = 15, 10  # interleaved rounds, invokes per model per round


def float_prefixes(pre_path: Path, most: int = FLOAT_PREFIX_CANDIDATES) -> list[list[str]]:
    """Candidate float prefixes: for k = 1..most, the node names before the (k+1)-th Conv (graph order is
    topological), so each prefix ends where an int8 convolution starts; at least one Conv stays int8."""
    import onnx

    nodes = onnx.load(str(pre_path), load_external_data=False).graph.node
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    return [[n.name for n in nodes[:convs[k]]] for k in range(1, min(most + 1, len(convs)))]


def with_disabled_optimizers(model: bytes, names: Sequence[str]) -> bytes:
    """The model with its list of onnxruntime optimisers to run without set to `names` (none: the entry removed)."""
    import onnx

    from edgecnn.frameworks.ort import DISABLED_OPTIMIZERS_KEY

    proto = onnx.load_from_string(model)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != DISABLED_OPTIMIZERS_KEY]
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, dict(kept, **({DISABLED_OPTIMIZERS_KEY: ",".join(names)} if names else {})))
    return proto.SerializeToString()


def time_models(models: Sequence[Path], feed: dict, threads: int = 1, rounds: int = PREFIX_ROUNDS,
                runs: int = PREFIX_RUNS) -> list[float]:
    """p50 ms of each model on this machine's CPU provider, in interleaved rounds (load hits all alike)."""
    import time

    from edgecnn.frameworks.ort import session

    sessions = [session(m, threads) for m in models]
    for s in sessions:  # warm-up: arena allocation, pre-packed weights
        for _ in range(3):
            s.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for s, t in zip(sessions, times):
            for _ in range(runs):
                start = time.perf_counter()
                s.run(None, feed)
                t.append((time.perf_counter() - start) * 1000)
    return [float(np.median(t)) for t in times]


SENSITIVITY_BYTES = 3 * 2**30  # memory the sensitivity pass may hold in activations


def activation_bytes(path: Path) -> int:
    """Bytes of one image's intermediate float tensors (statically shaped ones), from ONNX shape inference."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    total = 0
    for info in model.graph.value_info:
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            total += 4 * int(np.prod(dims))
    return total


def layer_sensitivity(pre_path: Path, qdq_path: Path, calib: CalibrationData, work: Path,
                      samples: int = 32) -> dict[str, float]:
    """Per node: SNR (dB) of its output before vs after its own QuantizeLinear/DequantizeLinear pair.

    That is the error quantizing this tensor alone adds. Keys are node names of
    the pre-processed float model, which quantize(float_layers=...) accepts.
    """
    import warnings

    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from edgecnn.errors import EdgecnnWarning

    # onnxruntime's debugger holds every intermediate tensor of both models for every sample: bound the
    # samples by memory (a 736x736 text detector's 32 samples took all 23 GB of this machine).
    per_image = 3 * activation_bytes(pre_path)  # the float model's tensors, and about twice that for the QDQ one
    fits = int(SENSITIVITY_BYTES // per_image) if per_image else samples
    if fits < 1:
        warnings.warn(f"per-layer sensitivity not measured: one image's activations take "
                      f"{per_image / 2**30:.1f} GB in onnxruntime's QDQ debugger (limit "
                      f"{SENSITIVITY_BYTES / 2**30:.0f} GB); --fallback has no ranking to work from", EdgecnnWarning)
        return {}
    samples = min(samples, fits)
    subset = CalibrationData(calib.name, calib.input_name, calib.images[:samples], calib.paths[:samples],
                             calib.layout)
    acts = []
    for tag, path in (("qdq", qdq_path), ("float", pre_path)):
        augmented = work / f"{tag}-augmented.onnx"
        dbg.modify_model_output_intermediate_tensors(str(path), str(augmented))
        acts.append(dbg.collect_activations(str(augmented), subset.ort_reader(),
                                            execution_providers=["CPUExecutionProvider"]))
    errors = dbg.compute_activation_error(dbg.create_activation_matching(*acts))
    producers = {out: node.name for node in onnx.load(str(pre_path)).graph.node for out in node.output}
    result = {}
    for tensor, err in errors.items():
        node = producers.get(tensor)
        if node and np.isfinite(err["qdq_err"]):
            result[node] = float(err["qdq_err"])
    if not result:
        raise EdgecnnError("onnxruntime's QDQ debugger found no quantized activation to measure")
    return result


def short_name(node_name: str) -> str:
    """tf2onnx names nodes after the TF ops ('model_1/block_1_expand_1/convolution'): keep the layer."""
    parts = node_name.split("/")
    if len(parts) < 3:
        return node_name
    scoped = parts[0].endswith("_1") and parts[1].endswith("_1")
    return parts[1][:-2] if scoped else parts[1]
