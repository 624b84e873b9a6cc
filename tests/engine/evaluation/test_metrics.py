"""Board metrics on sanity boards made of real photos (scikit-image's data pictures), scored with
the tiny CLIP and the real offline face models, and a foreign board read through a manifest.

The tiny CLIP has random weights: its similarities only prove the plumbing. It puts any two
views of one photo within 0.995 of each other, so the copy ceiling here sits above that, where
an exact copy (1.0) is still above it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from engine.evaluation.boards import EvalBoard, EvalFrame, find_boards, load_manifest
from engine.evaluation.metrics import BoardScorer
from engine.identity.faces import FaceIdentity, FaceRecord
from engine.identity.validate import ClipScorer
from engine.models import ModelLoader
from engine.settings import RenderSettings

TINY_CLIP_COPY_CEILING = 0.999


@pytest.fixture(scope="module")
def scorer(tiny_clip_dir) -> BoardScorer:
    model, processor = ModelLoader(RenderSettings(clip_model=str(tiny_clip_dir))).clip()
    return BoardScorer(ClipScorer(model, processor, faces=FaceIdentity()), copy_ceiling=TINY_CLIP_COPY_CEILING)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    astronaut = Image.fromarray(data.astronaut())
    width, height = astronaut.size
    pictures = {"reference": astronaut, "camera": Image.fromarray(data.camera()).convert("RGB")}
    for k in range(4):  # the same person, re-framed: cropped and shifted a little each time
        pictures[f"shifted_{k}"] = astronaut.crop((40 * k, 30 * k, width - 160 + 40 * k, height - 160 + 30 * k))
    for name, picture in pictures.items():
        picture.save(folder / f"{name}.png")
    return {name: folder / f"{name}.png" for name in pictures}


def board(name: str, frames: list[Path], reference: Path) -> EvalBoard:
    return EvalBoard(system="sanity", mode=name, story_id=name, seed=0, references=(reference,),
                     frames=tuple(EvalFrame(index=i, path=path, text="an astronaut in a white suit")
                                  for i, path in enumerate(frames, start=1)))


def test_a_board_of_the_reference_itself_is_all_copy_paste(scorer, photos):
    metrics = scorer.score(board("copies", [photos["reference"]] * 4, photos["reference"]))["metrics"]
    assert metrics["copy_paste_rate"] == 1.0
    assert metrics["clip_i"] == pytest.approx(1.0, abs=1e-3) and metrics["face_similarity"] == pytest.approx(1.0)
    assert metrics["copy_gap"] == pytest.approx(0.0, abs=1e-3)


def test_one_person_re_framed_is_the_same_face_and_no_copy(scorer, photos):
    shifted = [photos[f"shifted_{k}"] for k in range(4)]
    metrics = scorer.score(board("one person", shifted, photos["reference"]))["metrics"]
    assert metrics["copy_paste_rate"] == 0.0
    assert metrics["face_found_rate"] == metrics["crop_found_rate"] == 1.0
    assert metrics["face_similarity"] > 0.6  # dlib's distance under its usual 0.6 same-person line
    assert metrics["clip_i_crop"] > 0.95


def test_two_people_mixed_score_lower_on_faces_than_one_person(scorer, photos):
    one = scorer.score(board("one person", [photos[f"shifted_{k}"] for k in range(4)], photos["reference"]))
    mixed = scorer.score(board("two people", [photos["shifted_0"], photos["camera"], photos["shifted_1"],
                                              photos["camera"]], photos["reference"]))
    assert mixed["metrics"]["face_similarity"] < one["metrics"]["face_similarity"]
    assert mixed["metrics"]["clip_i_pairwise"] < one["metrics"]["clip_i_pairwise"]
    assert [row["face_similarity"] < 0.4 for row in mixed["frames"]] == [False, True, False, True]


def test_frame_1_is_the_reference_without_pictures_and_is_not_scored_against_itself(scorer, photos):
    frames = [photos["reference"], photos["shifted_1"], photos["camera"]]
    result = scorer.score(EvalBoard(system="s", mode="m", story_id="x", seed=None,
                                    frames=tuple(EvalFrame(i, p, "a person") for i, p in enumerate(frames, 1))))
    assert [row["scored"] for row in result["frames"]] == [False, True, True]
    assert result["metrics"]["copy_paste_rate"] == 0.0  # frame 1 is not its own copy


def manifest_json(folder: Path, frames: list[Path], reference: Path) -> Path:
    data = {"system": "Other", "mode": "default", "boards": [{
        "story_id": "en_01", "seed": 3, "references": [str(reference.relative_to(folder))],
        "frames": [{"order": i, "file": str(p.relative_to(folder)), "text": "an astronaut in a white suit"}
                   for i, p in reversed(list(enumerate(frames, start=1)))]}]}  # out of order: sorted by "order"
    path = folder / "manifest.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def manifest_csv(folder: Path, frames: list[Path], reference: Path) -> Path:
    path = folder / "manifest.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["system", "mode", "story_id", "seed", "order", "file", "text", "references"])
        for i, frame in enumerate(frames, start=1):
            writer.writerow(["Other", "default", "en_01", 3, i, frame.name, "an astronaut in a white suit",
                             reference.name if i == 1 else ""])
    return path


@pytest.mark.parametrize("write", [manifest_json, manifest_csv])
def test_a_foreign_board_by_manifest_scores_as_the_same_frames_as_our_board(scorer, photos, write):
    frames = [photos[f"shifted_{k}"] for k in range(3)] + [photos["camera"]]
    [theirs] = load_manifest(write(photos["reference"].parent, frames, photos["reference"]))
    assert (theirs.system, theirs.story_id, theirs.seed, [f.path for f in theirs.frames]) == (
        "Other", "en_01", 3, frames)
    ours = board("ours", frames, photos["reference"])
    assert scorer.score(theirs)["metrics"] == scorer.score(ours)["metrics"]


def test_a_manifest_naming_a_missing_frame_says_which(photos, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"system": "X", "boards": [
        {"story_id": "s", "frames": [{"order": 1, "file": "nope.png", "text": "t"}]}]}), encoding="utf-8")
    with pytest.raises(ValueError, match="nope.png, which is not a file"):
        find_boards([tmp_path])


class CountingFaces(FaceIdentity):
    """The real face models, counting the pictures they are asked to look at."""

    looked_at = 0

    def faces_in(self, images):
        self.looked_at += len(images)
        return super().faces_in(images)


@pytest.fixture()
def counting_scorer(tiny_clip_dir) -> BoardScorer:
    model, processor = ModelLoader(RenderSettings(clip_model=str(tiny_clip_dir))).clip()
    return BoardScorer(ClipScorer(model, processor, faces=CountingFaces()), copy_ceiling=TINY_CLIP_COPY_CEILING)


def recorded(faces: FaceIdentity, paths: list[Path], model: str | None = None) -> list[FaceRecord]:
    """What a board's face check would have recorded of each picture."""
    images = [Image.open(path).convert("RGB") for path in paths]
    return [FaceRecord.of(model or faces.signature(), image, box, face)
            for image, (box, face) in zip(images, faces.faces_in(images), strict=True)]


def test_faces_the_boards_own_check_recorded_are_reused_and_score_the_same(counting_scorer, photos):
    frames = [photos[f"shifted_{k}"] for k in range(3)] + [photos["camera"]]
    fresh = counting_scorer.score(board("fresh", frames, photos["reference"]))
    assert counting_scorer.faces.looked_at == 1 + 4  # the reference once, then each frame
    records = recorded(counting_scorer.faces, frames)
    counting_scorer.faces.looked_at = 0
    reused = counting_scorer.score(EvalBoard(
        system="sanity", mode="reused", story_id="r", seed=0, references=(photos["reference"],),
        frames=tuple(EvalFrame(i, p, "an astronaut in a white suit", face=record)
                     for i, (p, record) in enumerate(zip(frames, records, strict=True), start=1))))
    assert counting_scorer.faces.looked_at == 0
    assert [row["face_from"] for row in reused["frames"]] == ["check"] * 4
    assert [row["face_from"] for row in fresh["frames"]] == ["eval"] * 4
    for metric, value in fresh["metrics"].items():
        assert reused["metrics"][metric] == pytest.approx(value, abs=1e-4), metric


def test_a_face_record_from_other_face_models_or_of_other_pixels_is_not_trusted(counting_scorer, photos):
    frames = [photos["shifted_0"], photos["shifted_1"]]
    records = [recorded(counting_scorer.faces, frames[:1], model="dlib 0.0 (some other detector)")[0],
               recorded(counting_scorer.faces, [photos["shifted_2"]])[0]]  # the frame file was replaced since
    counting_scorer.faces.looked_at = 0
    result = counting_scorer.score(EvalBoard(
        system="s", mode="m", story_id="x", seed=0, references=(photos["reference"],),
        frames=tuple(EvalFrame(i, p, "a person", face=r) for i, (p, r) in enumerate(zip(frames, records), 1))))
    assert counting_scorer.faces.looked_at == 1 + 2
    assert [row["face_from"] for row in result["frames"]] == ["eval", "eval"]


def test_a_panel_without_the_character_is_not_searched_for_a_face(counting_scorer, photos):
    frames = (EvalFrame(1, photos["shifted_0"], "Aldar Kose"), EvalFrame(2, photos["camera"], "the bai", hero=False),
              EvalFrame(3, photos["shifted_1"], "Aldar Kose"))
    result = counting_scorer.score(EvalBoard(system="s", mode="m", story_id="x", seed=0,
                                             references=(photos["reference"],), frames=frames))
    assert counting_scorer.faces.looked_at == 1 + 2
    panel = result["frames"][1]
    assert (panel["scored"], panel["face_found"], panel["crop_found"], panel["face_from"]) == (False, None, None, None)
    assert result["metrics"]["face_found_rate"] == 1.0  # of the two frames with the character
