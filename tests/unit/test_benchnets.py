"""The benchncnn reconstructions: MACs, parameters and outputs equal what ncnn's benchmark .param files imply.

The figures below were computed from the layer lines of Tencent/ncnn's benchmark/<name>.param (weight sizes,
bias flags, and each blob's shape propagated with ncnn's own padding and pooling rules, at the input size
benchncnn.cpp feeds) and, for yolov4-tiny, whose .param is darknet2ncnn's conversion, from darknet's
yolov4-tiny.cfg with batch norm folded. They are facts about those networks: a reconstruction that drifts
by one channel, stride or padding fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgecnn import zoo
from edgecnn.errors import ModelError
from edgecnn.zoo.benchnets import BENCHNCNN_NETWORKS
from edgecnn.zoo.benchnets_layers import caffe_pool, channel_shuffle, custom_layers
from edgecnn.zoo.stats import count_macs, count_params

# benchncnn name -> (MACs, parameters, output shapes without the batch axis), from the .param.
PARAM_FIGURES = {
    "squeezenet": (418_467_520, 1_235_496, [(1000,)]),
    "shufflenet": (127_061_304, 1_802_866, [(1000,)]),
    # ncnn's MobileNetV3 (Keras' MobileNetV3Large at 224 has 216,589,760 MACs: another network).
    "mobilenet_v3": (245_564_768, 5_133_694, [(1000,)]),
    "shufflenet_v2": (144_907_992, 2_270_514, [(1000,)]),
    "alexnet": (724_406_816, 60_965_224, [(1000,)]),
    "vgg16": (15_470_264_320, 138_357_544, [(1000,)]),
    "blazeface": (29_368_320, 88_470, [(8, 8, 96)]),
    "mobilenet_ssd": (1_148_479_168, 5_783_417, [(1917, 4), (1917, 21)]),
    # At 300x300, as benchncnn runs it (the .param's Input says 227).
    "squeezenet_ssd": (1_175_969_984, 5_542_944, [(8030, 4), (8030, 21)]),
    "yolov4-tiny": (3_453_938_176, 6_053_502, [(13, 13, 255), (26, 26, 255)]),
}
# squeezenet_ssd keeps 13 batch norms unfolded over 3072 channels; the .param stores 6 numbers per channel
# (BatchNorm: slope, mean, variance, bias; Scale: scale, bias), Keras' BatchNormalization 4.
UNFOLDED_BN_EXTRA = {"squeezenet_ssd": 2 * 3072}

# The fp32 rows of the Raspberry Pi 4 table in ../shared/reference/benchncnn.md, and those not rebuilt (yet).
PI4_FP32_ROWS = {"squeezenet", "mobilenet", "mobilenet_v2", "mobilenet_v3", "shufflenet", "shufflenet_v2",
                 "blazeface", "alexnet", "vgg16", "squeezenet_ssd", "mobilenet_ssd", "mobilenet_yolo",
                 "mobilenetv2_yolov3", "yolov4-tiny", "nanodet_m", "yolo-fastest-1.1", "yolo-fastestv2",
                 "FastestDet"}
NOT_REBUILT = {"mobilenet_yolo", "mobilenetv2_yolov3", "nanodet_m", "yolo-fastest-1.1", "yolo-fastestv2",
               "FastestDet"}
# benchncnn.cpp's input sizes.
INPUT_SIZES = {"squeezenet": 227, "alexnet": 227, "blazeface": 128, "squeezenet_ssd": 300, "mobilenet_ssd": 300,
               "yolov4-tiny": 416}


def test_the_networks_cover_the_pi4_table_rows_that_were_rebuilt():
    assert set(BENCHNCNN_NETWORKS) == PI4_FP32_ROWS - NOT_REBUILT
    for name, ref in BENCHNCNN_NETWORKS.items():
        spec, kwargs = zoo.parse_model_ref(ref)
        assert kwargs["size"] == INPUT_SIZES.get(name, 224), name
        if spec.task == "classification":
            assert kwargs["classes"] == 1000, name


def test_mobilenet_v1_and_v2_are_the_published_keras_configurations():
    for name, preset in (("mobilenet", "mobilenet_v1"), ("mobilenet_v2", "mobilenet_v2")):
        spec, kwargs = zoo.parse_model_ref(BENCHNCNN_NETWORKS[name])
        assert spec.name == preset and kwargs["alpha"] == 1.0


@pytest.mark.parametrize("name", sorted(PARAM_FIGURES))
def test_macs_params_and_outputs_match_the_param_file(name):
    macs, params, outputs = PARAM_FIGURES[name]
    model = zoo.build(BENCHNCNN_NETWORKS[name])
    size = INPUT_SIZES.get(name, 224)
    assert model.input_shape == (None, size, size, 3)
    shapes = model.output_shape if isinstance(model.output_shape, list) else [model.output_shape]
    assert [tuple(s[1:]) for s in shapes] == outputs
    assert count_macs(model) == macs
    assert count_params(model) == params - UNFOLDED_BN_EXTRA.get(name, 0)


def test_other_input_sizes_build_and_run():
    model = zoo.build("squeezenet:size=97,classes=10")  # odd sizes take Caffe's other pooling case
    x = np.random.default_rng(0).uniform(-1, 1, (1, 97, 97, 3)).astype(np.float32)
    out = np.asarray(model(x, training=False))
    assert out.shape == (1, 10) and np.allclose(out.sum(), 1, atol=1e-5)
    assert zoo.build("yolov4_tiny:size=320,classes=20").output_shape == [(None, 10, 10, 75), (None, 20, 20, 75)]
    with pytest.raises(ModelError, match="multiple of 32"):
        zoo.build("yolov4_tiny:size=330")


@pytest.mark.parametrize("size,kernel,stride,expected", [(113, 3, 2, 56), (56, 3, 2, 28), (55, 3, 2, 27),
                                                         (224, 2, 2, 112), (7, 2, 2, 4)])
@pytest.mark.parametrize("average", [False, True])
def test_caffe_pool_gives_ceil_mode_sizes(size, kernel, stride, expected, average):
    import keras

    x = keras.Input((size, size, 4))
    assert caffe_pool(x, kernel, stride, average=average).shape[1:3] == (expected, expected)


def test_caffe_pool_refuses_what_keras_cannot_place():
    import keras

    with pytest.raises(ModelError, match="ceil mode"):
        caffe_pool(keras.Input((10, 10, 1)), 3, 3)  # Caffe pads 2 at the end; 'same' would split them


def test_channel_shuffle_interleaves_the_groups():
    import keras

    x = keras.Input((2, 2, 6))
    model = keras.Model(x, channel_shuffle(x, 3, "shuffle"))
    data = np.broadcast_to(np.arange(6, dtype=np.float32), (1, 2, 2, 6))
    assert np.asarray(model(data))[0, 0, 0].tolist() == [0, 2, 4, 1, 3, 5]


def test_custom_layers_compute_what_they_stand_for_and_round_trip():
    import keras
    import tensorflow as tf

    grouped, lrn, channel_slice, channel_pad = custom_layers()
    x = keras.Input((6, 6, 4))
    conv = grouped(6, 3, padding="same", groups=2, name="g")
    y = channel_pad(3, name="p")(channel_slice(2, 5, name="s")(lrn(name="n")(conv(x))))
    model = keras.Model(x, y)
    data = np.random.default_rng(1).normal(size=(1, 6, 6, 4)).astype(np.float32)
    out = np.asarray(model(data))
    kernel, bias = conv.get_weights()
    halves = [tf.nn.conv2d(data[..., 2 * g:2 * g + 2], kernel[..., 3 * g:3 * g + 3], 1, "SAME") for g in range(2)]
    z = np.concatenate([np.asarray(h) for h in halves], -1) + bias
    window = np.stack([np.pad(z * z, [(0, 0)] * 3 + [(2, 2)])[..., c:c + 5].sum(-1) for c in range(6)], -1)
    expected = z / (1 + 1e-4 / 5 * window) ** 0.75
    assert out.shape == (1, 6, 6, 6)
    np.testing.assert_allclose(out[..., :3], expected[..., 2:5], rtol=1e-4, atol=1e-5)
    assert not out[..., 3:].any()
    again = keras.models.model_from_json(model.to_json())
    again.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(again(data)), out, rtol=1e-6)


def test_biases_are_random_so_converters_keep_them():
    biased = [layer for layer in zoo.build("blazeface").layers if getattr(layer, "bias", None) is not None]
    assert len(biased) == 33 and all(np.abs(layer.bias.numpy()).max() > 0 for layer in biased)


def test_only_random_weights_exist():
    with pytest.raises(ModelError, match="no pretrained weights"):
        zoo.load("alexnet", weights="imagenet")
    with pytest.raises(ModelError, match="no demo weights"):
        zoo.load("blazeface", weights="demo")
