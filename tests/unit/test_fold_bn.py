"""Batch norm folded into YOLO-Lite's convolutions computes the same function without it."""

import numpy as np


def test_folded_model_matches_batch_norm_model():
    import keras

    from edgecnn.zoo.yolo_lite import fold_batch_norm, yolo_lite

    rng = np.random.default_rng(0)
    bn = yolo_lite(size=64, classes=3, batch_norm=True)
    for layer in bn.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, g.shape), rng.normal(0, 0.5, b.shape),
                               rng.normal(0, 0.5, m.shape), rng.uniform(0.5, 2, v.shape)])
    plain = yolo_lite(size=64, classes=3)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in plain.layers)
    fold_batch_norm(bn, plain)
    x = rng.uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    expected = bn(x, training=False).numpy()
    assert np.abs(expected).max() > 0.5  # the BN statistics really change the output
    np.testing.assert_allclose(plain(x).numpy(), expected, atol=1e-4)
