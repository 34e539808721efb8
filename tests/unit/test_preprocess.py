"""Image decoding, resize transforms and their inverse, normalisation and the Preprocessing spec."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edgecnn.data.preprocess import Preprocessing, Transform, load_image, normalize, resize, to_batch
from edgecnn.errors import DataError


def test_load_image_is_rgb_uint8(tmp_path):
    bgr = np.zeros((12, 16, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    image = load_image(tmp_path / "red.png")
    assert image.shape == (12, 16, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [200, 0, 0]


def test_load_image_converts_gray_and_alpha(tmp_path):
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((10, 14), 77, np.uint8))
    bgra = np.zeros((10, 14, 4), np.uint8)
    bgra[...] = (10, 20, 30, 128)
    cv2.imwrite(str(tmp_path / "bgra.png"), bgra)
    gray = load_image(tmp_path / "gray.png")
    assert gray.shape == (10, 14, 3) and (gray == 77).all()
    assert load_image(tmp_path / "bgra.png")[5, 5].tolist() == [30, 20, 10]


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "none.png"))):
        load_image(tmp_path / "none.png")
    for name, content in (("junk.jpg", b"\x00garbage"), ("empty.png", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match="cannot decode image " + re.escape(str(tmp_path / name))):
            load_image(tmp_path / name)


def test_stretch_resize():
    image = np.full((48, 64, 3), 50, np.uint8)
    out, t = resize(image, (24, 16))
    assert out.shape == (24, 16, 3) and (out == 50).all()
    assert (t.scale_x, t.scale_y, t.pad_x, t.pad_y) == (0.25, 0.5, 0, 0)
    np.testing.assert_allclose(t.boxes_to_original([[4, 6, 8, 12]]), [[16, 12, 32, 24]])


def test_letterbox_geometry_and_padding():
    image = np.full((48, 64, 3), 200, np.uint8)  # h 48, w 64 -> 32x24 inside a 32x32 input
    out, t = resize(image, (32, 32), mode="letterbox", pad_value=114)
    assert out.shape == (32, 32, 3)
    assert (t.scale_x, t.scale_y, t.pad_x, t.pad_y) == (0.5, 0.5, 0, 4)
    assert (out[:4] == 114).all() and (out[28:] == 114).all()
    assert (out[4:28] == 200).all()


def test_letterbox_inverse_against_real_pixels():
    """Draw a box, letterbox the image, find the box in the output and map it back."""
    image = np.zeros((30, 40, 3), np.uint8)
    x1, y1, x2, y2 = 8, 5, 30, 21  # pixels [x1, x2) x [y1, y2)
    image[y1:y2, x1:x2] = 255
    out, t = resize(image, (64, 64), mode="letterbox", pad_value=0)
    ys, xs = np.nonzero(out[..., 0] > 127)
    found = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
    back = t.boxes_to_original(found)
    np.testing.assert_allclose(back, [[x1, y1, x2, y2]], atol=1.0)


@pytest.mark.parametrize("src, dst", [((48, 64), (32, 32)), ((30, 100), (64, 48)), ((37, 23), (320, 320))])
@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_boxes_round_trip_within_one_pixel(src, dst, mode):
    h, w = src
    _, t = resize(np.zeros((h, w, 3), np.uint8), dst, mode=mode)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1, (20, 4)) * [w, h, w, h]
    boxes = np.concatenate([np.minimum(xy[:, :2], xy[:, 2:]), np.maximum(xy[:, :2], xy[:, 2:])], axis=1)
    forward = t.boxes_to_input(boxes)
    assert (forward[:, [0, 2]] >= t.pad_x - 1e-3).all() and (forward[:, [0, 2]] <= dst[1] - t.pad_x + 1e-3).all()
    np.testing.assert_allclose(t.boxes_to_original(forward), boxes, atol=1.0)


def test_boxes_to_original_clips_and_keeps_empty():
    t = Transform(scale_x=0.5, scale_y=0.5, pad_x=0, pad_y=4, source_size=(48, 64))
    np.testing.assert_allclose(t.boxes_to_original([[-5, 0, 40, 40]]), [[0, 0, 64, 48]])
    assert t.boxes_to_original(np.zeros((0, 4))).shape == (0, 4)


def test_resize_rejects_bad_arguments():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(DataError, match="resize mode 'crop'"):
        resize(image, (4, 4), mode="crop")
    with pytest.raises(DataError, match="two positive integers"):
        resize(image, (4, 0))


def test_resize_keeps_single_channel_axis():
    out, _ = resize(np.zeros((10, 20, 1), np.uint8), (8, 8), mode="letterbox")
    assert out.shape == (8, 8, 1)


def test_normalize_and_to_batch():
    image = np.array([[[0, 127, 255]]], np.uint8)
    x = normalize(image, 1 / 127.5, -1.0)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [[[-1.0, -0.003922, 1.0]]], atol=1e-5)
    per_channel = normalize(image, (1.0, 2.0, 0.5), (0.0, -10.0, 1.0))
    np.testing.assert_allclose(per_channel, [[[0.0, 244.0, 128.5]]])
    q = normalize(image, 1.0, -128.0, dtype=np.int8)
    assert q.dtype == np.int8 and q.tolist() == [[[-128, -1, 127]]]
    assert normalize(image, 2.0, 0.0, dtype=np.uint8).tolist() == [[[0, 254, 255]]]  # saturates
    batch = to_batch(x)
    assert batch.shape == (1, 1, 1, 3) and batch.flags["C_CONTIGUOUS"]


def test_preprocessing_call_on_path_and_array(tmp_path):
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0] = 255
    cv2.imwrite(str(tmp_path / "red.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    spec = Preprocessing(size=(32, 32), mode="letterbox", scale=1 / 255, offset=0.0)
    batch, t = spec(tmp_path / "red.png")
    assert batch.shape == (1, 32, 32, 3) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, 16, 16], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(batch[0, 0, 0], [114 / 255] * 3, rtol=1e-6)
    assert t.pad_y == 4
    same, _ = spec(rgb)
    np.testing.assert_array_equal(same, batch)
    bgr_batch, _ = Preprocessing(size=(32, 32), color="bgr")(rgb)
    np.testing.assert_allclose(bgr_batch[0, 16, 16], [0.0, 0.0, 1.0])
    with pytest.raises(DataError, match="uint8 RGB"):
        spec(np.zeros((8, 8), np.uint8))


def test_preprocessing_dict_round_trip():
    spec = Preprocessing(size=[224, 160], mode="letterbox", scale=[0.1, 0.2, 0.3], offset=-1, color="bgr")
    data = json.loads(json.dumps(spec.to_dict()))
    assert data == {"size": [224, 160], "mode": "letterbox", "scale": [0.1, 0.2, 0.3], "offset": -1.0,
                    "color": "bgr", "pad_value": 114}
    again = Preprocessing.from_dict(data)
    assert again == spec and again.size == (224, 160) and hash(again) == hash(spec)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"size": [8, 8], "interpolation": "area"}, "unknown keys"),
        ({"mode": "letterbox"}, "no 'size'"),
        ({"size": [8, 8], "mode": "crop"}, "resize mode"),
        ({"size": [8, 8], "color": "yuv"}, "color order"),
        ({"size": [8, 8], "scale": [1, 2]}, "scale"),
        ({"size": 8}, "two positive integers"),
    ],
)
def test_preprocessing_from_dict_rejects(data, message):
    with pytest.raises(DataError, match=message):
        Preprocessing.from_dict(data)


def test_preprocess_never_imports_tensorflow():
    code = "import sys, edgecnn.data.preprocess, edgecnn.data.formats; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
