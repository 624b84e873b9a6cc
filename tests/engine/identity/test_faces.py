"""Face identity on real photographs, fully offline.

The models ship in face-recognition-models (PyPI) and run through dlib-bin; the photos ship
in scikit-image (``skimage/data/*.png``): astronaut (Eileen Collins, a frontal face),
camera (the cameraman, head turned down: only the CNN detector finds him) and coffee
(no face). The models load once per module.

Measured with these pins: astronaut vs mirrored 0.18, vs cropped 0.05, vs crop+rescale 0.08,
vs grayscale 0.18; astronaut vs cameraman 0.80-0.83. Match is <= 0.6.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from engine.identity.faces import MATCH_DISTANCE, FaceBox, FaceIdentity, FaceModelError, FaceScore

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def faces() -> FaceIdentity:
    return FaceIdentity()


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    from skimage import data

    return {
        "astronaut": Image.fromarray(data.astronaut()),  # 512x512 RGB
        "cameraman": Image.fromarray(data.camera()),  # 512x512 L
        "coffee": Image.fromarray(data.coffee()),  # 600x400 RGB, no face
    }


@pytest.fixture(scope="module")
def astronaut_embedding(faces, photos) -> np.ndarray:
    box = faces.find_face(photos["astronaut"])
    assert box is not None
    return faces.embed(photos["astronaut"], box)


@pytest.fixture(scope="module")
def cameraman(faces, photos) -> tuple[FaceBox, np.ndarray]:
    box = faces.find_face(photos["cameraman"])
    assert box is not None, "the CNN fallback should find the cameraman's turned head"
    return box, faces.embed(photos["cameraman"], box)


def _contains(outer: FaceBox, inner: FaceBox, slack: int = 0) -> bool:
    return (
        outer.left - slack <= inner.left
        and outer.top - slack <= inner.top
        and inner.right <= outer.right + slack
        and inner.bottom <= outer.bottom + slack
    )


# -- detection ------------------------------------------------------------------------------
def test_finds_the_astronauts_face_where_it_is(faces, photos):
    box = faces.find_face(photos["astronaut"])
    assert box is not None
    # her face sits in the upper middle of the portrait, about 90 px wide
    assert _contains(FaceBox(150, 50, 300, 200), box)
    assert 60 <= box.width <= 130 and 60 <= box.height <= 130


def test_an_image_without_a_face_is_not_found_and_does_not_raise(faces, photos, astronaut_embedding):
    assert faces.find_face(photos["coffee"]) is None
    score = faces.compare(photos["coffee"], astronaut_embedding)
    assert score == FaceScore(found=False, distance=None, box=None)
    assert not score.matches


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (8, 300), (300, 8), (16, 16), (64, 48), (700, 20)])
def test_flat_tiny_and_thin_images_have_no_face(faces, astronaut_embedding, size):
    # dlib's CNN detector raises or corrupts the heap on inputs of a few pixels: never fed those
    assert faces.find_face(Image.new("RGB", size, (200, 30, 30))) is None
    assert faces.compare(Image.new("L", size), astronaut_embedding).found is False


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "I;16"])
def test_other_image_modes_find_the_same_face(faces, photos, astronaut_embedding, mode):
    image = photos["astronaut"]
    if mode == "I;16":  # 16-bit grayscale, as some PNGs load
        converted = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
        assert converted.mode == "I;16"
    else:
        converted = image.convert(mode)
    score = faces.compare(converted, astronaut_embedding)
    assert score.found and score.distance is not None
    assert score.distance <= MATCH_DISTANCE
    assert _contains(FaceBox(150, 50, 300, 200), score.box)


def test_a_small_image_is_upsampled_for_detection(faces, photos, astronaut_embedding):
    small = photos["astronaut"].resize((200, 200), Image.LANCZOS)  # the face is ~35 px wide
    box = faces.find_face(small)
    assert box is not None and box.width < 60
    assert faces.distance(faces.embed(small, box), astronaut_embedding) <= MATCH_DISTANCE


def test_crop_returns_a_smaller_image_that_still_holds_the_face(faces, photos, astronaut_embedding):
    image = photos["astronaut"]
    box = faces.find_face(image)
    crop = box.crop(image)
    assert crop.width < image.width and crop.height < image.height
    assert crop.size == (round(box.width * 1.5), round(box.height * 1.5))
    assert box.crop(image, margin=0).size == (box.width, box.height)
    inside = faces.find_face(crop)
    assert inside is not None
    assert faces.distance(faces.embed(crop, inside), astronaut_embedding) <= MATCH_DISTANCE


def test_crop_is_clipped_to_the_image():
    image = Image.new("RGB", (100, 80))
    assert FaceBox(0, 0, 40, 40).crop(image, margin=1.0).size == (80, 80)
    assert FaceBox(70, 50, 100, 80).crop(image, margin=0.5).size == (45, 45)
    with pytest.raises(ValueError):
        FaceBox(10, 10, 10, 20)


# -- identity -------------------------------------------------------------------------------
def test_embedding_is_128_floats_and_the_distance_is_euclidean(faces, astronaut_embedding):
    assert astronaut_embedding.shape == (128,)
    assert np.isfinite(astronaut_embedding).all()
    assert faces.distance(astronaut_embedding, astronaut_embedding) == 0.0
    shifted = astronaut_embedding.copy()
    shifted[:4] += 0.3  # sqrt(4 * 0.09) = 0.6
    assert faces.distance(astronaut_embedding, shifted) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        faces.distance(astronaut_embedding, astronaut_embedding[:64])


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda im: ImageOps.mirror(im), id="mirrored"),
        pytest.param(lambda im: im.crop((60, 20, 460, 420)), id="cropped"),
        pytest.param(lambda im: im.crop((60, 20, 460, 420)).resize((300, 300), Image.LANCZOS), id="crop-rescaled"),
        pytest.param(lambda im: im.resize((900, 900), Image.BICUBIC), id="upscaled"),
    ],
)
def test_the_same_face_matches(faces, photos, astronaut_embedding, variant):
    score = faces.compare(variant(photos["astronaut"]), astronaut_embedding)
    assert score.found
    assert score.distance <= MATCH_DISTANCE, score
    assert score.matches


def test_two_different_people_do_not_match(faces, photos, astronaut_embedding, cameraman):
    box, embedding = cameraman
    assert _contains(FaceBox(150, 80, 300, 230), box)  # his head, above the camera
    assert faces.distance(astronaut_embedding, embedding) > MATCH_DISTANCE
    # the same holds with colour taken out of the picture: both grayscale
    gray = faces.compare(photos["astronaut"].convert("L"), embedding)
    assert gray.found and gray.distance > MATCH_DISTANCE and not gray.matches


def test_reference_embedding_is_the_mean_of_the_faces_found(faces, photos, astronaut_embedding, cameraman):
    astronaut = photos["astronaut"]
    mirrored = ImageOps.mirror(astronaut)
    mirrored_embedding = faces.embed(mirrored, faces.find_face(mirrored))
    reference = faces.reference_embedding([astronaut, photos["coffee"], mirrored])
    assert reference is not None and reference.shape == (128,)
    np.testing.assert_allclose(reference, (astronaut_embedding + mirrored_embedding) / 2)
    assert faces.compare(astronaut, reference).matches
    assert not faces.compare(photos["cameraman"], reference).matches
    assert faces.reference_embedding([photos["coffee"]]) is None
    assert faces.reference_embedding([]) is None


# -- loading --------------------------------------------------------------------------------
def test_missing_model_files_raise_a_clear_error(tmp_path):
    with pytest.raises(FaceModelError, match="shape_predictor_5_face_landmarks.dat"):
        FaceIdentity(models_dir=tmp_path)


def test_a_corrupt_model_file_raises_a_clear_error(tmp_path):
    (tmp_path / "shape_predictor_5_face_landmarks.dat").write_bytes(b"not a model")
    with pytest.raises(FaceModelError, match="cannot read face model"):
        FaceIdentity(models_dir=tmp_path)


def test_missing_dlib_raises_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(FaceModelError, match="dlib is not installed"):
        FaceIdentity()


def test_importing_the_module_loads_no_model_code():
    code = "import sys, engine.identity.faces; print([m for m in ('dlib', 'face_recognition_models') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
