"""Keras reconstructions of the networks ncnn's benchncnn times, layer for layer as its .param files define them.

benchncnn (Tencent/ncnn, benchmark/) runs each network's benchmark/<name>.param
with random weights on one input of a fixed size; its published tables are the
board latencies edgecnn's cost model is fitted on. The builders here rebuild
those graphs with random weights so the same networks can be converted,
emulated and counted: channel counts, kernels, strides, groups, padding,
pooling (Caffe's ceil-mode pooling included), activations and input sizes
follow the .param, so MACs and parameters equal what the .param implies
(tests/unit/test_benchnets.py holds those figures). Batch norm is left out
wherever the .param has it folded into the convolution (a biased conv is what
ncnn runs); biases are drawn at random because pnnx drops all-zero biases, and
a .param's convolutions carry them.

Classifiers live here, the detectors (outputs without their post-processing
layers) in edgecnn.zoo.benchnets_det. BENCHNCNN_NETWORKS maps each benchncnn
network name to the zoo reference that reconstructs it.
"""

from __future__ import annotations

from edgecnn.zoo.benchnets_layers import (activation, caffe_pool, channel_shuffle, channel_slice, conv,
                                          custom_layers, depthwise, fire, image_input, named_model, random_bias)

SCALE = 1 / 127.5  # random weights: the preprocessing is only a contract, this one is the zoo's usual
OFFSET = -1.0

# benchncnn network name -> zoo reference. MobileNet V1 and V2 are keras.applications (edgecnn.zoo.mobilenet).
BENCHNCNN_NETWORKS = {
    "squeezenet": "squeezenet",
    "mobilenet": "mobilenet_v1:alpha=1.0,size=224,classes=1000",
    "mobilenet_v2": "mobilenet_v2:alpha=1.0,size=224,classes=1000",
    "mobilenet_v3": "mobilenet_v3_ncnn",  # not keras' MobileNetV3Large: see MOBILENET_V3_BLOCKS
    "shufflenet": "shufflenet",
    "shufflenet_v2": "shufflenet_v2",
    "blazeface": "blazeface",
    "alexnet": "alexnet",
    "vgg16": "vgg16",
    "squeezenet_ssd": "squeezenet_ssd",
    "mobilenet_ssd": "mobilenet_ssd",
    "yolov4-tiny": "yolov4_tiny",
}

# Fire modules of SqueezeNet 1.1 (squeeze, expand) for fire2..fire9; a pool follows fire3 and fire5.
SQUEEZENET_FIRES = ((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256))
# (output channels, units) of the three stages: ShuffleNet V1 with 3 groups (1x) and V2 1.0x.
SHUFFLENET_STAGES = ((240, 4), (480, 8), (960, 4))
SHUFFLENET_V2_STAGES = ((116, 4), (232, 8), (464, 4))
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
# benchmark/mobilenet_v3.param's blocks: (kernel, expansion, output, SE bottleneck or 0, activation, stride).
# Not Keras' MobileNetV3Large: block 13 keeps stride 1 and block 14 (672 wide, not 960) strides, and the SE
# bottlenecks are a plain quarter (18, 30), so it has 245.6M MACs to Keras' 216.6M.
MOBILENET_V3_BLOCKS = ((3, 16, 16, 0, "relu", 1), (3, 64, 24, 0, "relu", 2), (3, 72, 24, 0, "relu", 1),
                       (5, 72, 40, 18, "relu", 2), (5, 120, 40, 30, "relu", 1), (5, 120, 40, 30, "relu", 1),
                       (3, 240, 80, 0, "hswish", 2), (3, 200, 80, 0, "hswish", 1), (3, 184, 80, 0, "hswish", 1),
                       (3, 184, 80, 0, "hswish", 1), (3, 480, 112, 120, "hswish", 1),
                       (3, 672, 112, 168, "hswish", 1), (5, 672, 160, 168, "hswish", 1),
                       (5, 672, 160, 168, "hswish", 2), (5, 960, 160, 240, "hswish", 1))


def squeezenet(size: int = 227, classes: int = 1000, weights=None):
    """SqueezeNet 1.1 as benchmark/squeezenet.param (benchncnn runs it at 227x227): softmax(classes).

    As in the .param, conv10 (1x1) pads its input by one pixel, so at 227 it computes 16x16 outputs.
    """
    from keras import layers

    inputs = image_input("squeezenet", size, weights)
    x = caffe_pool(conv(inputs, 64, 3, 2, name="conv1"), 3, 2, name="pool1")
    for i, (squeeze, expand) in enumerate(SQUEEZENET_FIRES, start=2):
        x = fire(x, squeeze, expand, f"fire{i}")
        if i in (3, 5):
            x = caffe_pool(x, 3, 2, name=f"pool{i}")
    x = conv(x, classes, 1, pad=1, name="conv10")
    x = layers.GlobalAveragePooling2D(name="pool10")(x)
    return named_model(inputs, layers.Softmax(name="prob")(x), "squeezenet", size)


def shufflenet(size: int = 224, classes: int = 1000, weights=None):
    """ShuffleNet V1 1x with 3 groups as benchmark/shufflenet.param: logits(classes), no softmax (as the .param).

    Each unit: grouped 1x1 (ReLU), channel shuffle, 3x3 depthwise, grouped 1x1; a stride-2 unit concatenates a
    3x3/2 average pool of its input, the others add their input; ReLU after. The first unit of stage 2 has an
    ungrouped first 1x1 (its input has 24 channels) and no shuffle; bottlenecks are a quarter of the branch output.
    """
    from keras import layers

    inputs = image_input("shufflenet", size, weights)
    x = caffe_pool(conv(inputs, 24, 3, 2, pad=1, name="conv1"), 3, 2, name="pool1")
    unit = 0
    for channels, units in SHUFFLENET_STAGES:
        for i in range(units):
            unit += 1
            n, c_in = f"resx{unit}", x.shape[-1]
            down = i == 0
            branch = channels - c_in if down else channels
            groups = 1 if unit == 1 else 3
            y = conv(x, branch // 4, 1, groups=groups, name=f"{n}_conv1")
            if groups > 1:
                y = channel_shuffle(y, 3, f"shuffle{unit}")
            y = depthwise(y, 3, 2 if down else 1, pad=1, name=f"{n}_conv2")
            y = conv(y, branch, 1, groups=3, act=None, name=f"{n}_conv3")
            if down:
                y = layers.Concatenate(name=f"{n}_concat")([caffe_pool(x, 3, 2, average=True, name=f"{n}_match"), y])
            else:
                y = layers.Add(name=f"{n}_elewise")([x, y])
            x = layers.ReLU(name=f"{n}_relu")(y)
    x = layers.GlobalAveragePooling2D(keepdims=True, name="pool_ave")(x)
    x = layers.Flatten(name="flatten")(conv(x, classes, 1, act=None, name="fc1000"))
    return named_model(inputs, x, "shufflenet", size)


def shufflenet_v2(size: int = 224, classes: int = 1000, weights=None):
    """ShuffleNet V2 1.0x as benchmark/shufflenet_v2.param: softmax(classes).

    A stride-2 unit runs both halves of its output from the whole input (3x3/2 depthwise + 1x1; 1x1 + 3x3/2
    depthwise + 1x1); the other units slice the channels in two, keep the first half and run the second.
    Depthwise convolutions have no activation, 1x1s a ReLU; every unit ends in a 2-group channel shuffle.
    """
    from keras import layers

    inputs = image_input("shufflenet_v2", size, weights)
    x = caffe_pool(conv(inputs, 24, 3, 2, pad=1, name="conv1"), 3, 2, name="pool1")
    unit = 0
    for channels, units in SHUFFLENET_V2_STAGES:
        half = channels // 2
        for i in range(units):
            unit += 1
            n, stride = f"branch{unit}", 2 if i == 0 else 1
            if i == 0:
                keep = conv(depthwise(x, 3, 2, pad=1, name=f"{n}_1_conv1"), half, 1, name=f"{n}_1_conv2")
                run = x
            else:
                c = x.shape[-1]
                keep, run = channel_slice(x, 0, half, f"slice{unit}_1"), channel_slice(x, half, c, f"slice{unit}_2")
            y = depthwise(conv(run, half, 1, name=f"{n}_2_conv1"), 3, stride, pad=1, name=f"{n}_2_conv2")
            y = conv(y, half, 1, name=f"{n}_2_conv3")
            x = channel_shuffle(layers.Concatenate(name=f"concat{unit}")([keep, y]), 2, f"shuffle{unit}")
    x = layers.GlobalAveragePooling2D(name="pool_ave")(conv(x, 1024, 1, name="conv5"))
    x = layers.Dense(classes, bias_initializer=random_bias(), name="fc1000")(x)
    return named_model(inputs, layers.Softmax(name="prob")(x), "shufflenet_v2", size)


def alexnet(size: int = 227, classes: int = 1000, weights=None):
    """AlexNet (Caffe's BVLC model) as benchmark/alexnet.param: softmax(classes).

    conv2, conv4 and conv5 have 2 groups; LRN (5 channels, alpha 1e-4, beta 0.75) follows the ReLUs of conv1
    and conv2; the .param's dropouts do nothing at inference and are left out.
    """
    from keras import layers

    lrn = custom_layers()[1]
    inputs = image_input("alexnet", size, weights)
    x = caffe_pool(lrn(name="norm1")(conv(inputs, 96, 11, 4, name="conv1")), 3, 2, name="pool1")
    x = caffe_pool(lrn(name="norm2")(conv(x, 256, 5, pad=2, groups=2, name="conv2")), 3, 2, name="pool2")
    x = conv(x, 384, 3, pad=1, name="conv3")
    x = conv(x, 384, 3, pad=1, groups=2, name="conv4")
    x = caffe_pool(conv(x, 256, 3, pad=1, groups=2, name="conv5"), 3, 2, name="pool5")
    x = layers.Flatten(name="flatten")(x)
    for i, units in ((6, 4096), (7, 4096)):
        x = layers.Dense(units, activation="relu", bias_initializer=random_bias(), name=f"fc{i}")(x)
    x = layers.Dense(classes, bias_initializer=random_bias(), name="fc8")(x)
    return named_model(inputs, layers.Softmax(name="prob")(x), "alexnet", size)


def vgg16(size: int = 224, classes: int = 1000, weights=None):
    """VGG-16 as benchmark/vgg16.param (Keras' VGG16 graph, with random biases): softmax(classes)."""
    from keras import layers

    inputs = image_input("vgg16", size, weights)
    x = inputs
    for block, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        for i in range(1, convs + 1):
            x = conv(x, filters, 3, pad=1, name=f"conv{block}_{i}")
        x = caffe_pool(x, 2, 2, name=f"pool{block}")
    x = layers.Flatten(name="flatten")(x)
    for i in (6, 7):
        x = layers.Dense(4096, activation="relu", bias_initializer=random_bias(), name=f"fc{i}")(x)
    x = layers.Dense(classes, bias_initializer=random_bias(), name="fc8")(x)
    return named_model(inputs, layers.Softmax(name="prob")(x), "vgg16", size)


def mobilenet_v3(size: int = 224, classes: int = 1000, weights=None):
    """MobileNetV3 as benchmark/mobilenet_v3.param (MOBILENET_V3_BLOCKS): softmax(classes).

    Blocks: 1x1 expansion (activation), depthwise (its activation after the squeeze-excite, whose gate is a
    hard sigmoid over two FCs, the first with ReLU), linear 1x1 projection, residual add where shapes allow.
    """
    from keras import layers

    inputs = image_input("mobilenet_v3_ncnn", size, weights)
    x = conv(inputs, 16, 3, 2, pad=1, act="hswish", name="stem")
    for i, (kernel, wide, out, squeeze, act, stride) in enumerate(MOBILENET_V3_BLOCKS, start=1):
        n = f"block{i}"
        y = x if i == 1 else conv(x, wide, 1, act=act, name=f"{n}_expand")  # block 1 has no expansion
        y = depthwise(y, kernel, stride, pad=kernel // 2, name=f"{n}_dw")
        if squeeze:
            s = conv(layers.GlobalAveragePooling2D(keepdims=True, name=f"{n}_se_pool")(y), squeeze, 1,
                     name=f"{n}_se_reduce")
            s = layers.Activation("hard_sigmoid", name=f"{n}_se_gate")(conv(s, wide, 1, act=None,
                                                                            name=f"{n}_se_expand"))
            y = layers.Multiply(name=f"{n}_se")([y, s])
        y = conv(activation(y, act, f"{n}_dw_{act}"), out, 1, act=None, name=f"{n}_project")
        x = layers.Add(name=f"{n}_add")([x, y]) if stride == 1 and x.shape[-1] == out else y
    x = conv(x, 960, 1, act="hswish", name="conv_last")
    x = activation(layers.GlobalAveragePooling2D(name="pool")(x), "hswish", "pool_hswish")
    x = activation(layers.Dense(1280, bias_initializer=random_bias(), name="fc1")(x), "hswish", "fc1_hswish")
    x = layers.Dense(classes, bias_initializer=random_bias(), name="fc2")(x)
    return named_model(inputs, layers.Softmax(name="prob")(x), "mobilenet_v3_ncnn", size)


__all__ = ["BENCHNCNN_NETWORKS", "alexnet", "mobilenet_v3", "shufflenet", "shufflenet_v2", "squeezenet", "vgg16"]
