"""YOLO-Lite detectors (Pedoeem & Huang, arXiv 1811.05588) with a YOLOv2 region head.

Input contract: float RGB = uint8 pixel / 255 (scale 1/255, offset 0), size a
multiple of 32; the head grid is S = size / 32 (7 at 224).

Output layout: the raw head tensor (N, S, S, A*(5+C)) with no activation.
Channel block a (of A anchors) is contiguous:

    [a*(5+C) + 0 .. a*(5+C) + 4] = tx, ty, tw, th, objectness logit
    [a*(5+C) + 5 .. a*(5+C) + 4 + C] = class logits

Decoding happens outside the model (edgecnn.runner.postprocess.decode_yolo), as
in YOLOv2's region layer, for cell (cx, cy) and anchor (aw, ah) in grid cells:

    x = (sigmoid(tx) + cx) / S          w = aw * exp(tw) / S
    y = (sigmoid(ty) + cy) / S          h = ah * exp(th) / S
    score = sigmoid(objectness) * softmax(class logits)

DEFAULT_ANCHORS are YOLOv2's VOC anchors (13x13 grid units) scaled by 7/13 to
grid-cell units of the 7x7 grid at 224; `scaled_anchors` converts them to other grids.
"""

from __future__ import annotations

from edgecnn.errors import ModelError

SCALE = 1 / 255
OFFSET = 0.0
STRIDE = 32
VOC_ANCHORS_13 = ((1.3221, 1.73145), (3.19275, 4.00944), (5.05587, 8.09892), (9.47112, 4.84053),
                  (11.2364, 10.0071))
DEFAULT_GRID = 7
DEFAULT_ANCHORS = tuple((round(w * DEFAULT_GRID / 13, 5), round(h * DEFAULT_GRID / 13, 5))
                        for w, h in VOC_ANCHORS_13)
# Filters of the six 3x3 convolutions of the paper's final "trial 3 no batch norm" network.
TRIAL3_FILTERS = (16, 32, 64, 128, 128, 256)


def scaled_anchors(grid: int) -> list[list[float]]:
    """DEFAULT_ANCHORS in cell units of a grid x grid head (same size relative to the image)."""
    return [[round(w * grid / DEFAULT_GRID, 5), round(h * grid / DEFAULT_GRID, 5)] for w, h in DEFAULT_ANCHORS]


def yolo_lite(size: int = 224, classes: int = 5, anchors: int = 5, batch_norm: bool = False, leaky: float = 0.1):
    """YOLO-Lite trial 3 (no batch norm): six 3x3 convs with 2x2 max-pools after the first five, then a 1x1 head.

    Leaky ReLU after every conv but the linear head, 'same' padding, biases on.
    batch_norm=True puts batch norm after convs 1-6 (the paper's earlier trial; biases
    are then dropped, as in darknet, since batch norm has its own shift).
    """
    _check("yolo_lite", size, classes, anchors)
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    for i, filters in enumerate(TRIAL3_FILTERS, start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm, name=f"conv{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.LeakyReLU(negative_slope=leaky, name=f"leaky{i}")(x)
        if i < len(TRIAL3_FILTERS):
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    outputs = layers.Conv2D(anchors * (5 + classes), 1, padding="same", name="head")(x)
    name = f"yolo_lite{'_bn' if batch_norm else ''}_{size}"
    return keras.Model(inputs, outputs, name=name)


def yolo_lite_mobilenet(size: int = 224, classes: int = 5, anchors: int = 5, alpha: float = 0.35,
                        head_filters: int = 128, leaky: float = 0.1, weights: str | None = None):
    """YOLO-Lite's region head on a MobileNetV2 backbone (stride-32 features, keras.applications).

    Backbone -> conv3x3 head_filters (leaky ReLU) -> linear conv1x1 anchors*(5+classes).
    The graph is flat (the backbone is not a nested model) so pruning sees every layer.
    weights="imagenet" loads Keras' ImageNet backbone weights (downloads; Keras' sizes only).
    Note the backbone then expects inputs in [-1, 1]; the zoo preset keeps YOLO's 1/255
    because its demo weights are trained from scratch.
    """
    from edgecnn.zoo.mobilenet import V2_ALPHAS

    _check("yolo_lite_mobilenet", size, classes, anchors)
    if alpha not in V2_ALPHAS:
        raise ModelError(f"yolo_lite_mobilenet: alpha must be one of {', '.join(f'{a:g}' for a in V2_ALPHAS)}, "
                         f"got {alpha}")
    if weights not in (None, "imagenet"):
        raise ModelError(f"yolo_lite_mobilenet: weights must be None or 'imagenet', got {weights!r}")
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3), name="image")
    try:
        backbone = keras.applications.MobileNetV2(input_tensor=inputs, alpha=alpha, include_top=False,
                                                  weights=weights)
    except ValueError as e:
        raise ModelError(f"yolo_lite_mobilenet: {str(e).strip().splitlines()[0]}") from e
    # The last stride-32 block, not include_top=False's 1x1 expansion to 1280 channels: a 3x3 head
    # on 1280 channels would cost more MACs than the whole backbone.
    features = backbone.get_layer("block_16_project_BN").output
    x = layers.Conv2D(head_filters, 3, padding="same", name="head_conv")(features)
    x = layers.LeakyReLU(negative_slope=leaky, name="head_leaky")(x)
    outputs = layers.Conv2D(anchors * (5 + classes), 1, padding="same", name="head")(x)
    return keras.Model(inputs, outputs, name=f"yolo_lite_mobilenet_{alpha:g}_{size}")


def _check(family: str, size: int, classes: int, anchors: int) -> None:
    if size < STRIDE or size % STRIDE:
        raise ModelError(f"{family}: size must be a positive multiple of {STRIDE}, got {size}")
    if classes < 1 or anchors < 1:
        raise ModelError(f"{family}: classes and anchors must be at least 1, got classes={classes}, "
                         f"anchors={anchors}")


def fold_batch_norm(trained_bn, plain) -> None:
    """Copy a yolo_lite(batch_norm=True) model into the paper's batch-norm-free network, in place.

    Each batch norm becomes a per-channel scale on its convolution's kernel plus
    a bias, so `plain` computes exactly what `trained_bn` does in inference mode:
    train with batch norm (it converges far faster), deploy without it (the paper's
    FPS gain). Both models must come from yolo_lite() with the same options.
    """
    import numpy as np

    for i in range(1, len(TRIAL3_FILTERS) + 1):
        (kernel,) = trained_bn.get_layer(f"conv{i}").get_weights()
        bn = trained_bn.get_layer(f"bn{i}")
        gamma, beta, mean, var = bn.get_weights()
        scale = gamma / np.sqrt(var + bn.epsilon)
        plain.get_layer(f"conv{i}").set_weights([kernel * scale, beta - mean * scale])
    plain.get_layer("head").set_weights(trained_bn.get_layer("head").get_weights())
