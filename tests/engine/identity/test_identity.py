"""Face-level identity in the validator: CLIP on the face crop plus the face-embedding distance,
with real offline face models (dlib) on real photos that ship with scikit-image, and the tiny CLIP."""

from __future__ import annotations

import gc
import weakref

import pytest
from PIL import Image, ImageOps

from engine.board_files import FrameResult
from engine.identity.faces import FaceIdentity
from engine.identity.validate import Attempt, ClipScorer, RetryPolicy
from engine.models import ModelLoader
from engine.planning.offline.planner import OfflinePlanner
from engine.rendering.prompts import build_prompt
from engine.settings import PlannerSettings, PromptSettings, RenderSettings


@pytest.fixture(scope="module")
def scorer(tiny_clip_dir):
    loader = ModelLoader(RenderSettings(clip_model=str(tiny_clip_dir)))
    model, processor = loader.clip()
    return ClipScorer(model, processor, faces=FaceIdentity())


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    from skimage import data

    return {"astronaut": Image.fromarray(data.astronaut()), "camera": Image.fromarray(data.camera()).convert("RGB"),
            "coffee": Image.fromarray(data.coffee())}


def test_same_face_matches_and_another_person_does_not(scorer, photos):
    reference = photos["astronaut"]
    same, other = ImageOps.mirror(reference), photos["camera"]
    scores = scorer.score([same, other], texts=["a woman", "a man"], reference=reference,
                          framings=["close-up", "close-up"])
    assert scores[0]["face_found"] == scores[1]["face_found"] == 1.0
    assert scores[0]["face_distance"] <= 0.6 < scores[1]["face_distance"]
    assert {"identity", "clip_t", "face_expected"} <= set(scores[0])


def test_no_face_is_recorded_not_a_crash(scorer, photos):
    [score] = scorer.score([photos["coffee"]], texts=["a cup"], reference=photos["astronaut"], framings=["close-up"])
    assert (score["face_found"], score["face_expected"]) == (0.0, 1.0)
    assert "face_distance" not in score and "identity" in score  # CLIP on the whole frame instead


def test_the_accept_rule_rerolls_a_good_clip_score_with_the_wrong_face():
    policy = RetryPolicy(threshold=0.70, max_retries=2, copy_ceiling=0.95, face_threshold=0.6)
    good_clip = {"identity": 0.9, "face_found": 1.0, "face_expected": 1.0}
    assert policy.verdict({**good_clip, "face_distance": 0.82}) == "wrong_face"
    assert policy.verdict({**good_clip, "face_distance": 0.3}) == "pass"
    assert policy.verdict({"identity": 0.9, "face_found": 0.0, "face_expected": 1.0}) == "no_face"  # close-up
    assert policy.verdict({"identity": 0.9, "face_found": 0.0, "face_expected": 0.0}) == "pass"  # wide shot
    assert policy.verdict({"identity": 0.5, "face_distance": 0.1}) == "low_identity"


def test_a_users_picture_is_the_reference_of_every_frame_in_place_of_the_one_passed(scorer, photos):
    theirs = scorer.with_pictures([photos["astronaut"]])
    same, other = ImageOps.mirror(photos["astronaut"]), photos["camera"]
    # the reference passed (frame 1, in a board) is not used: the picture is
    scores = theirs.score([same, other], texts=["a woman", "a man"], reference=other, framings=["close-up"] * 2)
    assert scores[0]["face_distance"] <= 0.6 < scores[1]["face_distance"]
    assert scores[0]["identity"] > scores[1]["identity"]
    [alone] = theirs.score([same], texts=["a woman"], reference=None, framings=["close-up"])  # frame 1 too
    assert alone["identity"] == pytest.approx(scores[0]["identity"], abs=2e-3)
    assert scorer.score([same], texts=["a woman"], reference=None)[0].get("identity") is None  # the original is unchanged


def test_a_checked_frame_keeps_what_its_face_check_found_through_its_saved_record(scorer, photos, tmp_path):
    picture = ImageOps.mirror(photos["astronaut"])
    [score] = scorer.score([picture], texts=["a woman"], reference=photos["astronaut"], framings=["close-up"])
    kept = Attempt.of(7, score, "pass")
    assert "face" not in kept.scores and kept.face.box is not None and kept.face.describes(
        scorer.faces.signature(), picture)
    shot = OfflinePlanner(PlannerSettings()).plan("Aldar Kose smiles. He rides off.", shots=2).shots[0]
    frame = FrameResult(index=1, shot=shot, prompt=build_prompt(shot, PromptSettings()),
                        attempts=(Attempt(seed=6, scores={"identity": 0.1}), kept), chosen=1, accepted=True,
                        picture=picture)
    picture.save(tmp_path / frame.file_name)
    again = FrameResult.from_json(frame.to_json(), tmp_path)
    assert again.face == kept.face and again.attempts[0].face is None
    assert again.face.describes(scorer.faces.signature(), again.image)  # the PNG holds the checked pixels


def test_each_board_is_checked_against_its_own_frame_one_even_when_python_reuses_its_address(tiny_clip_dir, photos):
    """A board's frame 1 is freed when the board ends, and the next board's frame 1 may get its
    memory address: a reference cached by address would score the new board against the old one."""
    model, processor = ModelLoader(RenderSettings(clip_model=str(tiny_clip_dir))).clip()
    shared = ClipScorer(model, processor)  # one validator for every board, as in the engine
    frame = ImageOps.mirror(photos["astronaut"])
    # the cache keeps the picture it was computed from, so no later picture can be given its address
    reference = photos["camera"].copy()
    cached = weakref.ref(reference)
    shared.score([frame], texts=["a woman"], reference=reference)
    del reference
    gc.collect()
    assert cached() is not None, "the cached frame 1 was freed: the next board's frame 1 could take its address"
    # boards one after another, as the engine runs them: Python often reuses a freed picture's address
    for name in ["astronaut", "camera", "coffee"] * 4:
        reference = photos[name].copy()  # this board's frame 1: a new picture object
        got = shared.score([frame], texts=["a woman"], reference=reference)
        expected = ClipScorer(model, processor).score([frame], texts=["a woman"], reference=reference)
        assert got == expected, f"board with frame 1 = {name}"
        del reference
