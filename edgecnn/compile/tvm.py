"""TVM backend (apache-tvm 0.27, Relax): a shared library for the target, run by TVM's Relax VM.

    Keras --tf2onnx--> ONNX --bind, onnxslim--> ONNX --relax.frontend.onnx--> IRModule --tvm.compile--> model.so
    Keras (--tune) --TFLite converter--> fp32 .tflite --relax.frontend.tflite--> IRModule (NHWC) --> tuned model.so

The module takes one NHWC float32 image (batch 1) and its weights are bound as
constants, so the runner calls `vm["main"](x)` and nothing else. Targets are
the dict form from targets/*.toml (0.27 rejects strings); host.toml's plain
llvm gets this machine's triple, CPU and core count. aarch64 libraries are
linked with the target's cross compiler; Jetson targets build CUDA kernels
for the GPU's sm_xx inside an aarch64 host library (NVRTC or nvcc, see cuda.py).
Untuned builds use TVM's default lowering; `--tune` applies a MetaSchedule
database (see tune.py). TVM has no int8 speed-up (quantized graphs import as
dequantize -> float op -> quantize), so int8 is refused here.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

from edgecnn.artifacts import TensorSpec, text_sha256
from edgecnn.compile.cache import tool_versions
from edgecnn.compile.job import Built, Compiler, Job
from edgecnn.errors import ModelError, ToolError
from edgecnn.kinds import Backend, Precision

MODEL_FILE = "model.so"
KERNELS_FILE = "kernels.cubin"  # CUDA bundles built without a GPU: see _cuda_build
INSTALL_CROSS = "sudo apt-get install g++-aarch64-linux-gnu (see tools/apt-packages.txt)"


def _cross(target) -> bool:
    """True when the library is linked for another machine's architecture (the board's)."""
    return not target.runs_natively


def check(job: Job) -> None:
    """Refuse what this backend cannot build, before any heavy work."""
    t = job.target
    if job.source.kind == "onnx" and job.source.precision == "int8":
        raise ModelError(f"{job.source.ref} is a quantized (QDQ) model; TVM would run it as float: use --backend onnx")
    if job.source.kind == "tflite":
        if job.source.precision != "fp32":
            raise ModelError(f"{job.source.ref} is {job.source.precision}; the tvm backend builds fp32 models: "
                             "use --backend tflite")
        try:
            import tflite  # noqa: F401 - TVM's TFLite frontend parses flatbuffers with it
        except ImportError:
            raise ToolError("TVM's TFLite frontend needs the `tflite` package: pip install tflite, or compile the "
                            "Keras/ONNX source instead") from None
    if _cross(t) and (not t.cross_compiler or shutil.which(t.cross_compiler) is None):
        raise ToolError(f"cross compiler {t.cross_compiler or '(none in the target file)'} not found, needed to "
                        f"link {t.arch} libraries for {t.name}: {INSTALL_CROSS}")
    if t.tvm.get("kind") == "cuda":
        from edgecnn.compile.cuda import find_toolchain

        try:
            find_toolchain(str(t.tvm.get("arch")))
        except ToolError as e:
            raise ToolError(f"{t.name} builds CUDA kernels for {t.tvm.get('arch')}: {e}; or use --backend onnx "
                            "(TensorRT on the board)") from None
    if job.tune:
        from edgecnn.compile.tune import check_tunable

        check_tunable(t)


def tvm_target_dict(target) -> dict:
    """The target's TVM dict, completed for the host: this machine's triple, CPU and core count."""
    d = dict(target.tvm)
    if target.is_host and d.get("kind") == "llvm":
        from tvm.target import codegen

        d.setdefault("mtriple", target.triple)  # LLVM's own default triple names its build (conda), not the OS
        d.setdefault("mcpu", codegen.llvm_get_system_cpu())
        d.setdefault("num-cores", target.cores)
    return d


def tools(job: Job) -> dict[str, str]:
    dists = ["apache-tvm", "apache-tvm-ffi", "onnx"]
    if job.source.kind == "keras":
        dists += ["tf2onnx", "tensorflow", "tensorflow-cpu", "onnxslim"]
    if job.source.kind == "tflite":
        dists.append("tflite")
    commands = [job.target.cross_compiler] if _cross(job.target) else []
    if job.target.tvm.get("kind") == "cuda":
        from edgecnn.compile.cuda import find_toolchain

        dists += ["cuda-bindings", "nvidia-cuda-nvrtc-cu12"]
        chain = find_toolchain(str(job.target.tvm.get("arch")))
        versions = tool_versions(dists, commands)
        versions[f"cuda ({chain.mode})"] = chain.version
        return versions
    return tool_versions(dists, commands)


def import_module(job: Job, work: Path):
    """The source as a Relax IRModule with static batch-1 input and bound weights; (mod, output names, graph).

    `graph` names what was imported. A tuned build of a Keras model imports its fp32 TFLite export
    (NHWC activations, HWIO/HWOI weights) instead of the NCHW tf2onnx export: MetaSchedule's x86 schedules
    vectorise along the innermost axis, which is the channels in NHWC and the row in NCHW, and MobileNetV2's
    7x7 and 14x14 layers have short rows. Single kernels of full-size MobileNetV2 tuned alike (64 trials each,
    Sapphire Rapids-class Xeon; `tools/nhwc_kernels.py`, two runs): NHWC/NCHW 0.42-0.59 for 1x1
    convolutions at 7x7, 0.69-0.88 for the stride-2 depthwise 96 at 112x112, 0.73-0.98 for 1x1 16->96 at
    112x112; NHWC never slower. Whole model there, 3,013 records: tuned TVM / TFLite 1.04 (NCHW: 1.46 at 4,461).
    The frontend also folds TFLite's SAME padding into each convolution (no explicit Pad).
    Untuned builds keep the ONNX route (TVM's default schedules, and the emulated baselines, are NCHW's).
    """
    src = job.source
    if src.kind == "tflite":
        return (*_from_tflite(src.path.read_bytes(), src), "tflite-nhwc")
    if src.kind == "keras" and job.tune:
        from edgecnn.compile.tune import TUNED_KERAS_GRAPH
        from edgecnn.frameworks.tf import tflite_float_batch1

        job.log(f"tvm: importing the batch-1 fp32 TFLite export of {src.name} into Relax (NHWC, for tuning)")
        try:
            mod, names = _from_tflite(tflite_float_batch1(src), src)
            # The converter may order a multi-output model's outputs otherwise (an SSD's boxes and scores);
            # the bundle keeps the Keras model's order, which verification and the decoders read.
            keras_shapes = [[1, *(int(d) for d in o.shape[1:])] for o in src.keras_model.outputs]
            if [spec.shape for spec in _output_specs(mod, names)] == keras_shapes:
                return mod, names, TUNED_KERAS_GRAPH
            job.log("tvm: the TFLite export orders the outputs otherwise than the Keras model; importing the "
                    "ONNX export (NCHW) instead")
        except ModelError as e:
            job.log(f"tvm: {e}; importing the ONNX export (NCHW) instead")
    import onnx

    if src.kind == "keras":
        from edgecnn.frameworks.tf import onnx_float

        job.log(f"tvm: exporting {src.name} to ONNX (tf2onnx)")
        path = onnx_float(src, work / "float.onnx")
    else:
        path = src.path  # intake has bound and simplified it already
    model = onnx.load(str(path))
    weights = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    if len(inputs) != 1:
        raise ModelError(f"{src.name} has {len(inputs)} inputs; edgecnn compiles single-input image models")
    if src.kind == "keras":
        from edgecnn.frameworks.onnx_graph import bind_and_simplify

        # Bound to batch 1 and simplified by onnxslim, as intake does for ONNX sources. Relax cannot take
        # tf2onnx's computed Reshape targets (Shape -> Concat) in some exports, and the explicit Pad that
        # tf2onnx puts before each stride-2 depthwise convolution would be fused into the producing conv's
        # kernel, whose MetaSchedule schedules in 0.27 mostly leave the padded border unwritten
        # (reject_wrong_schedules then keeps that kernel untuned); onnxslim folds it into the convolution.
        for note in bind_and_simplify(path, work / "simplified.onnx", src.static_shape):
            job.log(f"tvm: {note}")
        model = onnx.load(str(work / "simplified.onnx"))
    from tvm.relax.frontend.onnx import from_onnx

    job.log("tvm: importing the ONNX graph into Relax")
    shape = {inputs[0].name: src.static_shape}
    mod = _imported(lambda: from_onnx(model, shape_dict=shape), src.name, "ONNX")
    return mod, [o.name for o in model.graph.output], "onnx-nchw"


def _from_tflite(data: bytes, src):
    import tflite
    from tvm.relax.frontend.tflite import from_tflite

    model = tflite.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    name = graph.Tensors(graph.Inputs(0)).Name().decode()
    outputs = [graph.Tensors(graph.Outputs(i)).Name().decode() for i in range(graph.OutputsLength())]
    mod = _imported(lambda: from_tflite(model, shape_dict={name: tuple(src.static_shape)},
                                        dtype_dict={name: "float32"}), src.name, "TFLite")
    return mod, outputs


def _imported(convert, name: str, frontend: str):
    """Run a frontend; its failures become one ModelError that names the op when TVM says which."""
    import tvm

    try:
        return convert()
    except tvm.error.OpNotImplemented as e:
        raise ModelError(f"TVM cannot import {name}: {_first_line(e)} (Relax {frontend} frontend of apache-tvm "
                         f"{tvm.__version__}); use --backend tflite or onnx") from None
    except (tvm.error.OpError, NotImplementedError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise ModelError(f"TVM's {frontend} frontend failed on {name}: {type(e).__name__}: {_first_line(e)}; "
                         "use --backend tflite or onnx") from None


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # TVM errors end with the useful line after a C++ traceback.
    msg = next((ln for ln in reversed(lines) if "Error" in ln or "not supported" in ln), lines[-1] if lines else "")
    return msg[:300] or type(e).__name__


def build(job: Job, out: Path, work: Path) -> Built:
    """Compile and link model.so into `out` for the job's target (tuned when job.tune)."""
    import tvm

    mod, output_names, graph = import_module(job, work)
    target = tvm.target.Target(tvm_target_dict(job.target))
    info: dict = {"tvm_target": tvm_target_dict(job.target), "graph": graph}
    kernels = None
    job.log(f"tvm: building for {job.target.name} ({target.kind.name})")
    try:
        if job.tune:
            from edgecnn.compile.tune import tuned_build

            executable, info["tuning"] = tuned_build(job, mod, target, info["tvm_target"])
        elif target.kind.name == "cuda":
            executable, kernels = _cuda_build(mod, target, job.target)
        else:
            executable = tvm.compile(mod, target)
    except (RuntimeError, AssertionError) as e:  # TVM errors are RuntimeErrors; dlight asserts on schedules
        raise _build_error(e, job.target) from None
    path = out / MODEL_FILE
    try:
        if _cross(job.target):
            executable.export_library(str(path), fcompile=tvm.support.cc.cross_compiler(job.target.cross_compiler))
        else:
            executable.export_library(str(path))
    except (RuntimeError, OSError) as e:
        raise ToolError(f"linking {MODEL_FILE} for {job.target.name} failed: {_first_line(e)}") from None
    inputs = [TensorSpec("input", job.source.static_shape, "float32", job.source.layout)]
    outputs = _output_specs(mod, output_names)
    options = {"device": "cuda" if target.kind.name == "cuda" else "cpu", "entry": "main",
               "threads": job.target.cores}
    files = {"model": MODEL_FILE}
    if kernels is not None:
        (out / KERNELS_FILE).write_bytes(kernels["cubin"])
        files["kernels"] = KERNELS_FILE
        options["cuda_kernels"] = {"file": KERNELS_FILE, "arch": str(job.target.tvm.get("arch")),
                                   "source_sha256": kernels["source_sha256"]}
    return Built(files, inputs, outputs, options, tools(job), info)


def _cuda_build(mod, target, board):
    """(executable, kernels): CUDA kernels for the board's sm_xx plus a host library for its CPU.

    The default GPU pipeline's dlight Matmul rule asserts on MobileNet's fused
    1x1 convolutions in 0.27, so the other default rules schedule everything.
    Where TVM's CUDA runtime is not loaded (a PC without a GPU, i.e. every
    cross-compile), 0.27's codegen keeps the generated CUDA C in the library
    and expects the receiver to compile it when it loads the module
    (tvm_callback_cuda_compile, NVRTC on the board). edgecnn compiles that
    source here instead, with the same TVM function, for the board's sm_xx:
    errors show up on the PC, and the bundle carries the cubin (kernels: its
    bytes and the sha256 of the source it was built from), which the runner
    hands to TVM when it loads the library, so the board needs only the CUDA
    driver and TVM's runtime. Where the runtime is loaded, TVM compiles
    through the callback during the build and the cubin is inside model.so
    (kernels: None).
    """
    import tvm
    import tvm.support.nvcc as nvcc
    import tvm_ffi
    from tvm import relax
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.s_tir import dlight as dl

    from edgecnn.compile.cuda import find_toolchain

    name = "tvm_callback_cuda_compile"
    original, compiled = tvm_ffi.get_global_func(name), []
    arch = str(board.tvm.get("arch"))
    chain = find_toolchain(arch)

    def compile_source(code: str) -> bytes:
        try:
            with target:  # TVM's nvcc path reads the compute version from the current target
                return bytes(nvcc.compile_cuda(code, target_format="cubin", arch=arch, compiler=chain.mode))
        except Exception as e:  # noqa: BLE001 - whatever NVRTC/nvcc raise, the user needs its message
            raise ToolError(f"compiling CUDA kernels for {board.name} ({arch}) with {chain.mode} "
                            f"{chain.version} failed: {_first_line(e)}; the CUDA version must support {arch} "
                            "(CUDA 13 dropped sm_50..sm_72)") from None

    def compile_kernels(code, *_):
        binary = compile_source(str(code))
        compiled.append(len(binary))
        return binary

    @tvm.transform.module_pass(opt_level=0)
    def pipeline(m, _ctx):
        with target:
            return tvm.transform.Sequential(
                cuda.library_dispatch_passes(target)
                + [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                   relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
                   dl.ApplyDefaultSchedule(dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                                           dl.gpu.Fallback())]
                + cuda.dataflow_lower_passes(target) + cuda.finalize_passes(target))(m)

    env = chain.environ()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    tvm_ffi.register_global_func(name, compile_kernels, override=True)
    try:
        executable = tvm.compile(mod, target, relax_pipeline=pipeline)
        if compiled:
            return executable, None
        sources = [m for m in _module_tree(executable.mod) if m.kind == "cuda"]
        if len(sources) != 1:
            raise ToolError(f"TVM built {len(sources)} CUDA modules for {board.name}; expected one")
        code = sources[0].inspect_source("cuda")
        if not code:
            raise ToolError(f"TVM left no CUDA source or binary for {board.name}; refusing to bundle a GPU "
                            "library that cannot load; use --backend onnx (TensorRT) for Jetson")
        return executable, {"cubin": compile_source(code), "source_sha256": text_sha256(code)}
    finally:
        tvm_ffi.register_global_func(name, original, override=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _module_tree(module) -> list:
    """A runtime module and everything it imports, depth first (Relax: VM executable -> host lib -> cuda)."""
    out, stack = [], [module]
    while stack:
        m = stack.pop()
        out.append(m)
        stack.extend(m.imports)
    return out


def _build_error(e: Exception, target) -> Exception:
    text = str(e)
    if target.tvm.get("kind") == "cuda" and ("nvcc" in text or "arch" in text.lower()):
        return ToolError(f"CUDA build for {target.name} ({target.tvm.get('arch')}) failed in nvcc: {_first_line(e)}; "
                         "the installed CUDA toolkit may not support this GPU (CUDA 13 dropped sm_50..sm_72)")
    return ModelError(f"TVM could not build the model for {target.name}: {_first_line(e)}")


def _output_specs(mod, names: list[str]) -> list[TensorSpec]:
    from tvm import relax

    ret = mod["main"].ret_ty  # 0.27 renamed StructInfo to types: TensorType or TupleType
    infos = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    if len(names) != len(infos):
        names = [f"output_{i}" for i in range(len(infos))]
    specs = []
    for name, si in zip(names, infos):
        shape = [int(d) for d in si.shape.values]
        specs.append(TensorSpec(name, shape, str(si.dtype), "NHWC" if len(shape) == 4 else ""))
    return specs


def host_runner(bundle_dir: Path, built: Built):
    """model.so loaded into this process (host-arch CPU bundles only)."""
    import tvm
    from tvm import relax

    from edgecnn.runner.tensors import to_layout

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(bundle_dir / built.files["model"])), tvm.cpu())
    layout = built.inputs[0].layout

    def run(batch: np.ndarray) -> list[np.ndarray]:
        batch = to_layout(np.asarray(batch), layout)  # NHWC images, as verification and the runner give them
        results = []
        for i in range(len(batch)):
            y = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(batch[i:i + 1], np.float32)))
            results.append([y.numpy()] if hasattr(y, "numpy") else [o.numpy() for o in y])
        return [np.concatenate([r[k] for r in results]) for k in range(len(results[0]))]

    return run


def emulated_runner(bundle_dir: Path, built: Built, target):
    """model.so run by the guest's TVM runtime under qemu with the target's core."""
    from edgecnn.emulate.run import run_python
    from edgecnn.paths import work_dir

    from edgecnn.runner.tensors import to_layout

    def run(batch: np.ndarray) -> list[np.ndarray]:
        batch = to_layout(np.asarray(batch), built.inputs[0].layout)
        with work_dir("tvm-verify") as tmp:
            np.save(Path(tmp) / "images.npy", np.ascontiguousarray(batch, np.float32))
            # A copy, not the file itself: run from this folder, `import tvm` would find this module.
            script = Path(tmp) / "run_tvm.py"
            shutil.copyfile(Path(__file__).with_name("tvm_guest.py"), script)
            args = [str((bundle_dir / built.files["model"]).resolve()), "images.npy", "outputs.npz"]
            run_python(target, script, args, what=f"{MODEL_FILE} (tvm)", timeout=600, cwd=Path(tmp))
            with np.load(Path(tmp) / "outputs.npz", allow_pickle=False) as npz:
                return [npz[f"arr_{i}"] for i in range(len(npz.files))]

    return run


def runner_for(bundle_dir: Path, built: Built, target) -> tuple[str, object | None, str]:
    """(mode, run, reason): where this bundle can be checked from here."""
    if built.backend_options["device"] == "cuda":
        return "skipped", None, f"CUDA library for {target.tvm.get('arch')}: needs the Jetson's GPU to run"
    if target.runs_natively:
        return "host", host_runner(bundle_dir, built), ""
    from edgecnn.compile.verify import emulator_ready

    if target.can_emulate:
        reason = emulator_ready(target)
        if reason is None:
            return "emulated", emulated_runner(bundle_dir, built, target), ""
        return "skipped", None, reason
    return "skipped", None, f"no way to run {target.arch} code here"


class TvmCompiler(Compiler):
    """Apache TVM (Relax) shared libraries, cross-compiled per target; fp32 only."""

    name = Backend.TVM.value
    precisions = (Precision.FP32.value,)
    formats = ("keras", "onnx", "tflite")
    precision_advice = {
        Precision.INT8.value: "the tvm backend gives no int8 (TVM 0.27 runs quantized graphs as float ops); for "
                              "int8 use --backend tflite (XNNPACK) or --backend onnx (onnxruntime)",
        Precision.FP16.value: "the tvm backend builds fp32 only; for fp16 weights use --backend tflite"}

    def key_parts(self, job: Job) -> dict:
        """The completed TVM target (the host's CPU is part of what gets built) and, when tuning, the database."""
        parts: dict = {"tvm_target": tvm_target_dict(job.target)}
        if job.tune:
            from edgecnn.compile.tune import database_state, tuning_dir

            folder = tuning_dir(job.source, parts["tvm_target"])
            parts["tuning"] = {"trials": job.trials, "database": database_state(folder)}
        return parts

    def runner(self, folder: Path, built: Built, target):
        return runner_for(folder, built, target)


COMPILER = TvmCompiler(sys.modules[__name__])
