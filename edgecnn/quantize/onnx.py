"""ONNX backend: QDQ static quantization with onnxruntime.quantization.

Keras models are exported with tf2onnx first (checked with TF 2.21 / Keras 3 /
protobuf 7 here); .onnx files are taken as they are. onnxruntime's recipe is
followed: quant_pre_process (shape inference and graph optimisation), then
quantize_static in QDQ format, int8 weights (per channel by default) and int8
activations, with MinMax, Entropy or Percentile calibration. The calibration
ranges are cached in the work folder, so fallback search calibrates once.
Per-layer sensitivity uses onnxruntime's qdq_loss_debug tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edgecnn.errors import EdgecnnError
from edgecnn.frameworks.tf import onnx_float
from edgecnn.quantize.calibration import CalibrationData

SUFFIX = ".onnx"


def export_float(keras_model, work: Path) -> Path:
    """Keras -> ONNX (NHWC input named 'input', batch dimension free) as work/float.onnx; returns the file."""
    return onnx_float(keras_model, work / "float.onnx")


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


def quantize(pre_path: Path, calib: CalibrationData, work: Path, per_channel: bool = True,
             method: str = "minmax", float_layers: Sequence[str] = ()) -> Path:
    """QDQ int8 model; float_layers are node names left unquantized. Returns the written file."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    out = work / f"int8-{len(float_layers)}.onnx"
    cache = work / f"calibration-{method}-{'pc' if per_channel else 'pt'}.json"
    reader = None if cache.is_file() else calib.ort_reader()
    quantize_static(str(pre_path), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(float_layers) or None, calibrate_method=_method(method),
                    calibration_cache_path=str(cache),
                    # Symmetric int8 weights are what ARM int8 kernels (and TFLite) expect.
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return out


def layer_sensitivity(pre_path: Path, qdq_path: Path, calib: CalibrationData, work: Path,
                      samples: int = 32) -> dict[str, float]:
    """Per node: SNR (dB) of its output before vs after its own QuantizeLinear/DequantizeLinear pair.

    That is the error quantizing this tensor alone adds. Keys are node names of
    the pre-processed float model, which quantize(float_layers=...) accepts.
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

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
