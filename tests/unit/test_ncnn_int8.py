"""edgecnn.compile.ncnn_int8 on hand-written ncnn models: the .param/.bin reader and writer, the threshold searches,
the calibration table and the int8 rewrite, read back and run by ncnn itself."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from edgecnn.compile import ncnn_int8 as Q
from edgecnn.errors import ModelError

# Input 8x8x3 -> 3x3 stride-1 convolution (ReLU) -> 3x3 depthwise (ReLU) -> global average pool -> dense to 4.
PARAM = """7767517
5 5
Input                    in0                      0 1 in0 0=8 1=8 2=3
Convolution              conv0                    1 1 in0 c0 0=8 1=3 4=1 5=1 6=216 9=1
ConvolutionDepthWise     dw0                      1 1 c0 d0 0=8 1=3 4=1 5=1 6=72 7=8 9=1
Pooling                  gap                      1 1 d0 p0 0=1 4=1
InnerProduct             fc                       1 1 p0 out0 0=4 1=1 2=32
"""


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    """The fp32 model written with the module's own writer: (param path, bin path, {layer: [weight, bias]})."""
    rng = np.random.default_rng(0)
    arrays = {"conv0": [rng.normal(0, 0.5, 216), rng.normal(0, 0.1, 8)],
              "dw0": [rng.normal(0, 0.5, 72), rng.normal(0, 0.1, 8)], "fc": [rng.normal(0, 0.5, 32), np.zeros(4)]}
    arrays["dw0"][0][9:18] = 0.0  # one group of zeros: its scale must stay finite
    root = tmp_path_factory.mktemp("ncnn-int8")
    param = _parse(PARAM)
    weights = [[Q.WeightBlob.float32(arrays[ly.name][0], True), Q.WeightBlob.float32(arrays[ly.name][1], False)]
               if ly.name in arrays else [] for ly in param.layers]
    Q.write_model(param, weights, root / "m.param", root / "m.bin")
    return root / "m.param", root / "m.bin", arrays


def _parse(text: str) -> Q.NcnnParam:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "p.param").write_text(text)
        return Q.read_param(Path(d) / "p.param")


def images(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (3, 8, 8)).astype(np.float32) for _ in range(n)]


def run(param: Path, weights: Path, x: np.ndarray) -> np.ndarray:
    import ncnn

    net = ncnn.Net()
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    assert net.load_param(str(param)) == 0 and net.load_model(str(weights)) == 0
    ex = net.create_extractor()
    ex.input("in0", ncnn.Mat(x))
    ret, mat = ex.extract("out0")
    assert ret == 0
    return np.array(mat).ravel()


def test_reader_and_writer_round_trip_the_bytes(fp32, tmp_path):
    param_path, bin_path, arrays = fp32
    data = bin_path.read_bytes()
    # fp32 weights: tag 0 then the floats; bias raw. 216 + 8 + 72 + 8 + 32 + 4 floats and three tags.
    assert len(data) == 4 * (216 + 8 + 72 + 8 + 32 + 4) + 3 * 4 and struct.unpack_from("<I", data, 0) == (0,)
    param, weights = Q.read_model(param_path, bin_path)
    assert [ly.type for ly in param.layers][1:3] == ["Convolution", "ConvolutionDepthWise"]
    assert param.layers[1].int(6) == 216 and param.layers[1].int(11, 3) == 3 and param.layers[2].int(7) == 8
    assert np.allclose(weights[2][0].values(), arrays["dw0"][0].astype(np.float32))
    Q.write_model(param, weights, tmp_path / "p", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == data and Q.read_param(tmp_path / "p").text() == param.text()
    assert run(param_path, bin_path, images(1)[0]).shape == (4,)  # ncnn loads what the writer wrote


def test_reader_refuses_a_bin_that_does_not_fit(fp32, tmp_path):
    param_path, bin_path, _ = fp32
    (tmp_path / "long.bin").write_bytes(bin_path.read_bytes() + b"\0" * 8)
    with pytest.raises(ModelError, match=r"long.bin: 8 bytes left after the last layer's weights"):
        Q.read_model(param_path, tmp_path / "long.bin")
    (tmp_path / "short.bin").write_bytes(bin_path.read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"short.bin, layer dw0: the .bin ends inside its weights"):
        Q.read_model(param_path, tmp_path / "short.bin")
    for text in (b"not a param\n1 1\n", b"", b"\xff\xfe\x00"):
        (tmp_path / "x.param").write_bytes(text)
        with pytest.raises(ModelError, match=r"^x.param is not an ncnn text .param"):
            Q.read_param(tmp_path / "x.param")


def test_weight_scales_per_channel_group_and_six_bit():
    layers = _parse(PARAM).layers
    w = np.arange(1, 217, dtype=np.float32).reshape(8, 27)
    # conv0 is 3x3 stride 1: ncnn's int8 winograd wants 6-bit weights, so 31 / max|w| per output channel.
    assert np.allclose(Q.weight_scales(layers[1], w), 31 / w.max(axis=1))
    strided = Q.Layer("Convolution", "s", ["a"], ["b"], {**layers[1].params, "3": "2"})
    assert np.allclose(Q.weight_scales(strided, w), 127 / w.max(axis=1))
    dw = np.ones((8, 9), np.float32) * np.arange(8)[:, None]
    scales = Q.weight_scales(layers[2], dw)
    assert scales.shape == (8,) and scales[0] == 1.0 and np.allclose(scales[1:], 127 / np.arange(1, 8))


def _kl_by_overlaps(hist: np.ndarray) -> int:
    """The KL threshold search written from its definition, bin overlap by bin overlap (slow, independent)."""
    p = hist / hist.sum()
    best, best_t = np.inf, 128
    for t in range(128, len(p)):
        width = t / 128
        q = np.zeros(128)
        expand = np.full(t, 1e-4)
        for j in range(128):
            a, b = j * width, (j + 1) * width
            cover = [(i, min(b, i + 1) - max(a, i)) for i in range(int(a), min(int(np.ceil(b)), t))]
            q[j] = sum(o * p[i] for i, o in cover) / width  # a level's mass, spread evenly over its width
            for i, o in cover:
                expand[i] += o * q[j]
        clip = p[:t] + 1e-4
        clip[-1] += p[t:].sum()  # clipped values land in the last bin
        kl = np.sum(clip * np.log(clip / expand))
        if kl < best:
            best, best_t = kl, t
    return best_t


def test_kl_search_matches_its_definition():
    rng = np.random.default_rng(3)
    for spread in (1.0, 3.0, 8.0):  # short histograms (512 bins) keep the slow reference fast
        values = np.abs(rng.standard_t(4, 20000))
        hist = np.bincount(np.minimum((values / spread * 64).astype(int), 511), minlength=512)
        assert Q.kl_threshold_bin(hist) == _kl_by_overlaps(hist)


def test_mse_keeps_the_range_where_kl_clips_a_blob_of_few_values():
    """KL's failure on the demo MobileNetV2: flat-colour images give a ReLU6 blob a few values that hold most of
    its mass (spikes every few dozen bins); KL keeps them apart by clipping at bin ~237 of 2048, cutting 18% of
    the values. The squared error counts how far each clipped value moves, and keeps the range."""
    smooth = np.zeros(2048, np.int64)
    smooth[:240], smooth[240:1208], smooth[1208:] = 14000, 1000, 100
    assert Q.kl_threshold_bin(smooth) > 2000 and Q.mse_threshold_bin(smooth) > 2000
    spiky = smooth.copy()
    spiky[[8, 76, 127, 180, 195, 211, 218, 226, 235]] = 420_000  # the bins the demo blob's spikes fell in
    assert Q.kl_threshold_bin(spiky) < 300 and Q.mse_threshold_bin(spiky) > 2000
    uniform = np.full(2048, 10)
    assert Q.mse_threshold_bin(uniform) > 2000  # clipping the last few bins pays for itself, no more
    outliers = np.zeros(2048, np.int64)
    outliers[:200] = 1000
    outliers[2047] = 1  # one far value among 200,000: a range to it would add rounding error to every one
    assert 800 < Q.mse_threshold_bin(outliers) < 1300


def test_calibrate_quantize_and_run_int8(fp32, tmp_path):
    param_path, bin_path, arrays = fp32
    calib = images(40)
    table = Q.calibrate(param_path, bin_path, calib, "in0")
    assert table.method == "mse" and table.images == 40 and set(table.bottom) == {"conv0", "dw0", "fc"}
    # The image input spans [-1, 1]: its scale is 127 over a threshold near 1.
    assert 127 / 1.05 < table.bottom["conv0"] < 127 / 0.8
    again = Q.parse_table(table.text())
    assert again.bottom == pytest.approx(table.bottom, rel=1e-5)
    assert np.allclose(again.weights["dw0"], table.weights["dw0"], rtol=1e-5)
    done = Q.quantize_model(param_path, bin_path, table, tmp_path / "i8.param", tmp_path / "i8.bin")
    assert done == {"int8_layers": 3, "requantized": 1, "float_layers": []}
    param, weights = Q.read_model(tmp_path / "i8.param", tmp_path / "i8.bin")
    terms = {ly.name: ly.params.get("8") for ly in param.layers}
    # conv0 feeds dw0 directly, so it requantizes (2 + 100); the depthwise has per-group scales (1).
    assert terms == {"in0": None, "conv0": "102", "dw0": "1", "gap": None, "fc": "2"}
    conv = weights[1]
    assert conv[0].tag == Q.TAG_INT8 and conv[0].values().dtype == np.int8
    assert [b.count for b in conv] == [216, 8, 8, 1, 1]  # weights, bias, weight scales, input scale, output scale
    scales = conv[2].values()
    want = np.clip(np.round(arrays["conv0"][0].reshape(8, 27) * scales[:, None]), -31, 31).ravel()
    assert np.array_equal(conv[0].values(), want.astype(np.int8)) and np.abs(conv[0].values()).max() == 31
    assert conv[3].values()[0] == pytest.approx(table.bottom["conv0"], rel=1e-6)
    assert conv[4].values()[0] == pytest.approx(table.bottom["dw0"], rel=1e-6)
    assert [b.count for b in weights[2]] == [72, 8, 8, 1] and weights[2][2].values()[1] == 1.0
    assert np.array_equal(weights[2][1].values(), arrays["dw0"][1].astype(np.float32))  # bias stays fp32
    assert (tmp_path / "i8.bin").stat().st_size < bin_path.stat().st_size * 0.6
    # ncnn runs it in int8, close to the fp32 model on images it was not calibrated on.
    for x in images(5, seed=9):
        a, b = run(param_path, bin_path, x), run(tmp_path / "i8.param", tmp_path / "i8.bin", x)
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99 and not np.allclose(a, b, atol=1e-6)


def test_quantize_refuses_an_int8_model_and_calibrate_an_unknown_method(fp32, tmp_path):
    param_path, bin_path, _ = fp32
    table = Q.calibrate(param_path, bin_path, images(4), "in0", method="kl")
    assert table.method == "kl"
    Q.quantize_model(param_path, bin_path, table, tmp_path / "i8.param", tmp_path / "i8.bin", requantize=False)
    assert "8=2" in (tmp_path / "i8.param").read_text().splitlines()[3]
    with pytest.raises(ModelError, match="layer conv0 is already int8"):
        Q.quantize_model(tmp_path / "i8.param", tmp_path / "i8.bin", table, tmp_path / "x.param", tmp_path / "x.bin")
    with pytest.raises(ModelError, match="unknown ncnn calibration method 'aciq'; known: mse, kl"):
        Q.calibrate(param_path, bin_path, images(1), "in0", method="aciq")
