"""ncnn int8 made here: what ncnn2table and ncnn2int8 do, which neither the ncnn nor the pnnx wheel ships.

    table = calibrate(param, bin, images, "in0")      # int8 scales of each quantizable layer's input
    quantize_model(param, bin, table, out_param, out_bin)

ncnn's int8 *inference* is in the wheel: a Convolution, ConvolutionDepthWise or
InnerProduct whose param 8 (int8_scale_term) is set loads int8 weights (tag
0x000D4B38 in the .bin), its bias, then per-output-channel weight scales (per
group for depthwise) and the scale of its input blob, and quantizes that input
itself. What is missing is the table and the rewrite, done here from ncnn's
file formats:

- calibration: the fp32 Net runs every calibration image and the input blob of
  each quantizable layer is extracted; a first pass finds each blob's |max|, a
  second fills a 2048-bin histogram of |x| (zeros left out), as ncnn2table does.
  The clipping threshold is then chosen from the histogram (METHODS):
  "kl" is ncnn2table's default (the threshold whose 128-level quantization of
  the clipped histogram is nearest in Kullback-Leibler divergence, the same
  search); "mse" (the default here) the threshold with the least squared error
  (rounding noise step^2/12 inside, the clipped distance outside). KL was
  measured to fail on the demo MobileNetV2: a ReLU6 blob ranging to 6 with 2.8%
  of its values in one low bin got a 0.69 clip, and top-1 fell from 92.0% to
  53.4%; with "mse" it is 92.6% (MobileNetV1: KL 93.2%, mse 94.8%, fp32 94.8%).
  scale = 127 / threshold.
- weights: 127 / max|w| per output channel (per group for depthwise); a 3x3
  stride-1 undilated Convolution gets 31 / max|w| (6-bit), because ncnn's int8
  winograd F(4,3) kernels need that headroom, as ncnn2table does.
- rewrite: weights become int8 (round half away from zero, clipped to 127),
  int8_scale_term = 2 (Convolution, InnerProduct) or 1 (depthwise, per-group
  scales); a convolution feeding another int8 convolution directly (or through
  a Split feeding only such) writes int8 for it (int8_scale_term + 100 and the
  consumer's input scale), as ncnn2int8's fuse_requantize. Other layers keep the
  fp32 weights pnnx wrote (ncnn2int8 would store them fp16).

The table is written in ncnn2table's text format (CalibrationTable.text), so
it can be compared with, or fed to, ncnn's own tools.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecnn.errors import ModelError

TAG_FP32, TAG_FP16, TAG_INT8, TAG_FP32_SCALED = 0, 0x01306B47, 0x000D4B38, 0x0002C056
QUANTIZABLE = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
HISTOGRAM_BINS, TARGET_BINS, KL_EPS = 2048, 128, 1e-4
_CONVOLUTIONS = {f"{kind}{dims}" for kind in ("Convolution", "ConvolutionDepthWise", "Deconvolution",
                                              "DeconvolutionDepthWise") for dims in ("", "1D", "3D")}


@dataclass
class Layer:
    """One line of an ncnn .param: type, name, bottom and top blob names, params (id -> text, in file order)."""

    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[str, str] = field(default_factory=dict)

    def int(self, key: int, default: int = 0) -> int:
        """An integer param (ncnn's pd.get(key, default))."""
        return int(float(self.params[str(key)])) if str(key) in self.params else default

    def line(self) -> str:
        head = f"{self.type:<24} {self.name:<24} {len(self.bottoms)} {len(self.tops)}"
        return " ".join([head, *self.bottoms, *self.tops, *(f"{k}={v}" for k, v in self.params.items())])


@dataclass
class NcnnParam:
    """A text .param: the magic number, the blob count and the layers in file (= .bin) order."""

    magic: str
    blob_count: int
    layers: list[Layer]

    def text(self) -> str:
        return "\n".join([self.magic, f"{len(self.layers)} {self.blob_count}", *(ly.line() for ly in self.layers)]) + "\n"


def read_param(path: Path) -> NcnnParam:
    """Parse a text .param; ModelError naming the file when it is not one."""
    name = Path(path).name
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        counts = [int(v) for v in lines[1].split()]
        layers = []
        for ln in lines[2:]:
            tok = ln.split()
            nb, nt = int(tok[2]), int(tok[3])
            params = dict(t.split("=", 1) for t in tok[4 + nb + nt:])
            layers.append(Layer(tok[0], tok[1], tok[4:4 + nb], tok[4 + nb:4 + nb + nt], params))
    except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        raise ModelError(f"{name} is not an ncnn text .param") from None
    except OSError as e:
        raise ModelError(f"cannot read {name}: {e.strerror or e}") from None
    if lines[0].strip() != "7767517" or counts[0] != len(layers):
        raise ModelError(f"{name} is not an ncnn text .param (magic {lines[0].strip()!r}, "
                         f"{len(layers)} layers for a count of {counts[0]})")
    return NcnnParam(lines[0].strip(), counts[1], layers)


@dataclass
class WeightBlob:
    """One array of a layer in the .bin: tagged (a 4-byte type tag first) or raw float32, kept as its bytes."""

    count: int
    tag: int | None  # None: raw float32 (ncnn's mb.load(n, 1))
    payload: bytes

    def values(self) -> np.ndarray:
        """The elements (float32, or int8 for int8 weights)."""
        if self.tag is None or self.tag in (TAG_FP32, TAG_FP32_SCALED):
            return np.frombuffer(self.payload, "<f4", self.count).copy()
        if self.tag == TAG_FP16:
            return np.frombuffer(self.payload, "<f2", self.count).astype(np.float32)
        if self.tag == TAG_INT8:
            return np.frombuffer(self.payload, np.int8, self.count).copy()
        lut = np.frombuffer(self.payload, "<f4", 256)  # 8-bit indexes into a 256-entry table
        return lut[np.frombuffer(self.payload, np.uint8, self.count, offset=1024)]

    def encode(self) -> bytes:
        return self.payload if self.tag is None else struct.pack("<I", self.tag) + self.payload

    @classmethod
    def float32(cls, values: np.ndarray, tagged: bool) -> "WeightBlob":
        v = np.ascontiguousarray(values, "<f4").ravel()
        return cls(v.size, TAG_FP32 if tagged else None, v.tobytes())

    @classmethod
    def int8(cls, values: np.ndarray) -> "WeightBlob":
        v = np.ascontiguousarray(values, np.int8).ravel()
        return cls(v.size, TAG_INT8, v.tobytes() + b"\0" * (-v.size % 4))  # ncnn pads int8 data to 4 bytes


def weight_layout(layer: Layer) -> list[tuple[int, bool]]:
    """(element count, tagged) of each array the layer's load_model reads, in order; [] for no weights.

    Layer types not listed here are taken to have none: read_model checks that the
    walk ends exactly at the end of the .bin, so a missed one is an error, not a shift.
    """
    t, p = layer.type, layer.int
    if t in _CONVOLUTIONS:
        if p(19):  # dynamic weight: the weights arrive as a second input
            return []
        arrays = [(p(6), True)] + ([(p(0), False)] if p(5) else [])
        term = p(8)
        if term and t == "ConvolutionDepthWise":
            arrays += [(p(7, 1) if term % 100 == 1 else 1, False), (1, False)]
        elif term:
            arrays += [(p(0), False), (1, False)]
        return arrays + ([(1, False)] if term > 100 else [])
    if t == "InnerProduct":
        return [(p(2), True)] + ([(p(0), False)] if p(1) else []) + ([(p(0), False), (1, False)] if p(8) else [])
    if t == "Embed":
        return [(p(3), True)] + ([(p(0), False)] if p(2) else [])
    if t == "BatchNorm":
        return [(p(0), False)] * 4
    if t == "Scale":
        return [] if p(0) == -233 else [(p(0), False)] * (2 if p(1) else 1)
    if t == "PReLU":
        return [(p(0), False)]
    if t == "Padding":
        return [(p(6), False)] if p(6) else []
    if t == "MemoryData":
        return [(int(np.prod([d for d in (p(0), p(1), p(11), p(2)) if d])), p(21, 1) == 0)]  # 21: load type
    if t in ("InstanceNorm", "GroupNorm", "LayerNorm"):
        channels, affine = {"InstanceNorm": (p(0), p(2, 1)), "GroupNorm": (p(1), p(3, 1)),
                            "LayerNorm": (p(0), p(2, 1))}[t]
        return [(channels, False)] * 2 if affine else []
    return []


def _read_blob(data: bytes, at: int, count: int, tagged: bool, where: str) -> tuple[WeightBlob, int]:
    if not tagged:
        size, tag = 4 * count, None
    else:
        if at + 4 > len(data):
            raise ModelError(f"{where}: the .bin ends before its weights")
        (tag,) = struct.unpack_from("<I", data, at)
        at += 4
        size = {TAG_FP32: 4 * count, TAG_FP32_SCALED: 4 * count, TAG_FP16: -(-2 * count // 4) * 4,
                TAG_INT8: -(-count // 4) * 4}.get(tag, 1024 + -(-count // 4) * 4)
    if at + size > len(data):
        raise ModelError(f"{where}: the .bin ends inside its weights ({at + size} bytes needed, {len(data)} there)")
    return WeightBlob(count, tag, data[at:at + size]), at + size


def read_model(param_path: Path, bin_path: Path) -> tuple[NcnnParam, list[list[WeightBlob]]]:
    """The .param and each layer's weight arrays from the .bin (empty lists for weightless layers)."""
    param = read_param(param_path)
    try:
        data = Path(bin_path).read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read {Path(bin_path).name}: {e.strerror or e}") from None
    at, weights = 0, []
    for layer in param.layers:
        arrays = []
        for count, tagged in weight_layout(layer):
            blob, at = _read_blob(data, at, count, tagged, f"{Path(bin_path).name}, layer {layer.name}")
            arrays.append(blob)
        weights.append(arrays)
    if at != len(data):
        raise ModelError(f"{Path(bin_path).name}: {len(data) - at} bytes left after the last layer's weights "
                         "(a layer type with weights this reader does not know)")
    return param, weights


def write_model(param: NcnnParam, weights: list[list[WeightBlob]], param_path: Path, bin_path: Path) -> None:
    """Write the .param text and the .bin (every layer's arrays in layer order)."""
    Path(param_path).write_text(param.text())
    Path(bin_path).write_bytes(b"".join(b.encode() for arrays in weights for b in arrays))


@dataclass
class CalibrationTable:
    """Per quantizable layer: the int8 scale of its input blob and its weight scales (ncnn2table's content)."""

    bottom: dict[str, float]
    weights: dict[str, np.ndarray]
    method: str = ""  # how the input scales were chosen (METHODS), and from how many images
    images: int = 0

    def text(self) -> str:
        """ncnn2table's format: "<layer>_param_0 s0 s1 ..." lines for weights, then "<layer> s" lines."""
        lines = [f"{n}_param_0 " + " ".join(f"{s:f}" for s in w) for n, w in self.weights.items()]
        return "\n".join(lines + [f"{n} {s:f}" for n, s in self.bottom.items()]) + "\n"


def parse_table(text: str) -> CalibrationTable:
    """Read a table in ncnn2table's format (what CalibrationTable.text writes)."""
    table = CalibrationTable({}, {})
    for line in filter(str.strip, text.splitlines()):
        name, *values = line.split()
        if name.endswith("_param_0"):
            table.weights[name[:-len("_param_0")]] = np.array(values, np.float32)
        elif values:
            table.bottom[name] = float(values[0])
    return table


def weight_scales(layer: Layer, w: np.ndarray) -> np.ndarray:
    """127 / max|w| per output channel (per group for depthwise); 31 for a 3x3 stride-1 undilated Convolution."""
    rows = layer.int(7, 1) if layer.type == "ConvolutionDepthWise" else layer.int(0)
    absmax = np.abs(w.reshape(rows, -1)).max(axis=1)
    kw, dw, sw = layer.int(1), layer.int(2, 1), layer.int(3, 1)
    six_bit = layer.type == "Convolution" and (kw, layer.int(11, kw), dw, layer.int(12, dw), sw,
                                                layer.int(13, sw)) == (3, 3, 1, 1, 1, 1)
    # An all-zero channel quantizes to zeros whatever its scale; 1 keeps ncnn's dequantize finite.
    return np.where(absmax > 0, (31.0 if six_bit else 127.0) / np.maximum(absmax, 1e-30), 1.0).astype(np.float32)


def kl_threshold_bin(histogram: np.ndarray) -> int:
    """The histogram bin (128..2047) where clipping loses least, by KL divergence (ncnn2table's KL method).

    For each candidate threshold t the first t bins (the tail folded into the last)
    are compared with their quantization into 128 levels, each level spread evenly
    back over the bins it covers (fractional bins split linearly, as ncnn does).
    """
    p = histogram.astype(np.float64) / histogram.sum()
    cdf = np.concatenate([[0.0], np.cumsum(p)])
    bins = np.arange(len(p) + 1, dtype=np.float64)
    best, best_t = np.inf, TARGET_BINS
    for t in range(TARGET_BINS, len(p)):
        clip = p[:t] + KL_EPS
        clip[-1] += 1.0 - cdf[t]
        edges = np.arange(TARGET_BINS + 1) * (t / TARGET_BINS)
        levels = np.interp(edges, bins, cdf)  # mass of p (not of the folded tail) under each level
        expand = np.diff(np.interp(bins[:t + 1], edges, levels)) + KL_EPS
        kl = float(np.sum(clip * np.log(clip / expand)))
        if kl < best:
            best, best_t = kl, t
    return best_t


def mse_threshold_bin(histogram: np.ndarray) -> int:
    """The histogram bin (128..2047) whose threshold gives the least squared error: rounding noise (step^2 / 12)
    for the values inside, the squared distance to the threshold for the values clipped (at bin centres)."""
    h = histogram.astype(np.float64)
    centre = np.arange(len(h)) + 0.5
    suffix = [np.concatenate([np.cumsum((h * centre ** k)[::-1])[::-1], [0.0]]) for k in range(3)]
    t = np.arange(TARGET_BINS, len(h))
    edge = t + 0.5  # the threshold calibrate() makes of bin t (as ncnn2table does); bins above it are clipped
    inside = np.cumsum(h)[t] * (edge / 127) ** 2 / 12
    clipped = suffix[2][t + 1] - 2 * edge * suffix[1][t + 1] + edge ** 2 * suffix[0][t + 1]
    return int(t[np.argmin(inside + clipped)])


METHODS = {"mse": mse_threshold_bin, "kl": kl_threshold_bin}  # threshold searches over a blob's histogram
DEFAULT_METHOD = "mse"


def calibrate(param_path: Path, bin_path: Path, images: Sequence[np.ndarray], input_blob: str,
              method: str = DEFAULT_METHOD, threads: int = 1) -> CalibrationTable:
    """The int8 table of an fp32 ncnn model from calibration images (each one input, batch axis dropped, in the
    model's layout; read twice), computed on ncnn's own fp32 outputs for every quantizable layer's input blob."""
    import ncnn

    if method not in METHODS:
        raise ModelError(f"unknown ncnn calibration method {method!r}; known: {', '.join(METHODS)}")
    param = read_param(param_path)
    targets = [ly for ly in param.layers if ly.type in QUANTIZABLE]
    if not targets:
        raise ModelError(f"{Path(param_path).name} has no Convolution, ConvolutionDepthWise or InnerProduct to "
                         "run in int8")
    _, weights = read_model(param_path, bin_path)
    by_name = {ly.name: w for ly, w in zip(param.layers, weights)}
    table = CalibrationTable({}, {ly.name: weight_scales(ly, by_name[ly.name][0].values()) for ly in targets})
    net = ncnn.Net()
    o = net.opt
    o.num_threads, o.lightmode, o.use_vulkan_compute = threads, False, False
    o.use_fp16_storage = o.use_fp16_packed = o.use_fp16_arithmetic = o.use_bf16_storage = False
    if net.load_param(str(param_path)) != 0 or net.load_model(str(bin_path)) != 0:
        raise ModelError(f"ncnn cannot load {Path(param_path).name} / {Path(bin_path).name} to calibrate")
    blobs = list(dict.fromkeys(ly.bottoms[0] for ly in targets))

    def passes():  # the inputs of every quantizable layer, image by image, as ncnn computes them in fp32
        for x in images:
            ex = net.create_extractor()
            x = np.ascontiguousarray(x, np.float32)  # kept alive while the Mat may point into it
            ex.input(input_blob, ncnn.Mat(x))
            out = {}
            for blob in blobs:
                ret, mat = ex.extract(blob)
                if ret != 0:
                    raise ModelError(f"ncnn failed computing blob {blob!r} while calibrating (code {ret})")
                out[blob] = np.abs(np.array(mat, np.float32)).ravel()
            yield out

    absmax = dict.fromkeys(blobs, 0.0)
    for out in passes():
        for blob, v in out.items():
            absmax[blob] = max(absmax[blob], float(v.max(initial=0.0)))
    hist = {blob: np.zeros(HISTOGRAM_BINS, np.int64) for blob in blobs}
    for out in passes():
        for blob, v in out.items():
            v = v[v != 0]
            if absmax[blob] > 0 and v.size:
                idx = np.minimum((v / absmax[blob] * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
                hist[blob] += np.bincount(idx, minlength=HISTOGRAM_BINS)
    scale = {}
    for blob in blobs:
        if not hist[blob].any():  # never nonzero on these images: any scale represents it
            scale[blob] = 1.0
            continue
        threshold = (METHODS[method](hist[blob]) + 0.5) * absmax[blob] / HISTOGRAM_BINS
        scale[blob] = 127.0 / threshold
    table.bottom = {ly.name: scale[ly.bottoms[0]] for ly in targets}
    table.method, table.images = method, len(images)
    return table


def to_int8(w: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Weights times their row's scale, rounded half away from zero (as ncnn's float2int8), clipped to +-127."""
    v = w.reshape(len(scales), -1) * scales[:, None]
    return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -127, 127).astype(np.int8).ravel()


def quantize_model(param_path: Path, bin_path: Path, table: CalibrationTable, param_out: Path, bin_out: Path,
                   requantize: bool = True) -> dict:
    """Write the int8 .param/.bin for every quantizable layer the table covers; returns what was done.

    Returns {"int8_layers", "requantized" (int8 out to the next convolution), "float_layers" (quantizable
    but left float: not in the table)}.
    """
    param, weights = read_model(param_path, bin_path)
    done: dict[str, Layer] = {}
    for layer, arrays in zip(param.layers, weights):
        if layer.type not in QUANTIZABLE or layer.name not in table.bottom:
            continue
        if layer.int(8):
            raise ModelError(f"{Path(param_path).name}: layer {layer.name} is already int8")
        scales = np.asarray(table.weights[layer.name], np.float32)
        arrays[0] = WeightBlob.int8(to_int8(arrays[0].values().astype(np.float32), scales))
        arrays += [WeightBlob.float32(scales, False), WeightBlob.float32([table.bottom[layer.name]], False)]
        layer.params["8"] = "1" if layer.type == "ConvolutionDepthWise" else "2"
        done[layer.name] = layer
    requantized = _fuse_requantize(param, weights, done, table) if requantize else []
    write_model(param, weights, param_out, bin_out)
    left = [ly.name for ly in param.layers if ly.type in QUANTIZABLE and ly.name not in done]
    return {"int8_layers": len(done), "requantized": len(requantized), "float_layers": left}


def _fuse_requantize(param: NcnnParam, weights: list[list[WeightBlob]], done: dict[str, Layer],
                     table: CalibrationTable) -> list[str]:
    """Let an int8 convolution write int8 for the int8 convolution(s) reading its output (ncnn2int8's
    fuse_requantize): directly, or through a Split whose every output goes to one. The scale is the first
    consumer's input scale (all of a Split's consumers see the same values)."""
    convs = {"Convolution", "ConvolutionDepthWise"}
    consumers: dict[str, list[Layer]] = {}
    for layer in param.layers:
        for b in layer.bottoms:
            consumers.setdefault(b, []).append(layer)

    def int8_conv(ly: Layer) -> bool:
        return ly.name in done and ly.type in convs and len(ly.bottoms) == 1

    fused = []
    for layer, arrays in zip(param.layers, weights):
        if not int8_conv(layer) or len(layer.tops) != 1:
            continue
        readers = consumers.get(layer.tops[0], [])
        if len(readers) == 1 and readers[0].type == "Split":
            readers = [c for t in readers[0].tops for c in consumers.get(t, [])] or [readers[0]]
        if not readers or not all(int8_conv(r) for r in readers):
            continue
        layer.params["8"] = str(layer.int(8) + 100)
        arrays.append(WeightBlob.float32([table.bottom[readers[0].name]], False))
        fused.append(layer.name)
    return fused
