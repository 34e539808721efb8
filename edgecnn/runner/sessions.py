"""One inference session per backend, behind a small registry: what runs a bundle's model file.

    session = open_session(load_bundle("build/a72/mobilenet_v2-int8-tflite"), threads=4)
    outputs = session(batch)               # float in, float out
    session.feed(batch); session.invoke(); session.fetch()   # the same, in the steps bench times

Every session takes the inputs as floats (or already in the model's integer
type) and gives float outputs: int8/uint8 tensors are quantized and dequantized
here with the manifest's scale and zero point. Image inputs are always given
NHWC, as edgecnn.data.preprocess makes them; a model that wants NCHW (its
TensorSpec says so) gets them transposed here.

This module runs on the board, and inside the aarch64 guest for emulated
counts: it imports the standard library and numpy at import time, and the one
runtime a bundle needs only when a session for it is opened. Never TensorFlow.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import ClassVar

import numpy as np

from edgecnn.artifacts import Bundle, TensorSpec, text_sha256
from edgecnn.errors import DataError, ModelError
from edgecnn.kinds import Backend
from edgecnn.runner.tensors import per_image, to_float, to_integer
from edgecnn.targets import host_arch

RUNNER_HINT = "pip install 'edgecnn[runner]'"


class MissingRuntime(ModelError):
    """The runtime a bundle needs is not installed on this machine."""

    def __init__(self, package: str, hint: str = RUNNER_HINT):
        super().__init__(f"this bundle needs {package}: {hint}")
        self.package = package


class Session:
    """Base class: input/output conversion shared by every backend; subclasses load and invoke."""

    backend: ClassVar[str]

    def __init__(self, bundle: Bundle, threads: int | None = None):
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.threads = resolve_threads(bundle, threads)
        if len(self.manifest.inputs) == 0:
            raise ModelError(f"bundle {bundle.path}: the manifest lists no inputs")

    # --- what a backend implements -------------------------------------------------
    def _set_inputs(self, arrays: list[np.ndarray]) -> None:
        raise NotImplementedError

    def invoke(self) -> None:
        """Run the model once on the inputs last fed (the step bench times and emulation counts)."""
        raise NotImplementedError

    def _raw_outputs(self) -> list[np.ndarray]:
        raise NotImplementedError

    def _runtime_quantization(self, kind: str, index: int) -> tuple[float, int] | None:
        """(scale, zero_point) the runtime reports for a tensor, when the manifest has none."""
        return None

    # --- shared --------------------------------------------------------------------
    def feed(self, *inputs: np.ndarray) -> None:
        """Set the model inputs (one array per manifest input, NHWC for images)."""
        specs = self.manifest.inputs
        if len(inputs) != len(specs):
            raise DataError(f"the model takes {len(specs)} input(s), got {len(inputs)}")
        self._set_inputs([self._to_model(i, spec, x) for i, (spec, x) in enumerate(zip(specs, inputs))])

    def fetch(self) -> list[np.ndarray]:
        """The outputs of the last invoke, as float32 (int8 outputs dequantized)."""
        raw = self._raw_outputs()
        return [self._to_float(i, spec, y) for i, (spec, y) in enumerate(zip(self.manifest.outputs, raw))]

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        self.feed(*inputs)
        self.invoke()
        return self.fetch()

    def _quantization(self, kind: str, index: int, spec: TensorSpec) -> tuple[float, int]:
        if spec.scale is not None and spec.zero_point is not None:
            return float(spec.scale), int(spec.zero_point)
        found = self._runtime_quantization(kind, index)
        if found is None or not found[0]:
            raise ModelError(f"manifest: {kind} {spec.name!r} is {spec.dtype} but has no scale/zero_point")
        return float(found[0]), int(found[1])

    def _to_model(self, index: int, spec: TensorSpec, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        given = tuple(x.shape)
        if spec.layout == "NCHW" and x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)
        if x.ndim != len(spec.shape) or any(s not in (-1, d) for s, d in zip(spec.shape, x.shape)):
            nhwc = " (images are given NHWC)" if spec.layout == "NCHW" else ""
            raise DataError(f"input {spec.name!r}: got shape {given}, the model takes "
                            f"{tuple(spec.shape)} {spec.layout}{nhwc}".rstrip())
        want = np.dtype(spec.dtype)
        if want.kind in "iu" and x.dtype != want:
            if x.dtype.kind != "f":
                raise DataError(f"input {spec.name!r}: got {x.dtype}, the model takes {want} or float")
            x = to_integer(x, want, *self._quantization("input", index, spec))
        return np.ascontiguousarray(x, dtype=want)

    def _to_float(self, index: int, spec: TensorSpec, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if y.dtype.kind in "iu" and np.dtype(spec.dtype).kind in "iu":
            return to_float(y, *self._quantization("output", index, spec))
        return y.astype(np.float32, copy=False)


def resolve_threads(bundle: Bundle, threads: int | None) -> int:
    """The thread count: the caller's, else the manifest's backend option, else every core."""
    value = threads if threads is not None else bundle.manifest.backend_options.get("threads")
    if value is None:
        value = os.cpu_count() or 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"threads must be a positive integer, got {value!r}")
    return value


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class TFLiteSession(Session):
    """ai-edge-litert's Interpreter; XNNPACK (the default delegate) unless backend_options.delegate is "none"."""

    backend = Backend.TFLITE

    def __init__(self, bundle: Bundle, threads: int | None = None):
        super().__init__(bundle, threads)
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
        except ImportError:
            raise MissingRuntime("ai-edge-litert") from None
        delegate = str(self.manifest.backend_options.get("delegate", "xnnpack")).lower()
        if delegate not in ("xnnpack", "none"):
            raise ModelError(f"manifest: backend_options.delegate {delegate!r} is not supported (xnnpack or none)")
        resolver = OpResolverType.AUTO if delegate == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        path = bundle.file("model")
        try:
            self._it = Interpreter(model_path=str(path), num_threads=self.threads,
                                   experimental_op_resolver_type=resolver)
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"LiteRT cannot load {path}: {_first_line(e)}") from None
        self._in = self._it.get_input_details()
        self._out = self._it.get_output_details()
        _check_count(bundle, len(self._in), len(self._out))
        for spec, det in zip(self.manifest.inputs + self.manifest.outputs, self._in + self._out):
            if np.dtype(det["dtype"]) != np.dtype(spec.dtype):
                raise ModelError(f"manifest says {spec.name!r} is {spec.dtype}, the model file has "
                                 f"{np.dtype(det['dtype'])}")

    def _runtime_quantization(self, kind, index):
        return (self._in if kind == "input" else self._out)[index]["quantization"]

    def _set_inputs(self, arrays):
        for det, x in zip(self._in, arrays):
            if tuple(det["shape"]) != x.shape:  # a free dimension (batch) given another size
                self._it.resize_tensor_input(det["index"], list(x.shape))
                self._it.allocate_tensors()
                self._in = self._it.get_input_details()
                self._out = self._it.get_output_details()
            self._it.set_tensor(det["index"], x)

    def invoke(self):
        self._it.invoke()

    def _raw_outputs(self):
        return [self._it.get_tensor(d["index"]) for d in self._out]


def _ort_errors() -> tuple[type[BaseException], ...]:
    # onnxruntime's own errors (InvalidProtobuf, Fail, ...) derive from Exception, not RuntimeError.
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    own = tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))
    return own + (RuntimeError, ValueError)


class OnnxSession(Session):
    """onnxruntime's InferenceSession with the manifest's execution provider, intra-op threads and the graph
    optimisers the model runs without."""

    backend = Backend.ONNX

    def __init__(self, bundle: Bundle, threads: int | None = None):
        super().__init__(bundle, threads)
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingRuntime("onnxruntime") from None
        provider = self.manifest.backend_options.get("execution_provider", "CPUExecutionProvider")
        available = ort.get_available_providers()
        if provider not in available:
            raise ModelError(f"this bundle needs onnxruntime's {provider}; this onnxruntime has "
                             f"{', '.join(available)}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # warnings about unused initializers are noise on every load
        path = bundle.file("model")
        try:
            self._sess = ort.InferenceSession(str(path), opts, providers=[provider], disabled_optimizers=list(
                self.manifest.backend_options.get("disabled_optimizers", [])))
        except _ort_errors() as e:
            raise ModelError(f"onnxruntime cannot load {path}: {_first_line(e)}") from None
        names = [i.name for i in self._sess.get_inputs()]
        out_names = [o.name for o in self._sess.get_outputs()]
        _check_count(bundle, len(names), len(out_names))
        for spec in self.manifest.inputs + self.manifest.outputs:
            if spec.name not in names + out_names:
                raise ModelError(f"manifest names tensor {spec.name!r}, the model has {names + out_names}")
        self._out_names = [s.name for s in self.manifest.outputs]
        self._feed: dict[str, np.ndarray] = {}
        self._result: list[np.ndarray] = []

    def _set_inputs(self, arrays):
        self._feed = {spec.name: x for spec, x in zip(self.manifest.inputs, arrays)}

    def invoke(self):
        self._result = self._sess.run(self._out_names, self._feed)

    def _raw_outputs(self):
        return list(self._result)


class TvmSession(Session):
    """A TVM Relax library (model.so) through tvm.runtime.vm.VirtualMachine; entry function "main".

    The runtime alone is enough (TVM_USE_RUNTIME_LIB=1 or a wheel without libtvm_compiler.so).
    """

    backend = Backend.TVM

    def __init__(self, bundle: Bundle, threads: int | None = None):
        super().__init__(bundle, threads)
        if self.manifest.arch != host_arch():
            raise ModelError(f"bundle {bundle.path.name} holds {self.manifest.arch} code and this machine is "
                             f"{host_arch()}: run it on the board, or emulated")
        version = self.manifest.tools.get("apache-tvm")
        try:
            import tvm
            import tvm.runtime
            import tvm.runtime.vm
        except ImportError:
            pin = f"=={version}" if version else ""
            raise MissingRuntime("apache-tvm", f"pip install 'apache-tvm{pin}'") from None
        device = self.manifest.backend_options.get("device", "cpu")
        if device not in ("cpu", "cuda"):
            raise ModelError(f"manifest: backend_options.device {device!r} is not supported (cpu or cuda)")
        self._tvm = tvm
        if device == "cuda":
            _load_tvm_cuda(tvm)
        self._dev = tvm.runtime.cpu() if device == "cpu" else tvm.runtime.cuda()
        if device == "cuda" and not self._dev.exist:
            raise ModelError(f"bundle {bundle.path.name} runs on a CUDA GPU ({self.manifest.target}) and none is "
                             "visible here (driver not loaded, or CUDA_VISIBLE_DEVICES hides it)")
        self._sync = device != "cpu"  # a GPU run is asynchronous until synced
        config = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
        if config is not None and device == "cpu":
            config(1, self.threads)  # 1: TVM's "big cores" mode, the default; nthreads as asked
        path = bundle.file("model")
        kernels = self.manifest.backend_options.get("cuda_kernels")
        try:
            with _serving_cuda_kernels(bundle, kernels):
                self._vm = tvm.runtime.vm.VirtualMachine(tvm.runtime.load_module(str(path)), self._dev)
            self._fn = self._vm[self.manifest.backend_options.get("entry", "main")]
        except (RuntimeError, ValueError, AttributeError, OSError) as e:
            raise ModelError(f"the TVM runtime cannot load {path}: {_first_line(e)}") from None
        self._args: list = []
        self._result = None

    def _set_inputs(self, arrays):
        self._args = [self._tvm.runtime.tensor(x, self._dev) for x in arrays]

    def invoke(self):
        self._result = self._fn(*self._args)
        if self._sync:
            self._dev.sync()

    def _raw_outputs(self):
        out = self._result
        items = [out] if hasattr(out, "numpy") else list(out)
        if len(items) != len(self.manifest.outputs):
            raise ModelError(f"the TVM module gave {len(items)} output(s), the manifest lists "
                             f"{len(self.manifest.outputs)}")
        return [t.numpy() for t in items]


def _load_tvm_cuda(tvm) -> None:
    """Make sure TVM's CUDA runtime is registered; the wheel keeps it in a side library loaded on demand."""
    if tvm.get_global_func("device_api.cuda", allow_missing=True) is not None:
        return
    import ctypes
    from pathlib import Path

    lib = Path(tvm.__file__).resolve().parent / "lib" / "libtvm_runtime_cuda.so"
    error = "it is not in this TVM installation"
    if lib.exists():
        try:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        except OSError as e:  # libcudart/libcuda missing: the message names the one
            error = str(e).splitlines()[0]
    if tvm.get_global_func("device_api.cuda", allow_missing=True) is None:
        raise MissingRuntime("TVM's CUDA runtime", f"{error}; install the CUDA runtime (libcudart) and driver, or a "
                             "TVM runtime built with USE_CUDA=ON (on a Jetson, TVM's runtime built from source)")


@contextmanager
def _serving_cuda_kernels(bundle: Bundle, kernels: dict | None):
    """While TVM loads a CUDA library built without a GPU, hand it the bundled cubin for the source it holds.

    Such a library keeps its kernels as CUDA C and TVM compiles them when it
    loads the module, through the global `tvm_callback_cuda_compile` (NVRTC).
    The bundle already holds them compiled for the board (kernels.cubin, with
    the sha256 of the source); inside this block that callback returns the cubin
    for exactly that source, so the board needs no NVRTC. Any other source is an
    error, never a silent recompile. The previous callback is put back after.
    """
    if not kernels:
        yield
        return
    import tvm_ffi

    name = "tvm_callback_cuda_compile"
    cubin = bundle.file("kernels").read_bytes()
    expected = kernels.get("source_sha256", "")

    def compiled(code, *_):
        if text_sha256(str(code)) != expected:
            raise RuntimeError(f"{bundle.path.name}: model.so holds CUDA source that {kernels.get('file')} was not "
                               "built from; rebuild the bundle")
        return cubin

    previous = tvm_ffi.get_global_func(name, allow_missing=True)
    tvm_ffi.register_global_func(name, compiled, override=True)
    try:
        yield
    finally:
        if previous is not None:
            tvm_ffi.register_global_func(name, previous, override=True)


class NcnnSession(Session):
    """ncnn's Net on the CPU (model.ncnn.param/.bin): threads, light mode and fp16 switches from backend_options.

    ncnn runs one image without a batch axis: each input is given with batch 1
    and fed without it, and each output gets its batch axis back, shaped as the
    manifest says, so it compares with the source model's. fp16 storage or
    arithmetic is used only when the manifest allows it (ncnn's own defaults
    would turn both on wherever the CPU has them). int8 inference stays on
    (ncnn's default): it only acts on layers whose .param asks for int8, and
    ncnn refuses to load int8 weights without it.
    """

    backend = Backend.NCNN

    def __init__(self, bundle: Bundle, threads: int | None = None):
        super().__init__(bundle, threads)
        try:
            import ncnn
        except ImportError:
            raise MissingRuntime("ncnn") from None
        self._ncnn = ncnn
        opts = self.manifest.backend_options
        self._net = ncnn.Net()
        o = self._net.opt
        o.num_threads = self.threads
        o.lightmode = bool(opts.get("light_mode", True))
        o.use_fp16_storage = bool(opts.get("fp16_storage", False))
        o.use_fp16_packed = bool(opts.get("fp16_packed", False))
        o.use_fp16_arithmetic = bool(opts.get("fp16_arithmetic", False))
        o.use_bf16_storage = False
        o.use_vulkan_compute = False
        o.use_int8_inference = bool(opts.get("int8_inference", True))
        param, weights = bundle.file("param"), bundle.file("bin")
        if self._net.load_param(str(param)) != 0 or self._net.load_model(str(weights)) != 0:
            raise ModelError(f"ncnn cannot load {param.name} / {weights.name} in {bundle.path}")
        blobs = list(self._net.input_names()), list(self._net.output_names())
        _check_count(bundle, len(blobs[0]), len(blobs[1]))
        for spec in self.manifest.inputs + self.manifest.outputs:
            if spec.name not in blobs[0] + blobs[1]:
                raise ModelError(f"manifest names blob {spec.name!r}, the ncnn model has {blobs[0] + blobs[1]}")
        self._feed: list = []
        self._result: list = []

    def _set_inputs(self, arrays):
        # The arrays are kept next to their Mats: a Mat may point into an array's memory.
        images = [np.ascontiguousarray(x[0], np.float32) for x in arrays]
        self._feed = [(spec.name, x, self._ncnn.Mat(x)) for spec, x in zip(self.manifest.inputs, images)]

    def invoke(self):
        ex = self._net.create_extractor()
        for name, _, mat in self._feed:
            ex.input(name, mat)
        result = []
        for spec in self.manifest.outputs:
            ret, mat = ex.extract(spec.name)  # ncnn computes lazily: this runs the layers up to the blob
            if ret != 0:
                raise ModelError(f"ncnn failed computing output {spec.name!r} (code {ret})")
            result.append(mat)
        self._result = result

    def _raw_outputs(self):
        outs = []
        for spec, mat in zip(self.manifest.outputs, self._result):
            y = np.array(mat, dtype=np.float32)
            shape = [1 if d == -1 else d for d in spec.shape]
            outs.append(y.reshape(shape) if int(np.prod(shape)) == y.size else y[None])
        return outs


def _check_count(bundle: Bundle, inputs: int, outputs: int) -> None:
    m = bundle.manifest
    if inputs != len(m.inputs) or outputs != len(m.outputs):
        raise ModelError(f"bundle {bundle.path}: the manifest lists {len(m.inputs)} input(s) and "
                         f"{len(m.outputs)} output(s), the model file has {inputs} and {outputs}")


# The registry: a new backend is one Session subclass and one line here.
SESSIONS: dict[Backend, type[Session]] = {
    Backend.TFLITE: TFLiteSession,
    Backend.ONNX: OnnxSession,
    Backend.TVM: TvmSession,
    Backend.NCNN: NcnnSession,
}


def open_session(bundle: Bundle, threads: int | None = None) -> Session:
    """The session for a bundle's backend, loaded and ready to feed."""
    try:
        cls = SESSIONS[bundle.manifest.backend]
    except KeyError:
        raise ModelError(f"no runner for backend {bundle.manifest.backend!r} "
                         f"(known: {', '.join(SESSIONS)})") from None
    return cls(bundle, threads)


def predict(session: Session, batch: np.ndarray) -> list[np.ndarray]:
    """Run a batch of any size: in one call where the batch dimension is free, else image by image."""
    fixed = session.manifest.inputs[0].shape[0]
    if fixed in (-1, len(batch)):
        return session(batch)
    if fixed != 1:
        raise DataError(f"the model takes batches of {fixed}, got {len(batch)}")
    return per_image(session, batch)


__all__ = ["MissingRuntime", "NcnnSession", "OnnxSession", "SESSIONS", "Session", "TFLiteSession", "TvmSession",
           "open_session", "predict", "resolve_threads"]
