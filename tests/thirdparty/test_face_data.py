"""The labelled face photos (tests/fixtures/faces.py) that the face detectors are benched on.

The photos come from the scikit-image wheel (cached in the edgecnn cache, digests checked). The set
must load through edgecnn's own COCO loader with the data set's gapped ids, every box must lie in
its image, and OpenCV's Haar cascade (an independent detector) must find each of the astronaut's
faces where the hand box says, in the original and in every derived image: a wrong constant or a
wrong crop, flip, scale or paste offset fails here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures import faces as F

IMAGES = 12
FACES = 11
NO_FACE = {"cat.png", "coffee.png"}


@pytest.fixture(scope="module", params=sorted(F.PRESETS))
def face_set(request, tmp_path_factory):
    """(preset name, annotations JSON path) of a set made in a fresh folder."""
    return request.param, F.face_photos(tmp_path_factory.mktemp(f"faces-{request.param}"), request.param)


def _boxes_by_file(json_path):
    doc = json.loads(json_path.read_text())
    names = {i["id"]: i["file_name"] for i in doc["images"]}
    out = {n: [] for n in names.values()}
    for a in doc["annotations"]:
        x, y, w, h = a["bbox"]
        out[names[a["image_id"]]].append([x, y, x + w, y + h])
    return out


def test_set_loads_with_its_own_ids(face_set):
    from edgecnn.data.dataset import DetectionDataset
    from edgecnn.data.formats import load_dataset
    from edgecnn.data.preprocess import load_image

    preset, json_path = face_set
    ds = load_dataset(json_path)
    assert isinstance(ds, DetectionDataset)
    assert len(ds) == IMAGES and sum(len(s.boxes) for s in ds.samples) == FACES
    categories = F.PRESETS[preset]
    assert ds.classes == sorted(categories, key=categories.get)

    doc = json.loads(json_path.read_text())
    assert sorted(s.image_id for s in ds.samples) == [i["id"] for i in doc["images"]]
    assert min(s.image_id for s in ds.samples) == F.FIRST_IMAGE_ID  # not 1..N: the set's ids must be used
    assert {c["id"] for c in doc["categories"]} == set(categories.values())
    assert {a["category_id"] for a in doc["annotations"]} == set(categories.values())
    # Once the loader keeps the set's ids (issue 14), class i must carry its own id, not i + 1.
    if getattr(ds, "category_ids", None) is not None:
        assert [ds.category_id(i) for i in range(len(ds.classes))] == sorted(categories.values())

    for s in ds.samples:
        image = load_image(s.path)
        assert image.shape == (s.height, s.width, 3), s.path.name
        assert (len(s.boxes) == 0) == (s.path.name in NO_FACE), s.path.name
        for x1, y1, x2, y2 in s.boxes:
            assert 0 <= x1 < x2 <= s.width and 0 <= y1 < y2 <= s.height, (s.path.name, (x1, y1, x2, y2))
        # Which face a box is follows from the file name; its label must be that face's category.
        for (x1, y1, x2, y2), label in zip(s.boxes, s.labels):
            name = ds.classes[label]
            if s.path.name.startswith("both-"):
                face = "astronaut" if x2 < s.width / 2 else "cameraman"
            else:
                face = s.path.name.split("-")[0].split(".")[0]
            assert name in F.FACES[face].names, (s.path.name, name)


def test_plain_images_are_the_original_photos(face_set):
    """The undistorted images keep the photo's pixels, so the hand boxes apply to them unchanged."""
    from edgecnn.data.preprocess import load_image

    _, json_path = face_set
    photos = F.photos()
    for image, photo in (("astronaut.png", "astronaut.png"), ("cameraman.png", "camera.png")):
        assert np.array_equal(load_image(json_path.parent / "images" / image), load_image(photos[photo]))
    boxes = _boxes_by_file(json_path)
    assert boxes["astronaut.png"] == [list(F.ASTRONAUT_FACE)]
    assert boxes["cameraman.png"] == [list(F.CAMERAMAN_FACE)]


def test_haar_cascade_finds_the_astronaut_where_the_hand_box_is(face_set):
    """OpenCV's frontal-face cascade agrees with the hand box (IoU >= 0.5) in every astronaut image.

    The cascade misses the cameraman's three-quarter profile, so only her face is checked; her derived
    images check the crop, flip, scale and paste arithmetic that the cameraman's images share.
    """
    _, json_path = face_set
    boxes = _boxes_by_file(json_path)
    folder = json_path.parent / "images"
    astronaut = {"astronaut.png", "astronaut-flip.png", "astronaut-crop256.png", "astronaut-close-x2.png",
                 "both-on-rocket.jpg", "astronaut-small-on-brick.png"}
    found = F.haar_faces([folder / n for n in sorted(astronaut)])
    for path, detections in found.items():
        hand = min(boxes[path.name], key=lambda b: b[0])  # on the rocket, she is the left one
        best = max((F.iou(hand, d) for d in detections), default=0.0)
        assert best >= 0.5, f"{path.name}: hand box {hand}, cascade found {detections} (best IoU {best:.2f})"


def test_made_once_and_remade_for_other_categories(tmp_path):
    json_path = F.face_photos(tmp_path, "face")
    files = sorted((tmp_path / "images").iterdir())
    assert len(files) == IMAGES
    stamps = {p: p.stat().st_mtime_ns for p in [json_path, *files]}
    assert F.face_photos(tmp_path, {"face": 7}) == json_path
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # same content: nothing written

    F.face_photos(tmp_path, {"FACE_FEMALE": 30, "FACE_MALE": 2, "FEET_COVERED": 9})
    doc = json.loads(json_path.read_text())
    assert [c["id"] for c in doc["categories"]] == [2, 9, 30]
    by_image = {i["id"]: i["file_name"].split("-")[0].split(".")[0] for i in doc["images"]}
    used: dict[str, set] = {}
    for a in doc["annotations"]:
        used.setdefault(by_image[a["image_id"]], set()).add(a["category_id"])
    assert used == {"astronaut": {30}, "cameraman": {2}, "both": {2, 30}}


@pytest.mark.parametrize("categories,match", [
    ({"FACE_FEMALE": 3}, "cameraman"),  # the cameraman has no category
    ({"face": 7, "FACE_MALE": 12}, "cameraman"),  # and here two
    ({"face": 7, "other": 7}, "distinct"),
    ("coco", "preset"),
])
def test_categories_that_do_not_fit_are_refused(tmp_path, categories, match):
    with pytest.raises(ValueError, match=match):
        F.face_photos(tmp_path, categories)
    assert not (tmp_path / "annotations.json").exists()
