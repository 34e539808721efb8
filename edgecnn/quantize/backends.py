"""The quantization backends behind one interface (QuantizerBackend), and the registry name -> backend.

A backend session owns a work folder and turns one SourceModel plus
calibration data into: the fp32 artifact, int8 artifacts (optionally with some
layers kept in float), a predictor for either, and per-layer sensitivity.
A new backend is one QuantizerBackend subclass plus one line in BACKENDS
(docs/architecture.md, "Quantize backends").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgecnn.errors import EdgecnnError, ModelError
from edgecnn.kinds import IOType, QuantBackend as Backend, QuantMethod as Method  # the names quantize uses
from edgecnn.quantize.calibration import CalibrationData


Predict = Callable[[np.ndarray], list[np.ndarray]]


class QuantizerBackend(ABC):
    """One quantization run of one source model; what quantize() and quantize.fallback talk to.

    Class attributes declare the backend's options (checked by check_options before
    any work): `methods` it calibrates with, `io_types` it writes, `percentile_steps`
    --fallback tries, the artifact `suffix`.
    """

    suffix: str = ""
    methods: tuple[Method, ...] = ()
    io_types: tuple[IOType, ...] = ()
    default_io: IOType = IOType.FLOAT
    percentile_steps: tuple[float, ...] = ()
    percentile: float | None = None

    @abstractmethod
    def export_float(self) -> bytes:
        """The fp32 artifact of this backend: the reference int8 is validated against."""

    @abstractmethod
    def use_method(self, method: str, percentile: float | None = None) -> None:
        """Quantize from now on with another calibration method (statistics reused where possible)."""

    @abstractmethod
    def quantize(self, float_layers: Sequence[str] = ()) -> bytes:
        """The int8 artifact, with `float_layers` (backend layer names) kept in float."""

    @abstractmethod
    def predictor(self, model: bytes) -> Predict:
        """Float batch -> float outputs for either artifact."""

    @abstractmethod
    def output_names(self, model: bytes) -> list[str]:
        """Output names as users know them, in output order."""

    @abstractmethod
    def sensitivity(self, int8_model: bytes, samples: int) -> dict[str, float]:
        """Backend layer name -> output SNR (dB) when that layer alone is quantized."""

    def short_name(self, layer: str) -> str:
        """A readable layer name for reports."""
        return layer

    def use_arch(self, arch: str | None) -> None:
        """Quantize from now on for this CPU architecture (None: this machine's). A backend whose int8
        artifact is the same on every CPU ignores it."""

    def settings(self) -> dict:
        """The backend's own choices, for QuantizeResult.settings (the ONNX 8-bit types); none by default."""
        return {}

    def runtime_warnings(self, int8_model: bytes) -> list[str]:
        """What the runtime would not run in integers, said as warnings; nothing checked by default."""
        return []

    def speed_check(self, int8_model: bytes, log: Callable[[str], None]) -> bytes:
        """The int8 artifact to validate: `int8_model`, or a faster form of it the backend measured here."""
        return int8_model


class TFLiteSession(QuantizerBackend):
    """Full-integer TFLite: calibrate once, requantize cheaply for each fallback attempt."""

    suffix = ".tflite"
    methods = (Method.MINMAX, Method.PERCENTILE)
    percentile_steps = (99.99, 99.9)  # what --fallback tries before keeping layers in float
    io_types = (IOType.INT8, IOType.FLOAT)
    default_io = IOType.INT8

    def __init__(self, source, calib: CalibrationData, work: Path, per_channel: bool, method: str, io: str):
        from edgecnn.quantize import tflite

        if source.keras_model is None:
            raise ModelError(f"the tflite backend quantizes Keras models; {source.ref} is {source.kind}: use "
                             "--backend onnx")
        self._t = tflite
        self.source, self.calib = source, calib
        self.per_channel, self.int8_io, self.method = per_channel, io == IOType.INT8.value, method
        self.percentile = tflite.PERCENTILE
        self._recorded: bytes | None = None  # calibrated with the ranges as seen (min/max)
        self._calibrated: bytes | None = None  # the same with the method's ranges

    def export_float(self) -> bytes:
        from edgecnn.frameworks.tf import tflite_float

        return tflite_float(self.source)

    def use_method(self, method: str, percentile: float | None = None) -> None:
        """Quantize from now on with another calibration method (the recorded statistics are reused)."""
        self.method, self._calibrated = method, None
        self.percentile = percentile or self._t.PERCENTILE

    def quantize(self, float_layers: Sequence[str] = ()) -> bytes:
        if self._recorded is None:
            self._recorded = self._t.calibrate(self.source, self.calib)
        if self._calibrated is None:
            self._calibrated = self._recorded
            if self.method == Method.PERCENTILE.value:
                self._calibrated = self._t.clip_ranges(self._recorded, self.calib, self.percentile)
        return self._t.quantize(self._calibrated, self.per_channel, self.int8_io, float_layers)

    def predictor(self, model: bytes) -> Predict:
        from edgecnn.frameworks.litert import predictor

        return predictor(model)

    def output_names(self, model: bytes) -> list[str]:
        from edgecnn.frameworks.litert import output_names

        names = output_names(model)
        keras_names = list(getattr(self.source.keras_model, "output_names", None) or [])
        # TFLite calls outputs 'StatefulPartitionedCall_1:0'; the Keras layer names are what users know.
        return keras_names if len(keras_names) == len(names) else names

    def sensitivity(self, int8_model: bytes, samples: int) -> dict[str, float]:
        self.quantize()  # makes sure the calibrated model exists
        return self._t.layer_sensitivity(self._calibrated, self.calib, self.per_channel, samples)

    def short_name(self, layer: str) -> str:
        return self._t.short_name(layer)


class ONNXSession(QuantizerBackend):
    """QDQ ONNX through onnxruntime.quantization; calibration ranges cached in the work folder."""

    suffix = ".onnx"
    methods = tuple(Method)
    io_types = (IOType.FLOAT,)
    default_io = IOType.FLOAT

    def __init__(self, source, calib: CalibrationData, work: Path, per_channel: bool, method: str, io: str):
        from edgecnn.quantize import onnx as onnx_backend

        self._o = onnx_backend
        self.source, self.work = source, work
        self.per_channel, self.method = per_channel, method
        if source.onnx_path is not None:
            self.float_path = source.onnx_path
        elif source.kind == "tflite":  # tf2onnx, checked against the file; float16 weights become float32
            from edgecnn.frameworks.convert import tflite_to_onnx

            self.float_path = tflite_to_onnx(source.path, work / "float.onnx")
        else:
            self.float_path = onnx_backend.export_float(source, work)
        self.calib = calib.renamed(onnx_backend.input_name(self.float_path), layout=source.layout)
        self.types = onnx_backend.quant_types()
        self.float_prefix: list[str] = []  # leading layers kept in float because it is faster (speed_check)
        self.disabled: list[str] = []  # onnxruntime optimisers the int8 model runs faster without (speed_check)
        self.speed: dict | None = None
        self._pre: Path | None = None
        self._last: Path | None = None

    def export_float(self) -> bytes:
        return self.float_path.read_bytes()

    percentile = 99.999  # onnxruntime's own default, the only one used
    percentile_steps = (99.999,)

    def use_method(self, method: str, percentile: float | None = None) -> None:
        """Quantize from now on with another calibration method (its ranges are cached apart)."""
        self.method = method

    def quantize(self, float_layers: Sequence[str] = ()) -> bytes:
        if self._pre is None:
            self._pre = self._o.preprocess(self.float_path, self.work)
        yolo = (self.source.head or {}).get("type") == "yolo"  # boxes and scores in one output: decode in float
        layers = list(dict.fromkeys([*self.float_prefix, *float_layers]))
        self._last = self._o.quantize(self._pre, self.calib, self.work, self.per_channel, self.method, layers,
                                      self.types, float_tail=yolo)
        if self.disabled:
            self._last.write_bytes(self._o.with_disabled_optimizers(self._last.read_bytes(), self.disabled))
        return self._last.read_bytes()

    def speed_check(self, int8_model: bytes, log: Callable[[str], None]) -> bytes:
        """On this machine's CPU: the fastest of the all-int8 model and its float-prefix forms, each with and
        without onnxruntime's QDQ propagation (quantize.onnx); the all-int8 default stays unless 5% slower."""
        from edgecnn.targets import host_arch

        if self.types.arch != host_arch():
            self.speed = {"checked": False, "why": f"built for {self.types.arch}, timed only where it runs"}
            return int8_model
        prefixes = self._o.float_prefixes(self._pre)
        log(f"onnx: timing the int8 model against {len(prefixes)} float-prefix forms on this CPU, each with and "
            "without QDQ propagation")
        forms = [(0, int8_model)]
        for k, prefix in enumerate(prefixes, 1):
            self.float_prefix = prefix
            forms.append((k, self.quantize()))
        self.float_prefix = []
        candidates, paths = [], []
        for k, model in forms:
            for disabled in ([], self._o.UNPROPAGATED):
                paths.append(self.work / f"speed-{k}{'-unpropagated' if disabled else ''}.onnx")
                paths[-1].write_bytes(self._o.with_disabled_optimizers(model, disabled) if disabled else model)
                candidates.append({"float_prefix_convs": k, "disabled_optimizers": list(disabled)})
        feed = next(iter(self.calib.ort_reader()))
        p50 = self._o.time_models([self.float_path, *paths], feed)
        fp32, times = p50[0], p50[1:]
        best = min(range(len(times)), key=times.__getitem__)
        if times[best] > self._o.PREFIX_GAIN * times[0]:
            best = 0
        chosen = candidates[best]
        self.float_prefix = prefixes[chosen["float_prefix_convs"] - 1] if chosen["float_prefix_convs"] else []
        self.disabled = chosen["disabled_optimizers"]
        self.speed = {"checked": True, **chosen, "p50_ms": {
            "fp32": round(fp32, 4), "int8": round(times[0], 4), "chosen": round(times[best], 4)},
            "candidates": [{**c, "p50_ms": round(t, 4)} for c, t in zip(candidates, times)]}
        return paths[best].read_bytes()

    def use_arch(self, arch: str | None) -> None:
        """Activation/weight types for this architecture's onnxruntime (quantize.onnx.quant_types)."""
        self.types = self._o.quant_types(arch)

    def settings(self) -> dict:
        return {**self.types.settings(), **({"speed_check": self.speed} if self.speed else {})}

    def runtime_warnings(self, int8_model: bytes) -> list[str]:
        """Quantized Conv/Add/MatMul/Mul/Gemm that onnxruntime's CPU provider leaves in float after optimising."""
        path = self.work / "fusion-check.onnx"
        path.write_bytes(int8_model)
        msg = self._o.fused_warning(path, self.types, self.work)
        return [m for m in (msg, self._slower_warning()) if m]

    def _slower_warning(self) -> str | None:
        """When even the fastest int8 form timed here lost to fp32 (a Paddle text classifier did: 3.12 vs 2.20 ms)."""
        times = (self.speed or {}).get("p50_ms")
        if not times or times["chosen"] < times["fp32"]:
            return None
        return (f"the int8 model is slower than fp32 on this CPU: p50 {times['chosen']:.2f} ms against "
                f"{times['fp32']:.2f} ms, the fastest of {len(self.speed['candidates'])} int8 forms timed; keep fp32 "
                "here, or bench int8 on the board, whose CPU may differ")

    def predictor(self, model: bytes) -> Predict:
        from edgecnn.frameworks.ort import predictor

        return predictor(model, layout=self.source.layout)

    def output_names(self, model: bytes) -> list[str]:
        from edgecnn.frameworks.ort import output_names

        return output_names(model)

    def sensitivity(self, int8_model: bytes, samples: int) -> dict[str, float]:
        qdq = self.work / "sensitivity-qdq.onnx"
        qdq.write_bytes(int8_model)
        return self._o.layer_sensitivity(self._pre, qdq, self.calib, self.work, samples)

    def short_name(self, layer: str) -> str:
        return self._o.short_name(layer)


class TFLiteFileSession(QuantizerBackend):
    """Full-integer TFLite of a model without a Keras source: an fp32 .tflite, or an ONNX export made TFLite
    by onnx2tf; quantized by ai-edge-quantizer (edgecnn.frameworks.convert), which works on .tflite files.

    One calibration method (min/max over the calibration images) and int8 model inputs/outputs; it keeps
    no layer in float on request, so --fallback has nothing to search here.
    """

    suffix = ".tflite"
    methods = (Method.MINMAX,)
    io_types = (IOType.INT8,)
    default_io = IOType.INT8

    def __init__(self, source, calib: CalibrationData, work: Path, per_channel: bool, method: str, io: str):
        from edgecnn.frameworks.litert import interpreter

        self.source, self.work, self.per_channel = source, work, per_channel
        if source.kind == "onnx":
            from edgecnn.frameworks.convert import onnx_to_tflite

            self.float_path = onnx_to_tflite(source.path, work / "onnx2tf", input_shape=source.static_shape,
                                             layout=source.layout)
        else:
            self.float_path = source.path
        name = interpreter(self.float_path).get_input_details()[0]["name"]
        self.calib = calib.renamed(name, layout="NHWC")  # LiteRT files take NHWC images, onnx2tf's too

    def export_float(self) -> bytes:
        return self.float_path.read_bytes()

    def use_method(self, method: str, percentile: float | None = None) -> None:
        if method != Method.MINMAX.value:
            raise EdgecnnError(f"ai-edge-quantizer calibrates {self.source.name} with min/max only, not {method}")

    def quantize(self, float_layers: Sequence[str] = ()) -> bytes:
        from edgecnn.frameworks.convert import quantize_tflite_int8

        if float_layers:
            raise EdgecnnError("the tflite backend keeps no layer of a .tflite/ONNX source in float; "
                               "use --backend onnx for --fallback")
        out = self.work / "int8.tflite"
        return quantize_tflite_int8(self.float_path, self.calib, out, self.per_channel).read_bytes()

    def predictor(self, model: bytes) -> Predict:
        from edgecnn.frameworks.litert import predictor

        return predictor(model)

    def output_names(self, model: bytes) -> list[str]:
        from edgecnn.frameworks.litert import output_names

        return output_names(model)

    def sensitivity(self, int8_model: bytes, samples: int) -> dict[str, float]:
        return {}  # no per-layer measurement for this path: reported as none, never invented


BACKENDS = {Backend.TFLITE.value: TFLiteSession, Backend.ONNX.value: ONNXSession}


def open_backend(backend: str, source, calib: CalibrationData, work: Path, per_channel: bool, method: str,
                 io: str, arch: str | None = None) -> QuantizerBackend:
    """The session for `backend` and this source: a file with no Keras source takes the .tflite file route.

    arch: the CPU architecture the int8 model is for (None: this machine's); see use_arch.
    """
    cls = BACKENDS[backend]
    if cls is TFLiteSession and source.keras_model is None:
        if source.kind == "tflite" and source.precision == "int8":
            raise ModelError(f"{source.ref} is already int8: there is nothing to quantize")
        if source.kind == "tflite" and source.precision != "fp32":
            raise ModelError(f"{source.ref} is {source.precision}, and ai-edge-quantizer takes fp32 .tflite files: "
                             "quantize it with --backend onnx (tf2onnx to an fp32 ONNX model, then QDQ int8)")
        cls = TFLiteFileSession
    if method not in {m.value for m in cls.methods} or io not in {t.value for t in cls.io_types}:
        raise EdgecnnError(f"the {backend} backend quantizes {source.name} (a {source.kind} file) with "
                           f"{'/'.join(m.value for m in cls.methods)} and {'/'.join(t.value for t in cls.io_types)} "
                           "inputs/outputs only")
    session = cls(source, calib, work, per_channel, method, io)
    session.use_arch(arch)
    return session


def check_options(backend: str, method: str, io: str | None) -> str:
    """EdgecnnError for a combination the backend cannot do; returns the io type to use."""
    if backend not in BACKENDS:
        raise EdgecnnError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if method not in {m.value for m in Method}:
        raise EdgecnnError(f"unknown calibration method {method!r}; known: {', '.join(m.value for m in Method)}")
    cls = BACKENDS[backend]
    if method not in {m.value for m in cls.methods}:
        raise EdgecnnError(f"the {backend} backend calibrates with {', '.join(m.value for m in cls.methods)} only, "
                           f"not {method}; use --backend onnx for {method}")
    io = io or cls.default_io.value
    if io not in {t.value for t in cls.io_types}:
        raise EdgecnnError(f"the {backend} backend writes QDQ models with float inputs/outputs; use --io float "
                           "(or --backend tflite for int8 inputs/outputs)")
    return io
