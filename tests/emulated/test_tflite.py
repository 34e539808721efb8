"""A tiny .tflite under qemu: outputs equal the host run, the instruction count of the
invoke is identical run to run, and each core gets its own XNNPACK kernels."""

import shutil

import numpy as np
import pytest

from edgecnn.emulate import run_tflite
from edgecnn.errors import DataError

pytestmark = pytest.mark.emulated


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model path, input .npy path, host outputs) for a 16x16 conv net."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.DepthwiseConv2D(3), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4),
    ])
    work = tmp_path_factory.mktemp("tiny")
    path, x_path = work / "tiny.tflite", work / "x.npy"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    x = np.random.default_rng(0).random((1, 16, 16, 3), dtype=np.float32)
    np.save(x_path, x)
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return path, x_path, interp.get_tensor(interp.get_output_details()[0]["index"])


def test_count_is_identical_run_to_run_and_outputs_match_the_host(emulator, tiny, tmp_path):
    model, x, ref = tiny
    first = run_tflite(model, x, "a72")
    # Same files elsewhere: the guest's argv must not depend on where they live.
    elsewhere = tmp_path / ("a-much-longer-folder-name-" * 4)
    elsewhere.mkdir()
    shutil.copy(model, elsewhere / "renamed-model.tflite")
    shutil.copy(x, elsewhere / "input.npy")
    second = run_tflite(elsewhere / "renamed-model.tflite", elsewhere / "input.npy", "a72")
    assert first.qemu_cpu == "cortex-a72" and first.instructions > 10_000
    assert first.instructions == second.instructions
    assert len(first.outputs) == 1 and first.outputs[0].shape == ref.shape
    assert np.allclose(first.outputs[0], ref, atol=1e-5)
    assert np.array_equal(first.outputs[0], second.outputs[0])


def test_each_core_gets_its_own_kernels(emulator, tiny):
    model, x, ref = tiny
    a53 = run_tflite(model, x, "a53")
    a72 = run_tflite(model, x, "a72")
    assert np.allclose(a53.outputs[0], ref, atol=1e-5)
    # XNNPACK picks kernels from the CPU part in /proc/cpuinfo: a different count shows
    # that the a53 view, not a shared file, is what the guest read.
    assert a53.instructions != a72.instructions


def test_wrong_input_is_a_data_error(emulator, tiny, tmp_path):
    model, _, _ = tiny
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(DataError, match=r"bad.npy: shape \(1, 8, 8, 3\) float32, the model wants \(1, 16, 16, 3\)"):
        run_tflite(model, bad, "a72")
    with pytest.raises(DataError, match="input file not found"):
        run_tflite(model, tmp_path / "none.npy", "a72")
