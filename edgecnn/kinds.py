"""The closed sets of edgecnn, declared once.

Every stage, the manifest, the target schema and the CLI take their choices
from here (docs/architecture.md, "Closed sets"), so help texts, validation and
the files on disk cannot drift apart. Standard library only: the board-side
runner and `edgecnn --help` import it.

Each set is a `str` Enum, so a member compares equal to its value and goes into
JSON as it is.
"""

from __future__ import annotations

from enum import Enum


class Kind(str, Enum):
    """Base: `values()` for click.Choice and error messages, `parse()` for checked conversion."""

    @classmethod
    def values(cls) -> list[str]:
        return [m.value for m in cls]

    @classmethod
    def parse(cls, text: str, what: str | None = None):
        """The member named `text`; ValueError naming the known values otherwise."""
        try:
            return cls(str(text).strip().lower())
        except ValueError:
            label = what or cls.__name__.lower()
            raise ValueError(f"unknown {label} {text!r}; choose from {', '.join(cls.values())}") from None

    def __str__(self) -> str:
        return self.value


class Backend(Kind):
    """A compiler plus the runtime that runs its artifact; the order in a target file is its preference."""

    TFLITE = "tflite"
    ONNX = "onnx"
    TVM = "tvm"
    NCNN = "ncnn"


# Backends whose artifact is the same bytes on every machine (a .tflite, .onnx, ncnn .param/.bin): it can be run
# on the PC for accuracy and fidelity exactly as the board runs it. TVM libraries are built per machine.
PORTABLE_BACKENDS = frozenset({"tflite", "onnx", "ncnn"})


class Precision(Kind):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Task(Kind):
    """What a model's outputs mean, which decides how it is scored."""

    CLASSIFICATION = "classification"
    DETECTION = "detection"
    # Anything else (segmentation maps, landmarks, embeddings, raw outputs): timed, and compared with the
    # source model output by output; no accuracy metric is made up for it.
    GENERIC = "generic"

    @classmethod
    def parse(cls, text: str, what: str | None = None):
        """Also takes the names of tasks edgecnn scores as generic (segmentation, landmarks, embedding, ...)."""
        word = str(text).strip().lower()
        return cls.GENERIC if word in GENERIC_TASK_NAMES else super().parse(word, what)


# Task names users and exporters write (Ultralytics' segment/pose, MediaPipe's landmarks) that are generic here.
GENERIC_TASK_NAMES = ("segmentation", "segment", "landmarks", "pose", "embedding", "raw", "other", "ocr",
                      "recognition", "text_recognition", "text_detection")


class Arch(Kind):
    AARCH64 = "aarch64"
    X86_64 = "x86_64"
    NATIVE = "native"  # host.toml: resolved to this machine's architecture at load time


class QuantMethod(Kind):
    """How activation ranges are calibrated."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class QuantBackend(Kind):
    """Backends that edgecnn.quantize writes int8 models for."""

    TFLITE = "tflite"
    ONNX = "onnx"


class IOType(Kind):
    """Input/output type of a quantized model."""

    INT8 = "int8"
    FLOAT = "float"


class PruneMethod(Kind):
    CHANNEL = "channel"  # structured: whole channels removed, faster everywhere
    MAGNITUDE = "magnitude"  # unstructured sparsity: smaller files, no dense speed-up


class PruneImportance(Kind):
    L1 = "l1"
    L2 = "l2"
    BN = "bn"


class PruneScope(Kind):
    GLOBAL = "global"
    LAYER = "layer"


class BenchMode(Kind):
    NATIVE = "native"
    EMULATED = "emulated"
    SSH = "ssh"


class OutputFormat(Kind):
    """What the describing commands (targets, zoo, quantize, compile, prune) print."""

    TABLE = "table"
    JSON = "json"


class ReportFormat(Kind):
    """What `edgecnn bench` prints or writes."""

    TABLE = "table"
    JSON = "json"
    MD = "md"
    CSV = "csv"
