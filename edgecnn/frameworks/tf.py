"""Keras models out to the runtimes: TensorFlow's TFLite converter and tf2onnx.

Every TFLite conversion goes through `convert`, so a model the converter cannot
handle is one ModelError naming the step, the converter's chatter never
reaches stdout, and its log lines never stderr (frameworks.quiet). The ONNX
export fixes what the rest of edgecnn relies on: an NHWC float input named
"input" with a free batch dimension, opset 17 (checked with TF 2.21 / Keras 3 /
protobuf 7).
"""

from __future__ import annotations

from pathlib import Path

from edgecnn.errors import ModelError
from edgecnn.frameworks import quiet

ONNX_INPUT = "input"
ONNX_OPSET = 17


def tflite_converter(keras_model):
    """A TFLiteConverter for `keras_model` with TensorFlow's defaults; callers set optimizations etc."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(keras_model)


def convert(converter, what: str) -> bytes:
    """Run `converter`; its own diagnosis of an unsupported model becomes a ModelError naming `what`."""
    from tensorflow.lite.python.convert_phase import ConverterError

    try:
        with quiet():
            return converter.convert()
    except (ConverterError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"TFLite converter failed ({what}): {first}") from e


def tflite_float(keras_model) -> bytes:
    """The fp32 TFLite flatbuffer: the reference quantized models are judged against."""
    return convert(tflite_converter(keras_model), "float export")


def tflite_fp16(keras_model) -> bytes:
    """float16 weights: half the size; ops dequantize them once at load."""
    import tensorflow as tf

    converter = tflite_converter(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return convert(converter, "float16 export")


def onnx_float(keras_model, path: Path) -> Path:
    """Keras -> ONNX with tf2onnx (NHWC input named ONNX_INPUT, batch dimension free), written to `path`."""
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
