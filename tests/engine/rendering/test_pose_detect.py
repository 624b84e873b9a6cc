"""pose_source = "detect": a picture per pose, OpenPose finds the figure once at start-up, and the
shots draw the detected pose for their framing like a built-in template.

Detection runs through controlnet_aux's real Body/OpenposeDetector code with a stand-in
network that reads joint dots (tests/openpose_stub.py); loading the real weights format is
checked with a randomly initialised full-size body network saved to disk.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.build import build_engine
from engine.models import ModelLoader, ModelLoadError
from engine.rendering.pose_detect import BODY_WEIGHTS, PoseImagesError, build_pose_library, detect_keypoints, pose_pictures
from engine.rendering.poses import (
    KEYPOINT_NAMES,
    TEMPLATES,
    NoPoseFound,
    PoseLibrary,
    place,
    pose_image,
    template_from_keypoints,
)
from engine.settings import EngineSettings, RenderSettings
from engine.storyboard import BoardRequest
from tests.openpose_stub import dot_picture, stub_detector

FACE = {KEYPOINT_NAMES.index(name) for name in ("nose", "r_eye", "l_eye", "r_ear", "l_ear")}
STORY = (
    "Aldar Kose meets a greedy bai on the road. The bai laughs at his old coat. "
    "Aldar Kose waves to the villagers. He sits by the fire and thinks. "
    "Aldar Kose rides away across the steppe at sunset."
)


@pytest.fixture(scope="module")
def detector():
    return stub_detector()


def save(picture: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


# -- keypoints -> template ---------------------------------------------------------------------
@pytest.mark.parametrize("pose", ["standing", "walking", "pointing", "waving", "arms crossed", "sitting"])
def test_a_detected_full_figure_gives_back_its_pose(detector, pose: str) -> None:
    original = TEMPLATES[pose]
    detected = template_from_keypoints(pose, detect_keypoints(detector, dot_picture(original, framing="wide")))
    assert detected.name == pose
    for index, (want, got) in enumerate(zip(original.keypoints, detected.keypoints, strict=True)):
        if index in FACE:  # at wide framing the face joints are 2 px apart where the network looks
            continue
        assert got is not None, KEYPOINT_NAMES[index]
        assert math.dist(want, got) < 0.035, (KEYPOINT_NAMES[index], want, got)


def test_a_waist_up_picture_gives_a_waist_up_pose_that_frames_like_the_original(detector) -> None:
    original = TEMPLATES["talking"]
    detected = template_from_keypoints("talking", detect_keypoints(detector, dot_picture(original, framing="medium")))
    for leg in ("r_knee", "l_knee", "r_ankle", "l_ankle"):
        assert detected.point(leg) is None  # not in the picture, so not invented
    want = place(original, framing="close-up", width=512, height=512)
    got = place(detected, framing="close-up", width=512, height=512)
    for name, a, b in zip(KEYPOINT_NAMES, want, got, strict=True):
        assert (a is None) == (b is None), name
        if a is not None:
            assert math.dist(a, b) < 12, (name, a, b)


def test_a_picture_without_a_figure_is_no_pose(detector) -> None:
    with pytest.raises(NoPoseFound):
        template_from_keypoints("standing", detect_keypoints(detector, Image.new("RGB", (256, 256), "gray")))


def test_keypoints_need_a_neck_or_shoulders() -> None:
    points: list = [None] * 18
    points[KEYPOINT_NAMES.index("r_hip")] = (100.0, 200.0)
    points[KEYPOINT_NAMES.index("l_hip")] = (140.0, 200.0)
    points[KEYPOINT_NAMES.index("r_knee")] = (100.0, 260.0)
    points[KEYPOINT_NAMES.index("l_knee")] = (140.0, 260.0)
    with pytest.raises(NoPoseFound, match="neck"):
        template_from_keypoints("standing", points)
    with pytest.raises(NoPoseFound, match="joint"):
        template_from_keypoints("standing", [None] * 17 + [(1.0, 1.0)])


# -- the pictures folder ---------------------------------------------------------------------
def test_pictures_are_named_after_poses(tmp_path) -> None:
    save(Image.new("RGB", (8, 8)), tmp_path / "Arms_Crossed.png")
    save(Image.new("RGB", (8, 8)), tmp_path / "riding.jpg")
    (tmp_path / "notes.txt").write_text("ignored")
    assert pose_pictures(str(tmp_path)) == {"arms crossed": tmp_path / "Arms_Crossed.png",
                                            "riding": tmp_path / "riding.jpg"}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([], "no .png/.jpg/.jpeg/.webp/.bmp pictures"),
        (["dancing.png", "riding.png"], "dancing.png in .* name no pose; name each picture after one of: standing"),
        (["riding.png", "Riding.jpg"], "two pictures for 'riding'"),
    ],
)
def test_a_bad_pictures_folder_says_what_to_fix(tmp_path, files: list[str], message: str) -> None:
    for name in files:
        save(Image.new("RGB", (8, 8)), tmp_path / name)
    with pytest.raises(PoseImagesError, match=message):
        pose_pictures(str(tmp_path))


def test_a_missing_pictures_folder_is_named(tmp_path) -> None:
    with pytest.raises(PoseImagesError, match="folder not found: .*nowhere"):
        pose_pictures(str(tmp_path / "nowhere"))
    with pytest.raises(PoseImagesError, match="not set"):
        pose_pictures("")


def test_every_picture_becomes_that_pose(detector, tmp_path) -> None:
    save(dot_picture(TEMPLATES["waving"]), tmp_path / "standing.png")  # the operator's own idea of standing
    save(dot_picture(TEMPLATES["pointing"]), tmp_path / "talking.png")
    library = build_pose_library(pose_pictures(str(tmp_path)), detector)
    standing, source = library.lookup("standing")
    assert source == "detected: standing.png"
    assert standing.point("r_wrist")[1] < standing.point("nose")[1] + 0.05  # the wave, not the template's hanging arm
    assert library.lookup("Talking")[1] == "detected: talking.png"
    assert library.lookup("riding") == (TEMPLATES["riding"], "template")  # no picture: the built-in
    assert library.describe() == {"standing": "standing.png", "talking": "talking.png"}


def test_a_picture_without_a_figure_stops_start_up_naming_it(detector, tmp_path) -> None:
    save(dot_picture(TEMPLATES["waving"]), tmp_path / "waving.png")
    save(Image.new("RGB", (64, 64), "gray"), tmp_path / "sitting.png")
    (tmp_path / "riding.png").write_bytes(b"not a picture")
    with pytest.raises(PoseImagesError) as caught:
        build_pose_library(pose_pictures(str(tmp_path)), detector)
    assert "sitting.png: no body found" in str(caught.value)
    assert "riding.png: unreadable" in str(caught.value)
    assert "waving.png" not in str(caught.value)


# -- loading the detector ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_body_weights(tmp_path_factory) -> Path:
    """body_pose_model.pth as lllyasviel/Annotators ships it (keys without the block prefix), random weights."""
    import torch
    from controlnet_aux.open_pose.model import bodypose_model

    torch.manual_seed(0)
    state = bodypose_model().state_dict()
    folder = tmp_path_factory.mktemp("openpose")
    torch.save({".".join(key.split(".")[1:]): value for key, value in state.items()}, folder / BODY_WEIGHTS)
    return folder


def test_the_detector_loads_from_a_folder_or_the_file(random_body_weights) -> None:
    import torch

    saved = torch.load(random_body_weights / BODY_WEIGHTS)
    for source in (random_body_weights, random_body_weights / BODY_WEIGHTS):
        loader = ModelLoader(RenderSettings(pose_detector=str(source), device="cpu"))
        detector = loader.pose_detector()
        weights = detector.body_estimation.model.state_dict()
        assert torch.equal(weights["model0.conv1_1.weight"], saved["conv1_1.weight"])
        assert torch.equal(weights["model6_2.Mconv7_stage6_L2.bias"], saved["Mconv7_stage6_L2.bias"])
        assert loader.loads == 1 and loader.sources["engine.pose_detector"] == str(source)


def test_an_offline_hub_id_is_a_clear_start_up_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    loader = ModelLoader(RenderSettings(pose_detector="lllyasviel/Annotators", device="cpu"))
    with pytest.raises(ModelLoadError, match=r"engine.pose_detector = 'lllyasviel/Annotators': weights not found "
                                             r"locally; set HF_HOME or a local path; HF_HUB_OFFLINE is set"):
        loader.pose_detector()


def test_a_folder_without_the_weights_is_named(tmp_path) -> None:
    loader = ModelLoader(RenderSettings(pose_detector=str(tmp_path), device="cpu"))
    with pytest.raises(ModelLoadError, match=f"engine.pose_detector: could not load {tmp_path}: .*{BODY_WEIGHTS}"):
        loader.pose_detector()


def test_templates_need_no_detector(tmp_path) -> None:
    loader = ModelLoader(RenderSettings(pose_source="templates", pose_detector=str(tmp_path / "absent")))
    assert loader.pose_library() == PoseLibrary() and loader.loads == 0


def test_detect_needs_pictures() -> None:
    loader = ModelLoader(RenderSettings(pose_source="detect", pose_images="", device="cpu"))
    with pytest.raises(ModelLoadError, match="engine.pose_images: folder not found"):
        loader.pose_library()


# -- a ref-guided board with detected poses ----------------------------------------------------
def test_a_ref_guided_board_draws_the_detected_poses(tiny_sdxl_dir, tiny_controlnet_dir, tiny_ip_adapter_dir,
                                                      tmp_path, monkeypatch) -> None:
    pictures = tmp_path / "poses"
    save(dot_picture(TEMPLATES["arms crossed"]), pictures / "riding.png")  # unmistakably not the riding template
    monkeypatch.setattr(ModelLoader, "pose_detector", lambda self: stub_detector())  # the weights are the stub
    settings = EngineSettings(render=RenderSettings(
        renderer="sdxl", base_model=str(tiny_sdxl_dir), clip_model="", width=64, height=64, steps=2,
        controlnet=str(tiny_controlnet_dir), ip_adapter=str(tiny_ip_adapter_dir),
        pose_source="detect", pose_images=str(pictures)))
    engine = build_engine(settings)
    board = engine.run(BoardRequest(STORY, mode="ref-guided", frames=6, seed=4), tmp_path / "b")
    report = json.loads((tmp_path / "b" / "report.json").read_text(encoding="utf-8"))
    assert report["models"]["applied"]["pose_source"] == {"detect": {"riding": "riding.png"}}
    riding = [(f, s) for f, s in zip(report["frames"][1:], board.plan.shots[1:], strict=True) if s.pose == "riding"]
    others = [(f, s) for f, s in zip(report["frames"][1:], board.plan.shots[1:], strict=True) if s.pose != "riding"]
    assert riding and others, [s.pose for s in board.plan.shots]
    detected = engine.poses.lookup("riding")[0]
    for frame, shot in riding:
        assert frame["pose_template"] == "riding" and frame["pose_source"] == "detected: riding.png"
        drawn = np.asarray(Image.open(tmp_path / "b" / frame["pose_file"]))
        assert np.array_equal(drawn, np.asarray(pose_image(detected, shot.framing, 64, 64)[1]))
        assert not np.array_equal(drawn, np.asarray(pose_image("riding", shot.framing, 64, 64)[1]))
    for frame, _ in others:
        assert frame["pose_source"] == "template"


@pytest.mark.gpu
@pytest.mark.skipif(not os.environ.get("ALDAR_POSE_DETECTOR"), reason="needs ALDAR_POSE_DETECTOR (body_pose_model.pth)")
def test_the_real_detector_finds_the_astronaut() -> None:
    """Needs the real OpenPose body weights: ALDAR_POSE_DETECTOR = lllyasviel/Annotators or a folder."""
    from skimage import data

    loader = ModelLoader(RenderSettings(pose_detector=os.environ["ALDAR_POSE_DETECTOR"]))
    points = detect_keypoints(loader.pose_detector(), Image.fromarray(data.astronaut()))
    template = template_from_keypoints("standing", points)
    for name in ("nose", "neck", "r_shoulder", "l_shoulder"):
        assert template.point(name) is not None, name
    assert template.point("r_shoulder")[0] < template.point("l_shoulder")[0]  # facing the camera
