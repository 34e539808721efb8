"""Keras models out to the runtimes: TensorFlow's TFLite converter and tf2onnx.

Every TFLite conversion goes through `convert`, so a model the converter cannot
handle is one ModelError naming the step, the converter's chatter never
reaches stdout, and its log lines never stderr (frameworks.quiet). The ONNX
export fixes what the rest of edgecnn relies on: an NHWC float input named
"input" with a free batch dimension, opset 17 (checked with TF 2.21 / Keras 3 /
protobuf 7).

Each function takes a keras.Model or a Keras SourceModel. A source's exports
are made once per model content and kept: every TFLite conversion of a Keras
model starts from the SavedModel export that `from_keras_model` writes to a
temporary folder and deletes (Keras 3: the model's call with training=False as
the "serve" endpoint), and one bench of TFLite fp32/int8 and TVM fp32 for an a72
and an a53 asked for that export of each demo model six times and for the same
tf2onnx export four times, seconds each. The SavedModel, the fp32 flatbuffer and
the ONNX export live under cache_dir("exports")/<key>, written atomically; the
key is the source's content hash (weights, architecture, data contract), the
exporting tools' versions and this file, so a retrained model, an edited
sidecar or another TensorFlow never reads an old export. A flatbuffer converted
from the kept SavedModel is from_keras_model's except one metadata byte (the
original model format reads TF_SAVED_MODEL, not KERAS_MODEL; TF 2.21).
A keras.Model that is not a source (prune's candidates) is exported each time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from edgecnn.errors import ModelError
from edgecnn.frameworks import quiet

ONNX_INPUT = "input"
ONNX_OPSET = 17
SERVE = "serve"  # the endpoint (and tag) the TFLite converter exports and reads
SIGNATURE = "serving_default"
SAVED_MODEL, FLOAT_TFLITE, FLOAT_ONNX = "saved_model", "float.tflite", "float.onnx"
FLOAT_TFLITE_BATCH1 = "float-batch1.tflite"
_EXPORT_TOOLS = ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx")


def _kept(model) -> bool:
    """True for a Keras SourceModel with a content hash: its exports are kept."""
    return getattr(model, "keras_model", None) is not None and bool(getattr(model, "sha256", ""))


def _keras(model):
    return model.keras_model if getattr(model, "keras_model", None) is not None else model


@functools.lru_cache(maxsize=1)
def _export_code() -> str:
    versions = {}
    for dist in _EXPORT_TOOLS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return hashlib.sha256((json.dumps(versions, sort_keys=True) + Path(__file__).read_text()).encode()).hexdigest()


def exports_folder(source) -> Path:
    """Where a Keras source's exports are kept (not created here)."""
    from edgecnn.paths import cache_root

    key = hashlib.sha256((source.sha256 + _export_code()).encode()).hexdigest()[:32]
    return cache_root() / "exports" / key


def saved_model(source) -> Path:
    """The inference SavedModel of a Keras source, as the TFLite converter exports it (made on first use)."""
    from edgecnn.paths import atomic_dir

    final = exports_folder(source) / SAVED_MODEL
    if not (final / "saved_model.pb").is_file():
        with atomic_dir(final) as tmp:
            _export_saved_model(source.keras_model, tmp)
    return final


def _export_saved_model(keras_model, path: Path, batch: int | None = None) -> None:
    """The inference endpoint as a SavedModel at `path`; `batch` fixes the batch dimension (None: free)."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(keras_model)
    spec = [tf.TensorSpec([batch, *x.shape[1:]], dtype=x.dtype, name=x.name) for x in keras_model.inputs]
    archive.add_endpoint(SERVE, functools.partial(keras_model.__call__, training=False), spec)
    try:
        with quiet():
            archive.write_out(str(path))
    except (ValueError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"the Keras model cannot be exported for the TFLite converter: {first}") from e


def tflite_converter(model):
    """A TFLiteConverter with TensorFlow's defaults for a keras.Model or a Keras SourceModel (over its kept
    SavedModel); callers set optimizations etc."""
    import tensorflow as tf

    if _kept(model):
        return tf.lite.TFLiteConverter.from_saved_model(str(saved_model(model)), signature_keys=[SIGNATURE],
                                                        tags={SERVE})
    return tf.lite.TFLiteConverter.from_keras_model(_keras(model))


def convert(converter, what: str) -> bytes:
    """Run `converter`; its own diagnosis of an unsupported model becomes a ModelError naming `what`."""
    from tensorflow.lite.python.convert_phase import ConverterError

    try:
        with quiet():
            return converter.convert()
    except (ConverterError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"TFLite converter failed ({what}): {first}") from e


def _kept_bytes(model, name: str, make) -> bytes:
    """`make()`'s bytes, kept as exports_folder(model)/name for a Keras source (made once, then read back)."""
    from edgecnn.paths import atomic_write_bytes

    if not _kept(model):
        return make()
    kept = exports_folder(model) / name
    if kept.is_file():
        return kept.read_bytes()
    data = make()
    atomic_write_bytes(kept, data)
    return data


def tflite_float(model) -> bytes:
    """The fp32 TFLite flatbuffer (a source's converted once, then read back): the reference quantized models
    are judged against."""
    return _kept_bytes(model, FLOAT_TFLITE, lambda: convert(tflite_converter(model), "float export"))


def tflite_float_batch1(model) -> bytes:
    """The fp32 flatbuffer of a SavedModel exported at batch 1 (a source's made once, then read back).

    With the batch left free, the converter computes each Reshape's target at run time (Shape ->
    StridedSlice -> Pack), which TVM's Relax TFLite frontend cannot import (0.27: a ShapeExpr of a Call):
    a SE block (MobileNetV3), a channel shuffle (ShuffleNetV2) or an SSD head's flatten. At batch 1
    every shape is static and the converter folds those chains into constants. compile.tvm imports
    this for tuned builds.
    """
    def make() -> bytes:
        import tensorflow as tf

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / SAVED_MODEL
            _export_saved_model(_keras(model), path, batch=1)
            converter = tf.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=[SIGNATURE],
                                                                 tags={SERVE})
            return convert(converter, "batch-1 float export")

    return _kept_bytes(model, FLOAT_TFLITE_BATCH1, make)


def tflite_fp16(model) -> bytes:
    """float16 weights: half the size; ops dequantize them once at load."""
    import tensorflow as tf

    converter = tflite_converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return convert(converter, "float16 export")


def onnx_float(model, path: Path) -> Path:
    """Keras -> ONNX with tf2onnx (NHWC input named ONNX_INPUT, batch dimension free), written to `path`
    (a source's exported once, then copied)."""
    from edgecnn.paths import atomic_write_bytes

    if not _kept(model):
        return _tf2onnx(_keras(model), path)
    kept = exports_folder(model) / FLOAT_ONNX
    if kept.is_file():
        shutil.copyfile(kept, path)
    else:
        atomic_write_bytes(kept, _tf2onnx(model.keras_model, path).read_bytes())
    return path


def _tf2onnx(keras_model, path: Path) -> Path:
    import tensorflow as tf
    import tf2onnx

    shape = (None,) + tuple(keras_model.input_shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32, name=ONNX_INPUT),)
    try:
        proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=ONNX_OPSET)
    except (ValueError, NotImplementedError) as e:
        raise ModelError(f"tf2onnx cannot export the Keras model: {str(e).splitlines()[0] if str(e) else e}") from e
    path.write_bytes(proto.SerializeToString())
    return path
