"""Integer-input bundles take 8-bit pixels without a float round trip (issue 16 item 3): the pixel table gives
the same bytes as normalising and quantising, the manifest says which step a bundle uses, and the runner's
camera loop uses it."""

from __future__ import annotations

import numpy as np
import pytest

from edgecnn.data.preprocess import Preprocessing, normalize
from edgecnn.runner import tensors
from edgecnn.runner.tensors import PixelInput, pixel_table, to_integer

CASES = [  # (scale, offset, input scale, zero point, dtype, kind)
    (1 / 255, 0.0, 1 / 255, -128, np.int8, "xor"),  # YOLO-style 0..1 input
    (1 / 127.5, -1.0, 2 / 255, -1, np.int8, "lut"),  # MobileNet -1..1 as the TFLite converter calibrates it
    ((1 / 58.4, 1 / 57.1, 1 / 57.4), (-2.12, -2.04, -1.80), 0.0187, -14, np.int8, "lut"),  # ImageNet mean/std
    (1.0, 0.0, 1.0, 0, np.uint8, "identity"),
    (1 / 255, 0.0, 1 / 255, 0, np.uint8, "identity"),
]


@pytest.mark.parametrize("scale, offset, qscale, zp, dtype, kind", CASES)
@pytest.mark.parametrize("opencv", [True, False])
def test_table_gives_the_float_paths_bytes(scale, offset, qscale, zp, dtype, kind, opencv):
    image = np.random.default_rng(0).integers(0, 256, (31, 17, 3), dtype=np.uint8)
    image[0, :3] = [[0, 127, 255]] * 3  # the ends of the range, where clipping happens
    step = PixelInput(pixel_table(scale, offset, dtype, qscale, zp))
    if not opencv:
        step._lut = None  # the numpy path, as on a board without OpenCV
    assert step.kind == kind
    want = to_integer(normalize(image, scale, offset), dtype, qscale, zp)[None]
    got = step(image)
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_bad_pixels_are_refused():
    step = PixelInput(pixel_table(1 / 255, 0.0, np.int8, 1 / 255, -128))
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        step(np.zeros((4, 4, 3), np.float32))


def test_preprocessing_pixels_are_what_normalize_takes():
    prep = Preprocessing(size=(8, 12), mode="letterbox", scale=1 / 127.5, offset=-1.0, color="bgr")
    image = np.random.default_rng(1).integers(0, 256, (20, 10, 3), dtype=np.uint8)
    pixels, t1 = prep.pixels(image)
    batch, t2 = prep(image)
    assert pixels.dtype == np.uint8 and pixels.shape == (8, 12, 3) and t1 == t2
    assert np.array_equal(normalize(pixels, prep.scale, prep.offset)[None], batch)


def test_int8_bundles_record_their_step_and_the_runner_uses_it(tmp_path):
    from edgecnn.compile import compile_model
    from edgecnn.data.demo import demo_dataset
    from edgecnn.runner.run import evaluate_bundle, pixel_input
    from edgecnn.runner.sessions import open_session

    bundle = compile_model("mobilenet_v1", "host", backend="tflite", precision="int8").bundle
    assert bundle.manifest.input_step == {"kind": "lut", "dtype": "int8"}
    fp32 = compile_model("mobilenet_v1", "host", backend="tflite", precision="fp32").bundle
    assert fp32.manifest.input_step is None and pixel_input(fp32.manifest) is None
    data = demo_dataset("classification", "val").subset(12)
    session = open_session(bundle, threads=1)
    got = evaluate_bundle(session, data)
    assert got["end_to_end"]["input_step"] == "lut"
    # The float path (normalise, then quantise in feed) on the same images: the same predictions.
    step = pixel_input(bundle.manifest)
    prep = Preprocessing.from_dict(bundle.manifest.preprocessing)
    for s in data.samples:
        pixels, _ = prep.pixels(s.path)
        session.feed(step(pixels))
        session.invoke()
        by_table = session.fetch()[0]
        assert np.array_equal(by_table, session(prep(s.path)[0])[0])
