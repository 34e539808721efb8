"""Building blocks of the benchncnn reconstructions (edgecnn.zoo.benchnets): ncnn's layers in Keras terms.

Every block follows the ncnn layer it stands for: symmetric zero padding as
ncnn's Convolution (Keras 'same' pads unevenly at stride 2), Caffe's ceil-mode
pooling, random biases (pnnx drops all-zero biases, and a .param's
convolutions carry them).

The parts Keras has no layer for, or exports in a form pnnx cannot map, are
four small layers made by `custom_layers()`:

- GroupedConv2D: Keras compiles grouped convolutions with XLA, which tf2onnx
  exports as an opaque StatefulPartitionedCall; one grouped tf.nn.convolution
  becomes one ONNX Conv(group=g), i.e. ncnn's grouped ConvolutionDepthWise.
- LocalResponseNorm: Caffe's cross-channel LRN (AlexNet) -> ONNX LRN -> ncnn LRN.
- ChannelSlice / ChannelPad: a named channel range or zero channels appended
  (ncnn's Slice/Crop and Padding); Keras ops would work but get per-process
  auto names, which would change a model's content hash from build to build.

Channel shuffle is written channels-first (permute, reshape to groups, swap,
reshape, permute back) so that tf2onnx's channels-first export leaves the exact
pattern pnnx turns into one ncnn ShuffleChannel.
"""

from __future__ import annotations

from functools import cache

from edgecnn.errors import ModelError


@cache
def custom_layers():
    """(GroupedConv2D, LocalResponseNorm, ChannelSlice, ChannelPad), made and registered with Keras once."""
    import keras
    import tensorflow as tf

    package = "edgecnn.benchnets"

    @keras.saving.register_keras_serializable(package)
    class GroupedConv2D(keras.layers.Conv2D):
        """Conv2D whose grouped case is one TF convolution (exportable), not Keras' XLA-compiled one."""

        def convolution_op(self, inputs, kernel):
            return tf.nn.convolution(inputs, kernel, strides=list(self.strides), padding=self.padding.upper(),
                                     dilations=list(self.dilation_rate))

    @keras.saving.register_keras_serializable(package)
    class LocalResponseNorm(keras.layers.Layer):
        """Caffe's across-channel LRN: x / (bias + alpha / size * sum of x^2 over `size` channels) ^ beta."""

        def __init__(self, size=5, alpha=1e-4, beta=0.75, bias=1.0, **kwargs):
            super().__init__(**kwargs)
            self.size, self.alpha, self.beta, self.bias = size, alpha, beta, bias

        def call(self, x):
            # TF's alpha multiplies the plain sum, Caffe's (and ncnn's) the mean over the window.
            return tf.nn.local_response_normalization(x, self.size // 2, self.bias, self.alpha / self.size,
                                                      self.beta)

        def get_config(self):
            return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta,
                    "bias": self.bias}

    @keras.saving.register_keras_serializable(package)
    class ChannelSlice(keras.layers.Layer):
        """Channels start..stop-1 of an NHWC tensor."""

        def __init__(self, start, stop, **kwargs):
            super().__init__(**kwargs)
            self.start, self.stop = start, stop

        def call(self, x):
            return x[..., self.start:self.stop]

        def compute_output_shape(self, shape):
            return (*shape[:-1], self.stop - self.start)

        def get_config(self):
            return {**super().get_config(), "start": self.start, "stop": self.stop}

    @keras.saving.register_keras_serializable(package)
    class ChannelPad(keras.layers.Layer):
        """`extra` zero channels appended to an NHWC tensor."""

        def __init__(self, extra, **kwargs):
            super().__init__(**kwargs)
            self.extra = extra

        def call(self, x):
            return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra]])

        def compute_output_shape(self, shape):
            return (*shape[:-1], shape[-1] + self.extra)

        def get_config(self):
            return {**super().get_config(), "extra": self.extra}

    return GroupedConv2D, LocalResponseNorm, ChannelSlice, ChannelPad


def check_weights(family: str, weights) -> None:
    """Only random weights exist for these reconstructions."""
    if weights is not None:
        raise ModelError(f"{family}: there are no pretrained weights for this benchncnn reconstruction; "
                         "use weights='random'")


def random_bias():
    """A bias initializer that keeps biases non-zero, so pnnx keeps them as the .param has them."""
    import keras

    return keras.initializers.RandomUniform(-0.1, 0.1)


def conv(x, filters: int, kernel: int, stride: int = 1, pad: int = 0, groups: int = 1, act: str | None = "relu",
         bias: bool = True, bn: bool = False, name: str | None = None):
    """ncnn's Convolution: `pad` zeros on every side, a bias (unless bias=False), batch norm where the .param
    keeps one unfolded (bn=True), then act: "relu", "leaky" (LeakyReLU 0.1), "hswish" or None."""
    from keras import layers

    if act not in (None, "relu", "leaky", "hswish"):
        raise ValueError(f"unknown activation {act!r}")
    x, padding = _padded(x, kernel, stride, pad, name)
    relu = "relu" if act == "relu" and not bn else None
    options = dict(activation=relu, use_bias=bias, bias_initializer=random_bias(), name=name)
    if groups == 1:
        x = layers.Conv2D(filters, kernel, stride, padding, **options)(x)
    else:
        x = custom_layers()[0](filters, kernel, stride, padding, groups=groups, **options)(x)
    if bn:
        x = layers.BatchNormalization(name=name and f"{name}_bn")(x)
        if act == "relu":
            x = layers.ReLU(name=name and f"{name}_relu")(x)
    if act in ("leaky", "hswish"):
        x = activation(x, act, name and f"{name}_{act}")
    return x


def activation(x, kind: str, name: str | None = None):
    """A separate activation layer: "relu", "leaky" (LeakyReLU 0.1) or "hswish" (hard-swish)."""
    from keras import layers

    if kind == "relu":
        return layers.ReLU(name=name)(x)
    if kind == "leaky":
        return layers.LeakyReLU(negative_slope=0.1, name=name)(x)
    return layers.Activation("hard_swish", name=name)(x)


def fire(x, squeeze: int, expand: int, name: str, bn_squeeze: bool = False, bn_expand: bool = False):
    """SqueezeNet's fire module: 1x1 squeeze (ReLU), then 1x1 and 3x3 expands (ReLU) concatenated."""
    from keras import layers

    s = conv(x, squeeze, 1, bn=bn_squeeze, name=f"{name}_squeeze1x1")
    return layers.Concatenate(name=f"{name}_concat")([conv(s, expand, 1, bn=bn_expand, name=f"{name}_expand1x1"),
                                                     conv(s, expand, 3, pad=1, bn=bn_expand,
                                                          name=f"{name}_expand3x3")])


def depthwise(x, kernel: int, stride: int = 1, pad: int = 0, relu: bool = False, name: str | None = None):
    """ncnn's ConvolutionDepthWise with one filter per channel: `pad` zeros on every side, bias, optional ReLU."""
    from keras import layers

    x, padding = _padded(x, kernel, stride, pad, name)
    return layers.DepthwiseConv2D(kernel, stride, padding, activation="relu" if relu else None,
                                  bias_initializer=random_bias(), name=name)(x)


def _padded(x, kernel: int, stride: int, pad: int, name: str | None):
    """(input, Keras padding) giving ncnn's symmetric padding: 'same' is symmetric only at stride 1 and pad k//2."""
    from keras import layers

    if pad == 0:
        return x, "valid"
    if stride == 1 and kernel % 2 == 1 and pad == kernel // 2:
        return x, "same"
    return layers.ZeroPadding2D(pad, name=name and f"{name}_pad")(x), "valid"


def caffe_pool(x, kernel: int, stride: int, average: bool = False, name: str | None = None):
    """Caffe's (and ncnn's default) pooling without padding: ceil mode, the extra row/column padded at the end.

    Keras pools in floor mode. Where the window does not fit evenly, max pooling uses 'same' (Caffe's size,
    its one padded row and column at the end, where Caffe puts them). Average pooling pads those rows and
    columns with zeros and pools 'valid': pnnx cannot map an average pool with uneven padding, and the zeros
    change only the last row and column of values (Caffe leaves padding out of the average), not the work.
    """
    from keras import layers

    size = x.shape[1]
    caffe = -(-(size - kernel) // stride) + 1
    tail = (caffe - 1) * stride + kernel - size  # rows (and columns) Caffe pads at the end
    fits = tail == 0
    if not fits and (-(-size // stride) != caffe or tail // 2 != 0):
        raise ModelError(f"pooling {kernel}/{stride} of a {size}-pixel map has no Keras equivalent of Caffe's "
                         "ceil mode; choose another input size")
    if average:
        if not fits:
            x = layers.ZeroPadding2D(((0, tail), (0, tail)), name=name and f"{name}_pad")(x)
        return layers.AveragePooling2D(kernel, stride, "valid", name=name)(x)
    return layers.MaxPooling2D(kernel, stride, "valid" if fits else "same", name=name)(x)


def channel_shuffle(x, groups: int, name: str):
    """ShuffleNet's channel shuffle, in the channels-first form pnnx maps to ncnn's ShuffleChannel."""
    from keras import layers

    h, w, c = x.shape[1:]
    x = layers.Permute((3, 1, 2), name=f"{name}_nchw")(x)
    x = layers.Reshape((groups, c // groups, h, w), name=f"{name}_split")(x)
    x = layers.Permute((2, 1, 3, 4), name=f"{name}_swap")(x)
    x = layers.Reshape((c, h, w), name=f"{name}_merge")(x)
    return layers.Permute((2, 3, 1), name=name)(x)


def channel_slice(x, start: int, stop: int, name: str):
    """Channels start..stop-1 (ncnn's Slice or Crop)."""
    return custom_layers()[2](start, stop, name=name)(x)


def channel_pad(x, extra: int, name: str):
    """`extra` zero channels after the last (ncnn's Padding with behind=extra)."""
    return custom_layers()[3](extra, name=name)(x)


def image_input(family: str, size: int, weights):
    """The size x size x 3 input named as in the .param files, after refusing pretrained weights."""
    import keras

    check_weights(family, weights)
    return keras.Input((size, size, 3), name="data")


def named_model(inputs, outputs, family: str, size: int):
    """The keras.Model, named <family>_<size> (stable, unlike Keras' counters)."""
    import keras

    return keras.Model(inputs, outputs, name=f"{family}_{size}")


__all__ = ["activation", "caffe_pool", "channel_pad", "channel_shuffle", "channel_slice", "check_weights", "conv",
           "custom_layers", "depthwise", "fire", "image_input", "named_model", "random_bias"]
