"""TFLite backend: full-integer post-training quantization with TensorFlow's own converter.

The converter is split into its two real steps so that fallback search is cheap:
calibrate once (TFLiteConverter with a representative data set and
`_experimental_calibrate_only`, which records every tensor's range into the
float model), then quantize that calibrated model as often as needed with
`mlir_quantize`, each time with a different set of layers kept in float
(denylisted nodes). This is what tf.lite.experimental.QuantizationDebugger
does internally; per-layer sensitivity uses that debugger.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgecnn.errors import EdgecnnError, ModelError
from edgecnn.frameworks import quiet
from edgecnn.frameworks.litert import interpreter
from edgecnn.frameworks.tf import convert, tflite_converter
from edgecnn.quantize.calibration import CalibrationData

SUFFIX = ".tflite"
_TRANSPORT_OPS = {"QUANTIZE", "DEQUANTIZE", "NumericVerify"}


def calibrate(model, calib: CalibrationData) -> bytes:
    """Run the representative data set through the model (a Keras SourceModel or keras.Model); a float
    flatbuffer with recorded ranges."""
    import tensorflow as tf

    c = tflite_converter(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = calib.representative_dataset()
    c.experimental_new_quantizer = True
    c._experimental_calibrate_only = True  # noqa: SLF001 - the documented debugger path
    return convert(c, "calibration")


PERCENTILE = 99.99  # default for --method percentile (tflite): kept 0.4-0.8 pt drops on V2, V3 and YOLO-Lite
BINS = 2048


def clip_ranges(calibrated: bytes, calib: CalibrationData, percentile: float = PERCENTILE) -> bytes:
    """The calibrated model with each activation's [min, max] narrowed to its `percentile` range.

    TFLite's calibration records the extreme values seen (min/max). A few outliers
    then stretch a tensor's int8 grid over values that almost never occur; MobileNetV3's
    hard-swish/squeeze-excite blocks lose about 3 top-1 points that way. Here the
    calibrated (still float) model runs once more over the calibration images with every
    intermediate tensor kept, a histogram of each activation over its recorded range gives
    the (100 - p) and p percentiles, and those become the range the quantizer sees
    (never wider than recorded, and always containing 0, as int8 zero points need).
    Weights and other constant tensors are left alone.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    import flatbuffers

    if not 50.0 < percentile < 100.0:
        raise EdgecnnError(f"percentile must be between 50 and 100 (exclusive), got {percentile:g}")
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(calibrated, 0))
    graph = model.subgraphs[0]
    ranges = {}
    for index, tensor in enumerate(graph.tensors):
        q = tensor.quantization
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        if q is not None and q.min is not None and len(q.min) == 1 and (data is None or len(data) == 0):
            if q.max[0] > q.min[0]:
                ranges[index] = (float(q.min[0]), float(q.max[0]))
    if not ranges:
        raise EdgecnnError("the calibrated model records no activation ranges to clip")
    hist = {index: np.zeros(BINS, np.int64) for index in ranges}
    it = interpreter(calibrated, delegates=False, keep_tensors=True)
    inp = it.get_input_details()[0]["index"]
    for i in range(len(calib.images)):
        it.set_tensor(inp, calib.images[i:i + 1])
        it.invoke()
        for index, (lo, hi) in ranges.items():
            values = it.get_tensor(index)
            hist[index] += np.histogram(values, BINS, (lo, hi))[0]
    tail = (100.0 - percentile) / 100.0
    for index, (lo, hi) in ranges.items():
        counts = np.cumsum(hist[index])
        if counts[-1] == 0:
            continue
        edges = np.linspace(lo, hi, BINS + 1)
        low = edges[int(np.searchsorted(counts, tail * counts[-1]))]
        high = edges[min(int(np.searchsorted(counts, (1.0 - tail) * counts[-1])) + 1, BINS)]
        q = graph.tensors[index].quantization
        q.min, q.max = [min(max(float(low), lo), 0.0)], [max(min(float(high), hi), 0.0)]
    builder = flatbuffers.Builder(len(calibrated) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def quantize(calibrated: bytes, per_channel: bool = True, int8_io: bool = True,
             float_layers: Sequence[str] = ()) -> bytes:
    """int8 weights and activations from a calibrated model; float_layers (tensor names) stay float."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    io_type = tf.int8 if int8_io else tf.float32
    with quiet(stderr=True):  # the C++ quantizer logs its settings on every call
        model = convert.mlir_quantize(calibrated, disable_per_channel=not per_channel, input_data_type=io_type,
                                      output_data_type=io_type, denylisted_nodes=list(float_layers) or None)
    if not float_layers:
        left = float_ops(model)
        if left:
            ops = ", ".join(sorted(set(left)))
            raise ModelError(f"{len(left)} op(s) cannot be quantized to int8 by TFLite ({ops}); "
                             "use --fallback with --max-drop, or the onnx backend")
    return model


def float_ops(model: bytes) -> list[str]:
    """Names of the ops that still compute in float (quantize/dequantize at the edges excluded)."""
    it = interpreter(model, delegates=False)
    tensors = {d["index"]: d for d in it.get_tensor_details()}
    out = []
    for op in it._get_ops_details():  # noqa: SLF001 - LiteRT has no public op listing
        if op["op_name"] in _TRANSPORT_OPS:
            continue
        if any(tensors[i]["dtype"] == np.float32 for i in op["outputs"] if i in tensors):
            out.append(op["op_name"])
    return out


def _snr_db(float_tensor, quant_tensor, scale, zero_point) -> float:
    ref = np.asarray(float_tensor, np.float64)
    deq = (np.asarray(quant_tensor, np.float64) - zero_point) * scale
    noise = float(np.sum((ref - deq) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return 120.0
    return 10.0 * np.log10(max(signal, 1e-30) / noise)


def layer_sensitivity(calibrated: bytes, calib: CalibrationData, per_channel: bool = True,
                      samples: int = 32) -> dict[str, float]:
    """Per layer: SNR (dB) of its int8 output against the same op in float on the same input.

    That is the error quantizing this layer alone adds (TFLite's NumericVerify ops
    run the float op next to each quantized one). Keys are the tensor names that
    `quantize(float_layers=...)` accepts.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert

    with quiet(stderr=True):
        debug_model = convert.mlir_quantize(calibrated, disable_per_channel=not per_channel,
                                            enable_numeric_verify=True)
    subset = calib.images[:samples]

    def data():
        for i in range(len(subset)):
            yield [subset[i:i + 1]]

    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_debug_metrics={}, layer_direct_compare_metrics={"snr_db": _snr_db})
    with quiet(stderr=True):
        debugger = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=debug_model, debug_dataset=data, debug_options=options)
        debugger.run()
    out = {}
    for verify_name, stats in debugger.layer_statistics.items():
        tensor_name, _ = debugger._get_operand_name_and_index(verify_name)  # noqa: SLF001
        out[tensor_name] = float(stats["snr_db"])
    if not out:
        raise EdgecnnError("TFLite's quantization debugger found no quantized layer to measure")
    return out


def short_name(tensor_name: str) -> str:
    """'model/block_1_expand_relu/Relu6;model/block_1_expand/conv' -> 'block_1_expand_relu'."""
    parts = tensor_name.split(";")[0].split("/")
    if len(parts) < 3:
        return parts[-1]
    # Keras 3's TF export scopes every layer as '<layer>_1' under '<model>_1'; undo only that pattern.
    scoped = parts[0].endswith("_1") and parts[1].endswith("_1")
    return parts[1][:-2] if scoped else parts[1]
