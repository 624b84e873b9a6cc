"""engine.identity.face_process: dlib's face checks in a child process give what they give in-process,
fail at start-up when a model is missing, and survive the child's death."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from PIL import Image

from engine.identity.face_process import FaceProcess, FaceProcessDied
from engine.identity.faces import FaceIdentity, FaceModelError
from engine.models import ModelLoader
from engine.settings import RenderSettings


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    from skimage import data

    return [Image.fromarray(data.astronaut()), Image.fromarray(data.coffee())]  # a face, and none


@pytest.fixture(scope="module")
def process():
    faces = FaceProcess()
    yield faces
    faces.close()


def test_the_child_finds_and_embeds_what_the_parent_would(process, photos) -> None:
    here = FaceIdentity().faces_in(photos)
    there = process.faces_in(photos)
    assert there[0][0] == here[0][0] and there[0][0] is not None  # the astronaut's face, the same box
    np.testing.assert_allclose(there[0][1], here[0][1], atol=1e-6)
    assert there[1] == (None, None)  # the coffee cup has no face
    assert process.child_pid() != os.getpid()


def test_a_missing_model_fails_when_the_process_starts(tmp_path) -> None:
    with pytest.raises(FaceModelError, match="shape_predictor_5_face_landmarks.dat"):
        FaceProcess(models_dir=tmp_path)


def test_a_dead_child_fails_its_call_and_the_next_call_starts_a_new_one(photos) -> None:
    faces = FaceProcess()
    try:
        first = faces.child_pid()
        os.kill(first, signal.SIGKILL)
        with pytest.raises(FaceProcessDied, match="process died during faces_in"):
            faces.faces_in(photos[:1])
        [(box, embedding)] = faces.faces_in(photos[:1])
        assert box is not None and embedding.shape == (128,)
        assert faces.child_pid() != first
    finally:
        faces.close()


def test_the_engine_loader_runs_the_face_checks_in_their_own_process() -> None:
    loader = ModelLoader(RenderSettings())
    faces = loader.faces()
    try:
        assert isinstance(faces, FaceProcess) and faces.child_pid() != os.getpid()
        assert loader.sources["validation.face_check"] == str(faces.models_dir)
        assert loader.faces() is faces  # loaded once
    finally:
        faces.close()
