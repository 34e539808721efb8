"""Tiny bundles for the runner, emulation and SSH tests, written with edgecnn.artifacts.write_manifest.

Test helper only: `edgecnn compile` makes the real bundles with the same manifest.
The classifier is quantize_fixtures' colour model (fp32 top-1 is 100% on its
images); the detector is a one-layer YOLO-style head on a 2x2 grid with fixed
weights, enough to drive decode, NMS and COCO mAP.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import quantize_fixtures as QF  # noqa: E402

from edgecnn.artifacts import Manifest, TensorSpec, write_manifest  # noqa: E402

DET_CLASSES = ["thing", "other"]
DET_HEAD = {"anchors": [[1.0, 1.0]], "grid": 2, "stride": 16}

_built: dict[str, dict[str, Path]] = {}


def _tflite_specs(model: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)

    def spec(d):
        scale, zero = d["quantization"]
        quant = np.dtype(d["dtype"]).kind in "iu"
        return TensorSpec(d["name"], [int(v) for v in d["shape"]], np.dtype(d["dtype"]).name,
                          "NHWC" if len(d["shape"]) == 4 else "",
                          float(scale) if quant else None, int(zero) if quant else None)

    return [spec(d) for d in it.get_input_details()], [spec(d) for d in it.get_output_details()]


def _onnx_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx

    g = onnx.load(str(path)).graph

    def spec(v):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
        return TensorSpec(v.name, dims, "float32", "NHWC" if len(dims) == 4 else "")

    weights = {i.name for i in g.initializer}
    return [spec(v) for v in g.input if v.name not in weights], [spec(v) for v in g.output]


def _versions(*names: str) -> dict[str, str]:
    return {n: metadata.version(n) for n in names}


def write_bundle(folder: Path, model_file: str, data: bytes, backend: str, precision: str,
                 inputs: list[TensorSpec], outputs: list[TensorSpec], *, task: str = "classification",
                 name: str = "colors", runtime: dict | None = None, arch: str = "aarch64") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / model_file).write_bytes(data)
    detector = task == "detection"
    manifest = Manifest(
        name=name, target="a72", arch=arch, backend=backend, precision=precision, files={"model": model_file},
        inputs=inputs, outputs=outputs, task=task, preprocessing=dict(QF.PREPROCESSING, mode="stretch"),
        classes=DET_CLASSES if detector else QF.CLASSES, head=DET_HEAD if detector else None,
        postprocess={"kind": "yolo_region", "conf_threshold": 0.01, "iou_threshold": 0.45,
                     "max_detections": 20} if detector else None,
        runtime=runtime or ({"threads": 1, "delegate": "xnnpack"} if backend == "tflite"
                            else {"execution_provider": "CPUExecutionProvider", "threads": 1}),
        source={"ref": "tests", "sha256": "0" * 64, "weights": "fixed"},
        tools=_versions("ai-edge-litert" if backend == "tflite" else "onnxruntime"),
    )
    write_manifest(folder, manifest)
    return folder


def detector_model():
    """32x32 RGB -> (2, 2, 7): one anchor, 2 classes; fires on bright red cells."""
    import keras

    inp = keras.Input((QF.SIZE, QF.SIZE, 3), name="image")
    out = keras.layers.Conv2D(7, 16, strides=16, name="head")(inp)
    model = keras.Model(inp, out, name="dets")
    w = np.zeros((16, 16, 3, 7), np.float32)
    w[..., 0, 4] = 0.1  # objectness grows with red
    w[..., 0, 5] = 0.05  # class 0 with red
    w[..., 2, 6] = 0.05  # class 1 with blue
    model.get_layer("head").set_weights([w, np.array([0, 0, 0, 0, -10.0, 0, 0], np.float32)])
    return model


def build_bundles(root: Path) -> dict[str, Path]:
    """{"tflite-fp32", "tflite-int8", "onnx-fp32", "tflite-det"} -> bundle folder.

    Built once per process (under the first `root` given): tests must copy a bundle before changing it.
    """
    key = "bundles"
    if key in _built:
        return _built[key]
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx

    model = QF.color_model()
    bundles: dict[str, Path] = {}
    fp32 = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    bundles["tflite-fp32"] = write_bundle(root / "colors-fp32-tflite", "model.tflite", fp32, "tflite", "fp32",
                                          *_tflite_specs(fp32))

    rng = np.random.default_rng(0)
    calib = [(QF.color_image(rng, i % 3).astype(np.float32) / 255)[None] for i in range(24)]
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x] for x in calib)
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = c.inference_output_type = tf.int8
    int8 = c.convert()
    bundles["tflite-int8"] = write_bundle(root / "colors-int8-tflite", "model.tflite", int8, "tflite", "int8",
                                          *_tflite_specs(int8))

    spec = (tf.TensorSpec((None, QF.SIZE, QF.SIZE, 3), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    onnx_dir = root / "colors-fp32-onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    (onnx_dir / "model.onnx").write_bytes(proto.SerializeToString())
    bundles["onnx-fp32"] = write_bundle(onnx_dir, "model.onnx", proto.SerializeToString(), "onnx", "fp32",
                                        *_onnx_specs(onnx_dir / "model.onnx"))

    det = tf.lite.TFLiteConverter.from_keras_model(detector_model()).convert()
    bundles["tflite-det"] = write_bundle(root / "dets-fp32-tflite", "model.tflite", det, "tflite", "fp32",
                                         *_tflite_specs(det), task="detection", name="dets")
    _built[key] = bundles
    return bundles


def make_detection_set(folder: Path, count: int = 4, seed: int = 3) -> Path:
    """A COCO JSON data set: each image has one bright red 16x16 square (class "thing") on a grid cell."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(count):
        img = rng.integers(20, 60, (QF.SIZE, QF.SIZE, 3)).astype(np.uint8)
        x, y = 16 * int(rng.integers(0, 2)), 16 * int(rng.integers(0, 2))  # on a grid cell: IoU 1 when found
        img[y:y + 16, x:x + 16, 0] = 240
        QF.write_png(folder / "images" / f"d{i}.png", img)
        images.append({"id": i + 1, "file_name": f"d{i}.png", "width": QF.SIZE, "height": QF.SIZE})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [x, y, 16, 16],
                            "area": 256, "iscrowd": 0})
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(DET_CLASSES)]
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
