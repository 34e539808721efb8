"""MobileNet V1, V2 and V3 classifiers, built by keras.applications (never hand-written here).

Input contract for every builder: float RGB = uint8 pixel / 127.5 - 1 (V3 is
built with include_preprocessing=False so it expects the same range as V1/V2).
The output is a softmax over `classes`.

Option checks that matter to users (alpha, size, classes) live in the zoo
registry; the builders re-check alpha because keras accepts any float without
ImageNet weights and would silently build a network nobody has published.
`weights="imagenet"` downloads Keras' ImageNet weights (classes must be 1000,
sizes as Keras allows).
"""

from __future__ import annotations

from typing import Callable

from edgecnn.errors import ModelError

V1_ALPHAS = (0.25, 0.5, 0.75, 1.0)
V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
V3_ALPHAS = (0.75, 1.0)
SCALE = 1 / 127.5
OFFSET = -1.0


def mobilenet_v1(size: int = 128, classes: int = 5, alpha: float = 0.25, dropout: float = 1e-3,
                 weights: str | None = None):
    """MobileNet V1 (Howard et al. 2017): size x size x 3 -> softmax(classes)."""
    _check("mobilenet_v1", alpha, V1_ALPHAS, classes, weights)
    import keras

    return _call(lambda: keras.applications.MobileNet(
        input_shape=(size, size, 3), alpha=alpha, dropout=dropout, include_top=True, weights=weights,
        classes=classes, name=f"mobilenet_v1_{alpha:g}_{size}"), "mobilenet_v1", weights)


def mobilenet_v2(size: int = 128, classes: int = 5, alpha: float = 0.35, weights: str | None = None):
    """MobileNet V2 (Sandler et al. 2018): size x size x 3 -> softmax(classes). Keras' V2 has no dropout."""
    _check("mobilenet_v2", alpha, V2_ALPHAS, classes, weights)
    import keras

    return _call(lambda: keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=alpha, include_top=True, weights=weights, classes=classes,
        name=f"mobilenet_v2_{alpha:g}_{size}"), "mobilenet_v2", weights)


def mobilenet_v3_small(size: int = 128, classes: int = 5, alpha: float = 1.0, minimalistic: bool = False,
                       dropout: float = 0.2, weights: str | None = None):
    """MobileNet V3 Small (Howard et al. 2019); `minimalistic` drops SE, hard-swish and 5x5 kernels."""
    return _v3("small", size, classes, alpha, minimalistic, dropout, weights)


def mobilenet_v3_large(size: int = 128, classes: int = 5, alpha: float = 1.0, minimalistic: bool = False,
                       dropout: float = 0.2, weights: str | None = None):
    """MobileNet V3 Large (Howard et al. 2019); `minimalistic` drops SE, hard-swish and 5x5 kernels."""
    return _v3("large", size, classes, alpha, minimalistic, dropout, weights)


def _v3(variant: str, size: int, classes: int, alpha: float, minimalistic: bool, dropout: float,
        weights: str | None):
    family = f"mobilenet_v3_{variant}"
    _check(family, alpha, V3_ALPHAS, classes, weights)
    import keras

    factory = keras.applications.MobileNetV3Small if variant == "small" else keras.applications.MobileNetV3Large
    name = f"{family}{'_minimalistic' if minimalistic else ''}_{alpha:g}_{size}"
    return _call(lambda: factory(
        input_shape=(size, size, 3), alpha=alpha, minimalistic=minimalistic, include_top=True, weights=weights,
        classes=classes, dropout_rate=dropout, include_preprocessing=False, name=name), family, weights)


def _check(family: str, alpha: float, alphas: tuple[float, ...], classes: int, weights: str | None) -> None:
    if alpha not in alphas:
        raise ModelError(f"{family}: alpha must be one of {', '.join(f'{a:g}' for a in alphas)}, got {alpha}")
    if weights not in (None, "imagenet"):
        raise ModelError(f"{family}: weights must be None or 'imagenet', got {weights!r}")
    if weights == "imagenet" and classes != 1000:
        raise ModelError(f"{family}: ImageNet weights need classes=1000, got classes={classes}")


def _call(make: Callable, family: str, weights: str | None):
    """Run a keras.applications factory, turning its complaints about options into ModelError."""
    try:
        return make()
    except ValueError as e:  # keras' own checks, e.g. a size ImageNet weights do not exist for
        raise ModelError(f"{family}: {str(e).strip().splitlines()[0]}") from e
    except Exception as e:
        if weights != "imagenet":
            raise
        # keras.utils.get_file raises a bare Exception when the download fails.
        raise ModelError(f"{family}: could not get the ImageNet weights: {e}") from e
