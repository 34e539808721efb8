"""ncnn backend: a .param/.bin pair written by pnnx, run by ncnn's Python bindings on the CPU.

    Keras  --tf2onnx, channels first-->  ONNX  --bind, onnxslim-->  pnnx  -->  model.ncnn.param/.bin
    .tflite --tf2onnx (edgecnn.frameworks.convert)--> ONNX --^        .onnx (intake copy) --^

Keras models are exported channels-first (tf2onnx's inputs_as_nchw): an NHWC
export keeps Transpose/Pad chains around every padded convolution, and pnnx
leaves such a Pad for ncnn, which has no Pad layer and refuses the file. The
bound graph is simplified with onnxslim, which folds the Mul/Add tf2onnx leaves
after each depthwise convolution (its batch norm) and the padding into the
convolutions. pnnx is run as a program (the binary its wheel ships; its Python
wrapper imports torch). fp32 bundles store fp32 weights and turn ncnn's fp16
options off. fp16 bundles store fp16 weights and allow fp16 storage and, where
the target's core has fp16 arithmetic (the a76; not the a72 or a53), fp16
arithmetic. ncnn's fp16 kernels for ARM need ARMv8.2 fp16: on an a72 or a53 an
fp16 bundle runs as fp32 from its half-size .bin (under qemu with ncnn
1.0.20261020 its instruction count is the fp32 bundle's).

int8 is ncnn's own int8 (int8 Convolution / ConvolutionDepthWise / InnerProduct
layers, which the wheel runs), made without ncnn's two programs for it
(ncnn2table writes a calibration table, ncnn2int8 rewrites the weights), which
neither the ncnn nor the pnnx wheel ships: edgecnn.compile.ncnn_int8 calibrates
the fp32 conversion on the calibration images (the job's set, else the demo set
of the model's task) through ncnn's Python API and rewrites the .param/.bin.
The manifest's verification.quantization records the calibration set, the
method and what was quantized. An int8 *source* file is refused: pnnx
converts float graphs.

The .param/.bin are the same bytes on every machine, so they are verified on
this one with the runner's own session (edgecnn.runner.sessions.NcnnSession).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from edgecnn.artifacts import TensorSpec
from edgecnn.compile.cache import tool_versions
from edgecnn.compile.job import Built, Compiler, Job, check_file_precision
from edgecnn.errors import ModelError, ToolError
from edgecnn.kinds import Backend, Precision

FILES = {"param": "model.ncnn.param", "bin": "model.ncnn.bin"}
INPUT_BLOB = "in0"  # pnnx names the blobs in0.., out0.. in the order of the ONNX graph's inputs and outputs
INSTALL_PNNX = ("bash tools/setup.sh installs it (pip install --no-deps pnnx: its wheel requires torch, "
                "the binary does not)")
PNNX_TIMEOUT_S = 900
PNNX_MAX_IR = 13  # pnnx 20261020 embeds onnxruntime 1.30


def check(job: Job) -> None:
    """Refuse what this backend cannot build, before any heavy work."""
    src = job.source
    if src.precision == Precision.INT8.value:
        raise ModelError(f"{Path(src.ref).name} is an int8 model; pnnx converts float graphs: run it with "
                         f"--backend {'tflite' if src.kind == 'tflite' else 'onnx'} as it is, or give the float model")
    check_file_precision(src, job.precision, Backend.NCNN.value, converts_to=(Precision.FP16.value,))
    if len(src.input_shape) != 4:
        raise ModelError(f"{src.name}: the ncnn backend compiles image models (one 4-D input), this one takes "
                         f"{len(src.input_shape)}-D input")
    pnnx_binary()


def pnnx_binary() -> Path:
    """The pnnx program inside the installed pnnx package (found without importing it: that imports torch)."""
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        raise ToolError(f"the ncnn backend converts models with pnnx, which is not installed: {INSTALL_PNNX}")
    binary = Path(list(spec.submodule_search_locations)[0]) / "pnnx"
    if not os.access(binary, os.X_OK):
        raise ToolError(f"the pnnx package has no runnable pnnx program at {binary}: {INSTALL_PNNX}")
    return binary


def tools(job: Job) -> dict[str, str]:
    dists = ["ncnn", "pnnx", "onnx", "onnxslim"]
    if job.source.kind in ("keras", "tflite"):
        dists += ["tf2onnx", "tensorflow", "tensorflow-cpu"]
    return tool_versions(dists)


def options(target, precision: str) -> dict:
    """The backend options the runner must honour: threads, light mode and ncnn's fp16 switches.

    fp16 arithmetic is allowed where the target's core has it (its features list fp16) and on the host,
    where ncnn itself checks this machine's CPU; ncnn never computes in fp16 on a core without it.
    """
    fp16 = precision == Precision.FP16.value
    opts = {"threads": target.cores, "light_mode": True, "fp16_storage": fp16, "fp16_packed": fp16,
            "fp16_arithmetic": fp16 and ("fp16" in target.features or target.is_host)}
    if precision == Precision.INT8.value:
        opts["int8_inference"] = True  # ncnn refuses int8 weights with it off; the layers between stay fp32
    return opts


def build(job: Job, out: Path, work: Path) -> Built:
    """Write model.ncnn.param/.bin into `out` and describe them."""
    src = job.source
    int8 = job.precision == Precision.INT8.value
    path, layout, shape = _onnx_for_pnnx(job, work)
    job.log(f"ncnn: converting {src.name} with pnnx ({'fp32' if int8 else job.precision} weights)")
    converted = work / "fp32" if int8 else out  # int8 is made from the fp32 conversion
    converted.mkdir(exist_ok=True)
    ignored = run_pnnx(path, shape, converted, work, fp16=job.precision == Precision.FP16.value)
    inputs, outputs = _specs(path, layout, src.kind)
    _check_loads(converted, ignored, len(outputs), src.name)
    info = {}
    if int8:
        info = make_int8(job, converted, out, work, inputs[0].layout)
        _check_loads(out, [], len(outputs), src.name)
    return Built(dict(FILES), inputs, outputs, options(job.target, job.precision), tools(job), info)


def make_int8(job: Job, fp32: Path, out: Path, work: Path, layout: str) -> dict:
    """The int8 .param/.bin in `out` from the fp32 pair in `fp32`, calibrated on the job's images (else the demo set
    of the model's task); returns the manifest's quantization record. The table is kept in `work`."""
    from edgecnn.compile import ncnn_int8
    from edgecnn.compile.verify import demo_image_set
    from edgecnn.data.calibration import RECOMMENDED_MINIMUM, load_calibration_set
    from edgecnn.errors import DataError
    from edgecnn.quantize.calibration import build_calibration
    from edgecnn.runner.tensors import to_layout

    src = job.source
    cset = load_calibration_set(job.calib if job.calib is not None else demo_image_set(src.task))
    if cset.task and cset.task != src.task:
        raise DataError(f"calibration set '{cset.name}' is for {cset.task}, but {src.name} is a {src.task} model")
    method = ncnn_int8.DEFAULT_METHOD
    job.log(f"ncnn: calibrating int8 on {len(cset.images)} images of '{cset.name}' ({method} thresholds)")
    data = build_calibration(cset, src.preprocessing, INPUT_BLOB)
    images = [to_layout(data.images[i:i + 1], layout)[0] for i in range(len(data))]  # ncnn takes no batch axis
    params, weights = fp32 / FILES["param"], fp32 / FILES["bin"]
    table = ncnn_int8.calibrate(params, weights, images, INPUT_BLOB, method, threads=min(os.cpu_count() or 1, 4))
    (work / "model.ncnn.table").write_text(table.text())  # ncnn2table's format, for comparing with ncnn's tools
    done = ncnn_int8.quantize_model(params, weights, table, out / FILES["param"], out / FILES["bin"])
    notes = [f"calibration set '{cset.name}' has {len(data)} images; {RECOMMENDED_MINIMUM} or more give steadier "
             "int8 ranges"] if cset.too_small else []
    for note in notes:
        job.log(f"ncnn: {note}")
    return {"quantization": {
        "calibration": {"name": cset.name, "images": len(data)},
        "settings": {"made_by": "edgecnn.compile.ncnn_int8 (ncnn2table + ncnn2int8 done in Python)",
                     "method": table.method, "histogram_bins": ncnn_int8.HISTOGRAM_BINS,
                     "weights": "per output channel (per group for depthwise): 127 / max|w|, 31 / max|w| for 3x3 "
                                "stride-1 convolutions", "requantize": True},
        "layers": done, "warnings": notes}}


def _onnx_for_pnnx(job: Job, work: Path) -> tuple[Path, str, list[int]]:
    """The float ONNX pnnx converts, bound to one image and simplified: (path, input layout, input shape)."""
    from edgecnn.frameworks.onnx_graph import bind_and_simplify

    src = job.source
    if src.kind == "onnx":
        return _for_pnnx(src.path, work / "for-pnnx.onnx"), src.layout, list(src.static_shape)
    n, h, w, c = src.static_shape  # Keras and TFLite models are NHWC
    if src.kind == "tflite":
        from edgecnn.frameworks.convert import tflite_to_onnx

        # frameworks.convert's checked conversion keeps TFLite's NHWC input (from_tflite's inputs_as_nchw is not
        # passed through); pnnx turns the input Transpose into a Permute layer, and ncnn runs it.
        job.log(f"ncnn: converting {src.name} from TFLite with tf2onnx")
        exported, layout, shape = tflite_to_onnx(src.path, work / "from-tflite.onnx"), "NHWC", [n, h, w, c]
    else:
        job.log(f"ncnn: exporting {src.name} to ONNX channels-first (tf2onnx)")
        exported, layout, shape = onnx_channels_first(src.keras_model, work / "nchw.onnx"), "NCHW", [n, c, h, w]
    for note in bind_and_simplify(exported, work / "bound.onnx", shape):
        job.log(f"ncnn: {note}")
    return _for_pnnx(work / "bound.onnx", work / "for-pnnx.onnx"), layout, shape


def onnx_channels_first(keras_model, path: Path) -> Path:
    """Keras -> ONNX with tf2onnx, the image input transposed to NCHW (inputs_as_nchw), written to `path`.

    Outputs stay as the Keras model gives them. Same opset and input name as
    edgecnn.frameworks.tf.onnx_float, whose export is NHWC.
    """
    import tensorflow as tf
    import tf2onnx

    from edgecnn.frameworks.onnx_graph import cancel_transposes
    from edgecnn.frameworks.tf import ONNX_INPUT, ONNX_OPSET

    spec = (tf.TensorSpec((None,) + tuple(keras_model.input_shape[1:]), tf.float32, name=ONNX_INPUT),)
    try:
        proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=ONNX_OPSET,
                                              inputs_as_nchw=[ONNX_INPUT])
    except (ValueError, NotImplementedError) as e:
        raise ModelError(f"tf2onnx cannot export the Keras model: {str(e).splitlines()[0] if str(e) else e}") from e
    proto, _ = cancel_transposes(proto)
    path.write_bytes(proto.SerializeToString())
    return path


def _for_pnnx(path: Path, out: Path) -> Path:
    """A copy of the ONNX graph that pnnx reads as meant.

    pnnx matches only a Pad node with an explicit mode attribute, and tf2onnx leaves
    the default ("constant") out: an unmatched Pad would reach ncnn, which has no
    Pad layer. pnnx loads the graph with the onnxruntime built into it, which reads
    IR versions up to PNNX_MAX_IR; newer onnx writes newer ones for the same ops.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "Pad" and not any(a.name == "mode" for a in node.attribute):
            node.attribute.append(helper.make_attribute("mode", "constant"))
    model.ir_version = min(model.ir_version, PNNX_MAX_IR)
    onnx.save(model, str(out))
    return out


def run_pnnx(onnx_path: Path, shape: list[int], out: Path, work: Path, fp16: bool) -> list[str]:
    """pnnx ONNX -> ncnn into `out` (FILES); its other outputs stay in `work`. Returns the ops it left unconverted.

    fp16: the .bin stores fp16 weights (pnnx's fp16=1, its default); else fp32.
    """
    stem = work / "pnnx"
    args = [str(pnnx_binary()), str(onnx_path), f"inputshape=[{','.join(str(int(d)) for d in shape)}]",
            f"fp16={int(fp16)}", f"ncnnparam={out / FILES['param']}", f"ncnnbin={out / FILES['bin']}",
            f"ncnnpy={stem}_ncnn.py", f"pnnxparam={stem}.pnnx.param", f"pnnxbin={stem}.pnnx.bin",
            f"pnnxpy={stem}_pnnx.py", f"pnnxonnx={stem}.pnnx.onnx"]
    try:
        done = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ToolError(f"pnnx did not finish converting {onnx_path.name} in {PNNX_TIMEOUT_S} s") from None
    (work / "pnnx.log").write_text(done.stdout + done.stderr)  # kept with the compile's work files
    if done.returncode != 0 or not (out / FILES["param"]).is_file():
        last = [ln for ln in (done.stderr + done.stdout).strip().splitlines() if ln.strip()][-1:] or ["no message"]
        raise ModelError(f"pnnx could not convert {onnx_path.name} (exit {done.returncode}): {last[0]}")
    # "ignore Pad Pad_8 param pads=(...)": an op pnnx wrote to the .param as it is, for ncnn to refuse or run.
    lines = (done.stdout + "\n" + done.stderr).splitlines()
    return sorted({ln.split()[1] for ln in lines if ln.startswith("ignore ") and len(ln.split()) > 1})


def _specs(path: Path, layout: str, kind: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The ONNX graph's inputs and outputs (batch 1) under pnnx's blob names. 4-D outputs of Keras and TFLite
    models are NHWC whatever the input's layout (tf2onnx transposes only the input)."""
    from edgecnn.compile.onnx import tensor_specs

    inputs, outputs = tensor_specs(path, layout)
    out_layout = "NHWC" if kind in ("keras", "tflite") else layout
    return ([replace(s, name=f"in{i}") for i, s in enumerate(inputs)],
            [replace(s, name=f"out{i}", layout=out_layout if len(s.shape) == 4 else "") for i, s in enumerate(outputs)])


def _check_loads(out: Path, ignored: list[str], outputs: int, name: str) -> None:
    """ncnn must load what pnnx wrote and find every blob the manifest will name."""
    try:
        import ncnn
    except ImportError:
        raise ToolError("the ncnn backend checks its files with the ncnn package: pip install ncnn") from None
    net = ncnn.Net()
    if net.load_param(str(out / FILES["param"])) != 0 or net.load_model(str(out / FILES["bin"])) != 0:
        unconverted = f"; pnnx left {', '.join(ignored)} unconverted" if ignored else ""
        raise ModelError(f"ncnn cannot load the conversion of {name}{unconverted}: use --backend onnx or tflite")
    want = [INPUT_BLOB], [f"out{i}" for i in range(outputs)]
    if list(net.input_names()) != want[0] or sorted(net.output_names()) != sorted(want[1]):
        raise ModelError(f"pnnx's conversion of {name} has blobs {list(net.input_names())} -> "
                         f"{list(net.output_names())}, expected {want[0]} -> {want[1]}")


def host_runner(bundle_dir: Path, built: Built):
    """The bundle's own files under the runner's NcnnSession on this machine, image by image, one thread."""
    from edgecnn.artifacts import Bundle, Manifest
    from edgecnn.runner.sessions import NcnnSession, predict
    from edgecnn.targets import host_arch

    opts = built.backend_options
    precision = (Precision.INT8.value if opts.get("int8_inference") else
                 Precision.FP16.value if opts.get("fp16_storage") else Precision.FP32.value)
    manifest = Manifest(name=bundle_dir.name, target="host", arch=host_arch(), backend=Backend.NCNN.value,
                        precision=precision, files=built.files, inputs=built.inputs, outputs=built.outputs,
                        task="generic", preprocessing={}, backend_options=built.backend_options)
    session = NcnnSession(Bundle(bundle_dir, manifest), threads=1)
    return lambda batch: predict(session, batch)


class NcnnCompiler(Compiler):
    """ncnn .param/.bin through pnnx: fp32, fp16 weights and storage (fp16 arithmetic where the core has it), or
    ncnn int8 calibrated and rewritten by edgecnn.compile.ncnn_int8."""

    name = Backend.NCNN.value
    precisions = (Precision.FP32.value, Precision.FP16.value, Precision.INT8.value)
    formats = ()  # every source goes through pnnx: none is run as it is


COMPILER = NcnnCompiler(sys.modules[__name__])
