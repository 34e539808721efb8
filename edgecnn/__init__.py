"""edgecnn: take a trained CNN to an ARM board or embedded accelerator, with proof.

load -> prune -> quantize (int8) -> compile (TFLite | TVM | ONNX) -> bundle -> run / bench -> report

Heavy frameworks (TensorFlow, TVM, ONNX Runtime) are imported only inside the
functions that need them, so importing edgecnn and `edgecnn --help` stay fast.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("edgecnn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

from edgecnn.errors import EdgecnnError  # noqa: E402

__all__ = ["EdgecnnError", "__version__", "quantize"]


def __getattr__(name: str):
    # PEP 562: `edgecnn.quantize(...)` without importing the quantization stack on `import edgecnn`.
    if name == "quantize":
        from edgecnn.quantize import quantize

        return quantize
    raise AttributeError(f"module 'edgecnn' has no attribute {name!r}")
