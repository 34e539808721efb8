"""The detectors of ncnn's benchncnn, rebuilt in Keras as their .param files (or darknet cfg) define them.

See edgecnn.zoo.benchnets for how the reconstructions follow the .param files, and
edgecnn.zoo.benchnets_layers for the blocks.
The outputs are the raw tensors the .param feeds its post-processing with;
the post-processing layers themselves (PriorBox, DetectionOutput,
Yolov3DetectionOutput: box decoding and NMS) are left out, so these are
generic models to edgecnn (timed and compared output by output, never scored).

- blazeface: benchmark/blazeface.param is the BlazeFace backbone only (its
  output is the 96-channel 8x8 map at 128x128), so that is what is built.
- mobilenet_ssd / squeezenet_ssd: two outputs, box offsets (N, priors, 4) and
  class scores (N, priors, classes) after the per-prior softmax, as the
  .param's mbox_loc and mbox_conf_softmax.
- yolov4_tiny: benchncnn's yolov4-tiny.param is darknet2ncnn's conversion of
  darknet's yolov4-tiny.cfg (batch norm folded); its two head convolutions
  (13x13 and 26x26 at 416, 3 * (5 + classes) channels) are the outputs.
"""

from __future__ import annotations

from edgecnn.errors import ModelError
from edgecnn.zoo.benchnets_layers import (caffe_pool, channel_pad, channel_slice, conv, depthwise, fire,
                                          image_input, named_model)

# (output channels, stride) of BlazeFace's 16 blocks after its 5x5/2 stem.
BLAZEFACE_BLOCKS = ((24, 1), (28, 1), (32, 2), (36, 1), (42, 1), (48, 2), (56, 1), (64, 1), (72, 1), (80, 1),
                    (88, 1), (96, 2), (96, 1), (96, 1), (96, 1), (96, 1))
# MobileNet V1's 13 depthwise-separable blocks (pointwise channels, depthwise stride).
MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                    (512, 1), (512, 1), (1024, 2), (1024, 1))
# SSD's extra layers: (1x1 channels, 3x3/2 channels).
MOBILENET_SSD_EXTRAS = ((256, 512), (128, 256), (128, 256), (64, 128))
SQUEEZENET_SSD_EXTRAS = ((128, 256), (64, 128))


def blazeface(size: int = 128, weights=None):
    """BlazeFace's backbone as benchmark/blazeface.param (benchncnn runs it at 128x128): the last 96-channel map.

    Stem: pad (1, 2) then 5x5/2 conv and ReLU. Each block: 3x3 depthwise and 1x1 conv (no activation) added to
    its input, which a stride-2 block max-pools 2x2 (its depthwise input is padded by 2 at the bottom and right)
    and a widening block pads with zero channels; ReLU after the add.
    """
    from keras import layers

    if size % 16:
        raise ModelError(f"blazeface: size must be a multiple of 16, got {size}")
    inputs = image_input("blazeface", size, weights)
    x = layers.ZeroPadding2D(((1, 2), (1, 2)), name="stem_pad")(inputs)
    x = conv(x, 24, 5, 2, name="stem")
    for i, (channels, stride) in enumerate(BLAZEFACE_BLOCKS, start=1):
        n = f"block{i}"
        if stride == 2:
            y = layers.ZeroPadding2D(((0, 2), (0, 2)), name=f"{n}_pad")(x)
            y = depthwise(y, 3, 2, name=f"{n}_dw")
            short = layers.MaxPooling2D(2, 2, name=f"{n}_pool")(x)
        else:
            y, short = depthwise(x, 3, pad=1, name=f"{n}_dw"), x
        y = conv(y, channels, 1, act=None, name=f"{n}_pw")
        if channels > short.shape[-1]:
            short = channel_pad(short, channels - short.shape[-1], f"{n}_chpad")
        x = layers.ReLU(name=f"{n}_relu")(layers.Add(name=f"{n}_add")([y, short]))
    return named_model(inputs, x, "blazeface", size)


def _csp(x, channels: int, name: str):
    """yolov4-tiny's CSP block: 3x3 conv, its second half through two 3x3s, their concat through a 1x1,
    concatenated with the first conv's output. Returns (block output, the 1x1's output)."""
    from keras import layers

    x = conv(x, channels, 3, pad=1, act="leaky", name=f"{name}_conv1")
    half = channel_slice(x, channels // 2, channels, f"{name}_route")  # darknet: groups=2, group_id=1
    a = conv(half, channels // 2, 3, pad=1, act="leaky", name=f"{name}_conv2")
    b = conv(a, channels // 2, 3, pad=1, act="leaky", name=f"{name}_conv3")
    c = conv(layers.Concatenate(name=f"{name}_cat1")([b, a]), channels, 1, act="leaky", name=f"{name}_conv4")
    return layers.Concatenate(name=f"{name}_cat2")([x, c]), c


def yolov4_tiny(size: int = 416, classes: int = 80, weights=None):
    """YOLOv4-tiny (darknet's yolov4-tiny.cfg, benchncnn runs it at 416x416): the two head tensors.

    Conv + batch norm + leaky ReLU (0.1) layers are biased convs as darknet2ncnn folds them; strided convs pad
    one pixel on every side; max pools are 2x2/2 ('same' is darknet's padding at the end); the upsample is
    nearest-neighbour. Outputs: (N, size/32, size/32, 3 * (5 + classes)) and (N, size/16, size/16, same).
    """
    from keras import layers

    if size % 32:
        raise ModelError(f"yolov4_tiny: size must be a multiple of 32, got {size}")
    inputs = image_input("yolov4_tiny", size, weights)
    x = conv(inputs, 32, 3, 2, pad=1, act="leaky", name="conv0")
    x = conv(x, 64, 3, 2, pad=1, act="leaky", name="conv1")
    for i, channels in enumerate((64, 128, 256)):
        x, route = _csp(x, channels, f"csp{i + 1}")
        x = layers.MaxPooling2D(2, 2, "same", name=f"pool{i + 1}")(x)
    x = conv(x, 512, 3, pad=1, act="leaky", name="conv26")
    neck = conv(x, 256, 1, act="leaky", name="conv27")
    x = conv(neck, 512, 3, pad=1, act="leaky", name="conv28")
    head13 = conv(x, 3 * (5 + classes), 1, act=None, name="head13")
    x = conv(neck, 128, 1, act="leaky", name="conv32")
    x = layers.Resizing(size // 16, size // 16, interpolation="nearest", name="upsample")(x)
    x = conv(layers.Concatenate(name="route34")([x, route]), 256, 3, pad=1, act="leaky", name="conv35")
    head26 = conv(x, 3 * (5 + classes), 1, act=None, name="head26")
    return named_model(inputs, [head13, head26], "yolov4_tiny", size)


def _ssd_heads(features, priors, classes: int, kernel: int):
    """SSD's per-map box and class convolutions, flattened per prior and concatenated: (loc, softmax(conf))."""
    from keras import layers

    locs, confs = [], []
    for (name, x), p in zip(features, priors):
        pad = kernel // 2
        loc = conv(x, p * 4, kernel, pad=pad, act=None, name=f"{name}_mbox_loc")
        conf = conv(x, p * classes, kernel, pad=pad, act=None, name=f"{name}_mbox_conf")
        locs.append(layers.Reshape((-1, 4), name=f"{name}_mbox_loc_flat")(loc))
        confs.append(layers.Reshape((-1, classes), name=f"{name}_mbox_conf_flat")(conf))
    loc = layers.Concatenate(axis=1, name="mbox_loc")(locs)
    conf = layers.Softmax(name="mbox_conf_softmax")(layers.Concatenate(axis=1, name="mbox_conf")(confs))
    return [loc, conf]


def mobilenet_ssd(size: int = 300, classes: int = 21, weights=None):
    """MobileNet-SSD (MobileNet V1 1.0 + SSD extras) as benchmark/mobilenet_ssd.param, run at 300x300.

    Heads are 1x1 convs on conv11 (3 priors), conv13 and the four extras (6 priors each); outputs
    (N, 1917, 4) box offsets and (N, 1917, classes) softmax scores at 300.
    """
    inputs = image_input("mobilenet_ssd", size, weights)
    x = conv(inputs, 32, 3, 2, pad=1, name="conv0")
    features = []
    for i, (channels, stride) in enumerate(MOBILENET_BLOCKS, start=1):
        x = depthwise(x, 3, stride, pad=1, relu=True, name=f"conv{i}_dw")
        x = conv(x, channels, 1, name=f"conv{i}")
        if i in (11, 13):
            features.append((f"conv{i}", x))
    for i, (squeeze, channels) in enumerate(MOBILENET_SSD_EXTRAS, start=14):
        x = conv(conv(x, squeeze, 1, name=f"conv{i}_1"), channels, 3, 2, pad=1, name=f"conv{i}_2")
        features.append((f"conv{i}_2", x))
    return named_model(inputs, _ssd_heads(features, (3, 6, 6, 6, 6, 6), classes, 1), "mobilenet_ssd", size)


def squeezenet_ssd(size: int = 300, classes: int = 21, weights=None):
    """SqueezeNet-SSD as benchmark/squeezenet_ssd.param; benchncnn feeds it 300x300 (the .param says 227).

    SqueezeNet 1.1 with batch norm (kept unfolded in the .param) in fire9's expands, fire10 and fire11, the two
    SSD extras (1x1 then 3x3/2, no bias, batch norm) and 3x3 heads on fire5 (batch norm, 4 priors), fire9,
    fire10, fire11, conv12_2 (6 priors) and conv13_2 (4 priors): (N, 8030, 4) and (N, 8030, classes) at 300.
    The .param's Scale after each BatchNorm is part of Keras' BatchNormalization (gamma, beta).
    """
    from keras import layers

    inputs = image_input("squeezenet_ssd", size, weights)
    x = caffe_pool(conv(inputs, 64, 3, 2, name="conv1"), 3, 2, name="pool1")
    features = []
    for i, (squeeze, expand) in enumerate(((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192),
                                           (64, 256), (64, 256), (96, 384), (96, 384)), start=2):
        x = fire(x, squeeze, expand, f"fire{i}", bn_squeeze=i >= 10, bn_expand=i >= 9)
        if i == 5:
            features.append(("fire5", layers.BatchNormalization(name="fire5_norm")(x)))
        elif i >= 9:
            features.append((f"fire{i}", x))
        if i in (3, 5, 9, 10):
            x = caffe_pool(x, 3, 2, name=f"pool{i}")
    for i, (squeeze, channels) in enumerate(SQUEEZENET_SSD_EXTRAS, start=12):
        x = conv(x, squeeze, 1, bias=False, bn=True, name=f"conv{i}_1")
        x = conv(x, channels, 3, 2, pad=1, bias=False, bn=True, name=f"conv{i}_2")
        features.append((f"conv{i}_2", x))
    return named_model(inputs, _ssd_heads(features, (4, 6, 6, 6, 6, 4), classes, 3), "squeezenet_ssd", size)


__all__ = ["blazeface", "mobilenet_ssd", "squeezenet_ssd", "yolov4_tiny"]
