"""Model files from one format to another with the field's own converters, each result checked against its source.

    tflite_to_onnx        .tflite -> .onnx with tf2onnx, for onnxruntime and TVM
    onnx_to_tflite        .onnx -> .tflite with onnx2tf (what Ultralytics exports with), for LiteRT/XNNPACK
    quantize_tflite_int8  fp32 .tflite -> full-integer int8 .tflite with ai-edge-quantizer and calibration

Every converted file is run next to its source on a few fixed random inputs
before it is returned (`CHECK_LIMITS`): a converter that changes the math is a
ModelError here, not a wrong figure later. The quantizer's result is not
checked that way (int8 error is by design); the quantize stage judges it on
real images.

What the converters do to layouts and precisions:
- tf2onnx keeps TFLite's NHWC input; input and output names are the .tflite's
  tensor names; a free batch dimension of the .tflite stays free. A float16
  .tflite becomes an fp32 ONNX (tf2onnx folds the float16 weights into fp32
  constants). An int8 .tflite becomes a QDQ ONNX (QuantizeLinear/DequantizeLinear
  around integer ops) with the .tflite's interface: float inputs and outputs stay
  float; int8 ones stay int8 with the .tflite's own scale and zero point (LiteRT's
  input/output details give them; the ONNX keeps them only inside its first
  DequantizeLinear and last QuantizeLinear), so a runner quantizes as for the .tflite.
- onnx2tf turns channels-first inputs and outputs (rank 3-5: NCW, NCHW, NCDHW)
  channels-last, so an NCHW image model becomes NHWC; the .tflite's signature
  keeps the ONNX input/output names. Free dimensions are bound first (see
  onnx_to_tflite).
- ai-edge-quantizer's static int8 recipe gives int8 inputs and outputs; an op it
  has no int8 rule for stays float between DEQUANTIZE/QUANTIZE (named in an
  EdgecnnWarning). Per-channel weights lose the bias of an output channel whose
  weights are all zero (its scale collapses to 1e-9; seen with ai-edge-quantizer
  0.10.0): per_channel=False keeps it.

The converters are imported inside the functions; a missing one is a ToolError
naming its pip package (onnx2tf and tf-keras are installed with --no-deps by
tools/setup.sh: onnx2tf 1.x pins TensorFlow 2.19 and numpy 1.26).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from edgecnn.errors import DataError, EdgecnnError, EdgecnnWarning, ModelError, ToolError
from edgecnn.frameworks import quiet
from edgecnn.frameworks.tf import ONNX_OPSET
from edgecnn.kinds import Precision

# (max |diff| relative to max(1, max |reference|), minimum cosine) between a converted file and its source.
# Conversions must not change the math: these are tighter than compile verification's. fp16 results are
# compared with their fp32 source. Integer outputs (an int8 .tflite's) are compared as integers (INT8_MAX_LSB).
CHECK_LIMITS = {Precision.FP32.value: (1e-4, 0.99999), Precision.FP16.value: (1e-2, 0.9999),
                Precision.INT8.value: (2 / 127, 0.999)}  # float outputs of an int8 model: about one int8 step
INT8_MAX_LSB = 1  # an integer kernel may round one step differently
CHECK_SAMPLES = 2
CHECK_SEED = 0

# pip package of each module the converters import (a module name is not always the package's).
PIP_NAMES = {"tf2onnx": "tf2onnx", "onnx2tf": "onnx2tf", "tf_keras": "tf-keras", "sng4onnx": "sng4onnx",
             "onnx_graphsurgeon": "onnx-graphsurgeon", "ai_edge_quantizer": "ai-edge-quantizer"}
NO_DEPS = {"onnx2tf", "tf_keras"}  # their pins would replace TensorFlow/numpy/onnx: tools/setup.sh, --no-deps
SIGNATURE = "serving_default"
CHANNELS_FIRST, CHANNELS_LAST = "NCHW", "NHWC"
LAYOUTS = (CHANNELS_FIRST, CHANNELS_LAST)
ONNX2TF_ENV = ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")


def _missing(e: ImportError, what: str) -> ToolError:
    module = (e.name or "").split(".")[0]
    if not module:  # "cannot import name ..." : an installed package of the wrong version
        return ToolError(f"{what}: {_first_line(e)}; bash tools/setup.sh installs the versions edgecnn uses")
    package = PIP_NAMES.get(module, module)
    how = "bash tools/setup.sh (it installs it with --no-deps)" if module in NO_DEPS else f"pip install {package}"
    return ToolError(f"{what} needs the Python package {package}: {how}")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ---------------------------------------------------------------------------------------------- tflite -> onnx


def tflite_to_onnx(tflite_path: str | Path, out_path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """Convert a .tflite (fp32, float16 or int8) to ONNX with tf2onnx; the result is checked against LiteRT.

    ModelError names the TFLite ops tf2onnx has no ONNX conversion for (such a
    model runs on LiteRT as it is); ToolError when tf2onnx is not installed.
    """
    from edgecnn.frameworks import litert

    tflite_path, out_path = Path(tflite_path), Path(out_path)
    precision = litert.precision(tflite_path)  # ModelError for a file LiteRT cannot read
    try:
        import onnx
        import tf2onnx
    except ImportError as e:
        raise _missing(e, "TFLite to ONNX conversion") from None
    try:
        with _captured():  # tf2onnx logs every unmapped op; the ModelError below names them once
            proto, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=opset)
    except Exception as e:  # noqa: BLE001 - tf2onnx re-raises whatever its op handler raised; reported, not hidden
        raise ModelError(f"tf2onnx cannot convert {tflite_path.name}: {_first_line(e)}") from e
    # tf2onnx leaves an op it cannot map in the graph under its TFLite name instead of failing.
    unmapped = sorted({n.op_type.removeprefix("TFL_") for n in proto.graph.node
                       if not onnx.defs.has(n.op_type, n.domain or "")})
    if unmapped:
        raise ModelError(f"tf2onnx has no ONNX conversion for TFLite op(s) {', '.join(unmapped)} in "
                         f"{tflite_path.name}: run the .tflite on LiteRT (backend tflite) as it is")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(proto.SerializeToString())
    with _removed_on_error(out_path):
        _check_tflite_onnx(tflite_path, out_path, precision)
    return out_path


@contextlib.contextmanager
def _removed_on_error(path: Path):
    """A converted file that fails its check is not left behind to be picked up later."""
    try:
        yield
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _check_tflite_onnx(tflite_path: Path, onnx_path: Path, precision: str) -> None:
    """LiteRT on the .tflite against onnxruntime on its conversion, inputs and outputs paired by tensor name."""
    from edgecnn.frameworks import litert, ort

    it = litert.interpreter(tflite_path)
    sess = ort.session(onnx_path)
    ins, outs = it.get_input_details(), it.get_output_details()
    onnx_in = _pair([d["name"] for d in ins], [i.name for i in sess.get_inputs()], "input")
    onnx_out = _pair([d["name"] for d in outs], [o.name for o in sess.get_outputs()], "output")
    rng = np.random.default_rng(CHECK_SEED)
    refs, got = [], []
    for _ in range(CHECK_SAMPLES):
        feed = {d["name"]: _random(rng, d["shape"], d["dtype"]) for d in ins}
        for d in ins:
            it.set_tensor(d["index"], feed[d["name"]])
        it.invoke()
        refs.append([it.get_tensor(d["index"]) for d in outs])
        result = sess.run([onnx_out[d["name"]] for d in outs], {onnx_in[n]: x for n, x in feed.items()})
        got.append(result)
    what = f"tf2onnx's conversion of {tflite_path.name}"
    for k, d in enumerate(outs):
        if np.dtype(d["dtype"]).kind in "iu":  # an int8 model's integer output: compare the integers
            lsb = max(int(np.max(np.abs(r[k].astype(np.int64) - g[k].astype(np.int64)))) for r, g in zip(refs, got))
            if lsb > INT8_MAX_LSB:
                raise ModelError(f"{what} changed integer output {d['name']!r}: {lsb} steps off "
                                 f"(limit {INT8_MAX_LSB})")
        else:
            _agree([r[k:k + 1] for r in refs], [g[k:k + 1] for g in got], [d["name"]], precision, what)


# ---------------------------------------------------------------------------------------------- onnx -> tflite


def onnx_to_tflite(onnx_path: str | Path, out_dir: str | Path, input_shape: Sequence[int] | None = None,
                   precision: str = Precision.FP32.value, layout: str = CHANNELS_FIRST) -> Path:
    """Convert an .onnx to a .tflite with onnx2tf: `<out_dir>/<stem>.tflite` (fp32) or `<stem>.fp16.tflite`.

    input_shape is the model input's shape in the ONNX file's own layout (for an
    NCHW model (1, 3, H, W)); it binds free dimensions and must agree with fixed
    ones. Without it a free batch dimension is bound to 1 and any other free
    dimension is a ModelError. layout is the layout of the ONNX inputs: "NCHW"
    (PyTorch, Paddle) comes out NHWC, as onnx2tf does by default; "NHWC" (a Keras
    or TFLite export) is kept as it is, which onnx2tf would otherwise take for
    NCHW (a [1, 32, 32, 3] input became [1, 32, 3, 32] behind a TRANSPOSE). The
    result is checked against onnxruntime on the source. The user's file is never
    touched: onnx2tf rewrites its input in place, so it gets a copy.
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    want = Precision.parse(precision, "precision")
    if want == Precision.INT8:
        raise ModelError("onnx_to_tflite writes fp32 or fp16; quantize its fp32 result with quantize_tflite_int8")
    if str(layout).upper() not in LAYOUTS:
        raise ModelError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    keep = str(layout).upper() == CHANNELS_LAST
    with _contained():
        return _onnx_to_tflite(onnx_path, out_dir, input_shape, want, keep)


def _onnx_to_tflite(onnx_path: Path, out_dir: Path, input_shape, want: Precision, keep: bool) -> Path:
    try:
        import onnx
        import onnx2tf
        import onnx2tf.onnx2tf as onnx2tf_core
    except ImportError as e:
        raise _missing(e, "ONNX to TFLite conversion") from None
    try:
        model = onnx.load(str(onnx_path))  # external data too, so the copy below is complete
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and OSError alike: the file is not a model
        raise ModelError(f"cannot read {onnx_path} as ONNX: {_first_line(e)}") from None
    bound = _bind_inputs(model, input_shape, onnx_path.name)
    kept = _kept_conversion(model, bound, want, keep)
    out = out_dir / (f"{onnx_path.stem}.tflite" if want == Precision.FP32 else f"{onnx_path.stem}.fp16.tflite")
    if kept is not None and kept.is_file():  # converted and checked before: the same bytes again
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept, out)
        return out
    with tempfile.TemporaryDirectory(prefix="edgecnn-onnx2tf-") as tmp:
        work = Path(tmp)
        source, reference = work / "model.onnx", work / "reference.onnx"  # onnx2tf's copy, and the check's
        onnx.save(model, str(source))
        shutil.copyfile(source, reference)
        try:
            # onnx2tf fetches 20 sample images from GitHub for its checks whenever the inputs look like images;
            # edgecnn runs offline, so it gets fixed random ones of the same form (N, 128, 128, 3) in [0, 1).
            with _captured() as log, _patched(onnx2tf_core, "download_test_image_data", _sample_images):
                onnx2tf.convert(input_onnx_file_path=str(source), output_folder_path=str(work / "out"),
                                keep_nwc_or_nhwc_or_ndhwc_input_names=[n for n, s in bound.items()
                                                                       if keep and len(s) >= 3] or None,
                                not_use_onnxsim=True,  # as Ultralytics: no onnxsim subprocess, no rewrite of shapes
                                onnxruntime_output_memmap_dir=str(work), verbosity="error")
        except (SystemExit, Exception) as e:  # noqa: BLE001 - onnx2tf reports with print() and sys.exit(1)
            raise _onnx2tf_error(e, log.getvalue(), onnx_path.name) from None
        suffix = "float32" if want == Precision.FP32 else "float16"
        made = work / "out" / f"model_{suffix}.tflite"
        if not made.is_file():
            raise ModelError(f"onnx2tf wrote no {suffix} .tflite for {onnx_path.name}: {_last_error(log.getvalue())}")
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made, out)
        with _removed_on_error(out):
            _check_onnx_tflite(reference, out, bound, want.value, onnx_path.name)
    if kept is not None:
        from edgecnn.paths import atomic_write_bytes

        atomic_write_bytes(kept, out.read_bytes())
    return out


def _kept_conversion(model, bound: Mapping, want: Precision, keep: bool) -> Path | None:
    """Where onnx2tf's checked result for this graph, input binding and precision is kept (None: not kept).

    A model compiled for several boards, or compiled and quantized, is converted once (a minute or more for
    a YOLOv8n). Keyed by the serialized graph, the converter stack's versions and this file's code.
    """
    import hashlib
    import json
    from importlib import metadata

    from edgecnn.paths import cache_root

    try:
        graph = hashlib.sha256(model.SerializeToString()).hexdigest()
    except ValueError:  # over protobuf's 2 GB: not worth keeping a copy of
        return None
    tools = {}
    for dist in ("onnx2tf", "tensorflow", "tf-keras", "onnx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            tools[dist] = metadata.version(dist)
    parts = {"graph": graph, "inputs": {k: list(v) for k, v in bound.items()}, "precision": want.value,
             "keep_layout": keep, "tools": tools, "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return cache_root() / "exports" / "onnx2tf" / f"{key}.tflite"


@contextlib.contextmanager
def _contained():
    """Undo what onnx2tf does to the whole process: it sets TF_USE_LEGACY_KERAS=1 (tf.keras becomes tf_keras),
    TF_CPP_MIN_LOG_LEVEL and CUDA_VISIBLE_DEVICES=-1, and seeds Python's and numpy's global generators.
    (TensorFlow's global seed, set to 0 at its import, stays set: TensorFlow has no way to read it back.)"""
    saved_env = {k: os.environ.get(k) for k in ONNX2TF_ENV}
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        random.setstate(py_state)
        np.random.set_state(np_state)


@contextlib.contextmanager
def _captured():
    """A converter's Python-level prints and logging in one buffer (read for its error message); what C++
    writes to the descriptors goes through quiet(). Its warnings (TF's deprecation of tf.lite.Interpreter,
    which tf2onnx uses; LiteRT's note on keeping every tensor, which calibration needs) are dropped: the
    numeric check after each conversion is what decides."""
    log = io.StringIO()
    with (quiet(stderr=True), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log),
          warnings.catch_warnings()):
        warnings.simplefilter("ignore")
        yield log


@contextlib.contextmanager
def _patched(module, name: str, value):
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def _sample_images() -> np.ndarray:
    return np.random.default_rng(CHECK_SEED).random((20, 128, 128, 3), dtype=np.float32)


def _bind_inputs(model, input_shape: Sequence[int] | None, name: str) -> dict[str, list[int]]:
    """Fix the free dimensions of `model`'s inputs in place; {input name: full shape} for every input.

    Free batch -> 1, other free dims from input_shape. onnx2tf 1.29 applies its own
    overwrite_input_shape only through onnxsim, so onnxruntime's tool does it here.
    """
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if input_shape is not None and len(inputs) != 1:
        raise ModelError(f"{name} has {len(inputs)} inputs; input_shape binds the free dimensions of a "
                         f"single-input model only")
    bound = {}
    for graph_input in inputs:
        shape = graph_input.type.tensor_type.shape.dim
        dims = [d.dim_value if d.dim_value > 0 else None for d in shape]
        shown = [d.dim_value if d.dim_value > 0 else (d.dim_param or "?") for d in shape]
        if input_shape is not None:
            given = [int(v) for v in input_shape]
            if len(given) != len(dims) or any(v < 1 for v in given):
                raise ModelError(f"input_shape {tuple(given)} does not fit input {graph_input.name!r} of {name}, "
                                 f"shape {shown}")
            clash = [k for k, (d, v) in enumerate(zip(dims, given)) if d is not None and d != v]
            if clash:
                raise ModelError(f"input_shape {tuple(given)} disagrees with the fixed dimension {clash[0]} "
                                 f"(= {dims[clash[0]]}) of input {graph_input.name!r} of {name}")
            bound[graph_input.name] = given
            continue
        free = [shown[k] for k, d in enumerate(dims) if d is None and k > 0]
        if free:
            raise ModelError(f"input {graph_input.name!r} of {name} has free dimensions {free} (shape {shown}): "
                             f"give input_shape")
        bound[graph_input.name] = [1 if d is None else d for d in dims]
    for graph_input in inputs:
        if any(d.dim_value < 1 for d in graph_input.type.tensor_type.shape.dim):
            make_input_shape_fixed(model.graph, graph_input.name, bound[graph_input.name])
    fix_output_shapes(model)
    return bound


WORKS_ON_ONNX = "the .onnx runs as it is with --backend onnx (onnxruntime) or --backend tvm"


def _onnx2tf_error(e: BaseException, log: str, name: str) -> EdgecnnError:
    if isinstance(e, ModuleNotFoundError) and (e.name or "").startswith("onnx2tf.ops."):
        op = e.name.rsplit(".", 1)[1]
        return ModelError(f"onnx2tf has no TFLite conversion for ONNX op {op} in {name}: run the .onnx on "
                          f"onnxruntime (backend onnx)")
    if isinstance(e, ImportError):
        return _missing(e, "ONNX to TFLite conversion")
    node = getattr(e, "onnx_op_name", None)
    where = f" at node {node}" if node else ""
    detail = _last_error(log) if isinstance(e, SystemExit) else _first_line(e)
    return ModelError(f"onnx2tf cannot convert {name}{where}: {detail}; {WORKS_ON_ONNX}")


def _last_error(log: str) -> str:
    """onnx2tf's last 'ERROR:' line, colour codes removed."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in log.splitlines()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    return errors[-1] if errors else "no reason given"


def _check_onnx_tflite(onnx_path: Path, tflite_path: Path, bound: Mapping[str, list[int]], precision: str,
                       name: str) -> None:
    """onnxruntime on the (bound) source against LiteRT's signature runner, channels-first moved last where needed."""
    from edgecnn.frameworks import litert, ort

    sess = ort.session(onnx_path)
    try:
        runner = litert.interpreter(tflite_path).get_signature_runner()
    except ValueError:  # no signature: onnx2tf writes none for some graphs, and then nothing maps the outputs
        raise ModelError(f"onnx2tf converted {name} into a TFLite file without a signature, so it cannot be "
                         f"checked against the ONNX model: {WORKS_ON_ONNX}") from None
    tfl_in, tfl_out = runner.get_input_details(), runner.get_output_details()
    onnx_outs = [o.name for o in sess.get_outputs()]
    to_tfl_in = _pair(list(bound), list(tfl_in), "input")
    to_tfl_out = _pair(onnx_outs, list(tfl_out), "output")
    rng = np.random.default_rng(CHECK_SEED)
    dtypes = {i.name: _ort_dtype(i.type) for i in sess.get_inputs()}
    refs, got = [], []
    for _ in range(CHECK_SAMPLES):
        feed = {n: _random(rng, s, dtypes[n]) for n, s in bound.items()}
        refs.append(sess.run(onnx_outs, feed))
        result = runner(**{to_tfl_in[n]: _as_shape(x, tfl_in[to_tfl_in[n]]["shape"], n) for n, x in feed.items()})
        got.append([_as_shape(result[to_tfl_out[n]], r.shape, n, back=True) for n, r in zip(onnx_outs, refs[-1])])
    _agree(refs, got, onnx_outs, precision, f"onnx2tf's conversion of {name}")


def _as_shape(x: np.ndarray, shape, name: str, back: bool = False) -> np.ndarray:
    """x as it is when the shapes agree, else with its channel axis moved (1 -> last, or back)."""
    shape = tuple(int(v) for v in shape)
    if tuple(x.shape) == shape:
        return x
    moved = np.moveaxis(x, -1, 1) if back else np.moveaxis(x, 1, -1)
    if x.ndim >= 3 and tuple(moved.shape) == shape:
        return np.ascontiguousarray(moved)
    raise ModelError(f"onnx2tf changed the shape of {name!r}: {tuple(x.shape)} became {shape}")


def _ort_dtype(type_name: str):
    return {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
            "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
            "tensor(bool)": np.bool_}.get(type_name, np.float32)


# ------------------------------------------------------------------------------------------------------ shared


def _random(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Fixed check inputs: [0, 1) for floats, the whole range for int8/uint8 (quantized images), zeros else."""
    shape = tuple(max(1, int(v)) for v in shape)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    if dtype in (np.dtype(np.int8), np.dtype(np.uint8)):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, shape).astype(dtype)
    return np.zeros(shape, dtype)


def _pair(ours: Sequence[str], theirs: Sequence[str], kind: str) -> dict[str, str]:
    """{our name: their name}: equal names, then names equal once reduced to letters and digits, then by
    position for a single tensor. Converters rename (onnx2tf replaces ':' and leading '/')."""
    def plain(n: str) -> str:
        return re.sub(r"[^0-9a-z]", "", n.lower())

    pairs = {}
    for n in ours:
        found = [t for t in theirs if t == n] or [t for t in theirs if plain(t) == plain(n)]
        if len(found) == 1:
            pairs[n] = found[0]
    if len(pairs) < len(ours) and len(ours) == len(theirs) == 1:
        pairs = {ours[0]: theirs[0]}
    if len(pairs) < len(ours):
        raise ModelError(f"cannot pair the converted model's {kind}s {list(theirs)} with the source's {list(ours)}")
    return pairs


def _agree(refs: list[list[np.ndarray]], got: list[list[np.ndarray]], names: Sequence[str], precision: str,
           what: str) -> None:
    from edgecnn.runner.metrics import output_agreement

    rel_limit, cos_limit = CHECK_LIMITS[precision]
    for k, name in enumerate(names):
        ref = np.concatenate([np.asarray(r[k], np.float64).reshape(1, -1) for r in refs])
        out = np.concatenate([np.asarray(g[k], np.float64).reshape(1, -1) for g in got])
        fig = output_agreement(ref, out)
        if fig.cosine < cos_limit or fig.max_abs_diff > rel_limit * fig.scale:
            raise ModelError(f"{what} changed output {name!r}: max |diff| {fig.max_abs_diff:.3g}, cosine "
                             f"{fig.cosine:.6f} (limits {rel_limit:g} x {fig.scale:.3g}, {cos_limit})")


# ------------------------------------------------------------------------------------------------ tflite -> int8


def quantize_tflite_int8(tflite_path: str | Path, calibration: Iterable[Mapping[str, np.ndarray]],
                         out_path: str | Path, per_channel: bool = True) -> Path:
    """Full-integer int8 of an fp32 .tflite with ai-edge-quantizer's static recipe, calibrated on `calibration`.

    calibration: {input name: array in the model's input shape} per sample; a name
    is the signature's input name or LiteRT's tensor name. int8 weights per
    output channel (per_channel) or per tensor, int8 activations per tensor,
    int8 model inputs and outputs. A .tflite without a signature gets the
    "serving_default" one the quantizer needs, mapping its graph inputs and outputs.
    """
    from edgecnn.frameworks import litert

    tflite_path, out_path = Path(tflite_path), Path(out_path)
    precision = litert.precision(tflite_path)
    if precision == Precision.INT8.value:
        raise ModelError(f"{tflite_path.name} is already int8: use it as it is")
    if precision == Precision.FP16.value:
        raise ModelError(f"{tflite_path.name} has float16 weights, which ai-edge-quantizer cannot calibrate: "
                         f"quantize its fp32 file or its source model")
    try:
        from ai_edge_quantizer import qtyping, quantizer
    except ImportError as e:
        raise _missing(e, "TFLite int8 quantization") from None
    model = _with_signature(tflite_path.read_bytes())
    samples = _signature_samples(model, calibration, tflite_path.name)
    granularity = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
    qt = quantizer.Quantizer(bytearray(model))
    qt.add_static_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8,
                         weight_granularity=granularity)
    try:
        with _captured():  # a progress bar and LiteRT's warning about keeping every tensor (which it needs)
            ranges = qt.calibrate({SIGNATURE: samples}, num_threads=os.cpu_count() or 1)  # its default: 16
            result = qt.quantize(ranges, enable_progress_report=False)
    except (ValueError, RuntimeError, KeyError) as e:
        raise ModelError(f"ai-edge-quantizer cannot quantize {tflite_path.name}: {_first_line(e)}") from e
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(bytes(result.quantized_model))
    floats = _float_ops(out_path)
    if floats:
        warnings.warn(f"{out_path.name}: op(s) {', '.join(floats)} stay float (ai-edge-quantizer has no int8 "
                      f"rule for them)", EdgecnnWarning, stacklevel=2)
    return out_path


def _with_signature(model: bytes) -> bytes:
    """The flatbuffer as it is when it has a signature, else with one mapping subgraph 0's inputs and outputs."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    if obj.signatureDefs:
        return model
    graph = obj.subgraphs[0]

    def entry(index: int):
        name = graph.tensors[index].name
        tensor_map = schema.TensorMapT()
        tensor_map.name = name.decode() if isinstance(name, bytes) else name
        tensor_map.tensorIndex = index
        return tensor_map

    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = SIGNATURE, 0
    sig.inputs = [entry(i) for i in graph.inputs]
    sig.outputs = [entry(i) for i in graph.outputs]
    obj.signatureDefs = [sig]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def _signature_samples(model: bytes, calibration: Iterable[Mapping[str, np.ndarray]], name: str) -> list[dict]:
    """Calibration samples keyed by signature input name, checked for names, shapes and float type."""
    from edgecnn.frameworks import litert

    details = litert.interpreter(model).get_signature_runner(SIGNATURE).get_input_details()
    by_tensor = {d["name"]: key for key, d in details.items()}
    samples = []
    for i, sample in enumerate(calibration):
        keyed = {}
        for key, x in sample.items():
            sig_key = key if key in details else by_tensor.get(key)
            if sig_key is None:
                raise DataError(f"calibration sample {i} has input {key!r}; {name} takes {sorted(details)}")
            x = np.asarray(x)
            want = tuple(int(v) for v in details[sig_key]["shape"])
            if tuple(x.shape) != want or x.dtype.kind != "f":
                raise DataError(f"calibration sample {i}, input {key!r}: got {x.dtype} {tuple(x.shape)}, "
                                f"{name} takes float32 {want}")
            keyed[sig_key] = x.astype(np.float32, copy=False)
        if set(keyed) != set(details):
            raise DataError(f"calibration sample {i} lacks input(s) {sorted(set(details) - set(keyed))} of {name}")
        samples.append(keyed)
    if not samples:
        raise DataError(f"no calibration samples for {name}")
    return samples


def _float_ops(path: Path) -> list[str]:
    """Ops of the quantized model that still compute in float (QUANTIZE/DEQUANTIZE are the boundary, not compute)."""
    from edgecnn.frameworks import litert

    it = litert.interpreter(path, delegates=False)
    tensors = {d["index"]: d for d in it.get_tensor_details()}
    found = set()
    for op in it._get_ops_details():  # noqa: SLF001 - LiteRT's only op listing
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        if any(i >= 0 and tensors[i]["dtype"] == np.float32 for i in list(op["inputs"]) + list(op["outputs"])):
            found.add(op["op_name"])
    return sorted(found)
