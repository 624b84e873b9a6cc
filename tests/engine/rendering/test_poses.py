"""OpenPose skeletons: one template per shot pose, framed for the shot, drawn in OpenPose colours."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from engine.rendering import poses
from engine.rendering.poses import (
    CLOSE_UP_JOINTS,
    COLOURS,
    KEYPOINT_NAMES,
    LIMB_OPACITY,
    TEMPLATES,
    PoseTemplate,
    draw_openpose,
    place,
    pose_image,
    pose_template,
)
from engine.shots import FRAMINGS, POSES

SIZES = [(64, 64), (1024, 768), (768, 1024)]
LEG_JOINTS = ("r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle")
ARM_JOINTS = ("r_elbow", "r_wrist", "l_elbow", "l_wrist")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def count_colour(image: Image.Image, colour: tuple[int, int, int]) -> int:
    counts = image.getcolors(maxcolors=image.width * image.height)
    assert counts is not None
    return sum(count for count, found in counts if found == colour)


def joint_colour(name: str) -> tuple[int, int, int]:
    return COLOURS[KEYPOINT_NAMES.index(name)]


def lit_box(image: Image.Image) -> tuple[int, int, int, int]:
    """Bounding box (left, top, right, bottom) of the non-black pixels."""
    box = image.getbbox()
    assert box is not None, "the pose image is all black"
    return box


def point(template: PoseTemplate, name: str) -> tuple[float, float]:
    found = template.point(name)
    assert found is not None, f"{template.name}: {name} is hidden"
    return found


# --- templates --------------------------------------------------------------------------


@pytest.mark.parametrize("pose", [*POSES, "arms crossed"])
def test_every_pose_has_a_template_of_18_keypoints_inside_the_body_box(pose: str) -> None:
    template = pose_template(pose)
    assert template.name == pose
    assert len(template.keypoints) == 18 == len(KEYPOINT_NAMES)
    visible = [p for p in template.keypoints if p is not None]
    assert len(visible) >= 14, "a front-facing figure shows nearly every joint"
    for x, y in visible:
        assert 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0


@pytest.mark.parametrize("pose", [*POSES, "arms crossed"])
def test_every_template_faces_the_camera_with_a_head_above_its_shoulders_and_feet(pose: str) -> None:
    t = pose_template(pose)
    # front-facing: the subject's right side is on the image's left
    for right, left in (("r_shoulder", "l_shoulder"), ("r_hip", "l_hip"), ("r_eye", "l_eye"), ("r_ear", "l_ear")):
        assert point(t, right)[0] < point(t, left)[0], (pose, right)
    assert point(t, "nose")[1] < point(t, "neck")[1] < point(t, "r_hip")[1]
    for foot in ("r_ankle", "l_ankle"):
        assert point(t, foot)[1] > point(t, "r_hip")[1]


def test_standing_is_symmetrical() -> None:
    t = pose_template("standing")
    for right, left in (("r_shoulder", "l_shoulder"), ("r_elbow", "l_elbow"), ("r_wrist", "l_wrist"),
                        ("r_hip", "l_hip"), ("r_knee", "l_knee"), ("r_ankle", "l_ankle"),
                        ("r_eye", "l_eye"), ("r_ear", "l_ear")):  # fmt: skip
        (rx, ry), (lx, ly) = point(t, right), point(t, left)
        assert rx + lx == pytest.approx(1.0) and ry == pytest.approx(ly), right
    assert point(t, "nose")[0] == pytest.approx(0.5) and point(t, "neck")[0] == pytest.approx(0.5)


@pytest.mark.parametrize("pose", ["walking", "running"])
def test_walking_and_running_take_a_stride(pose: str) -> None:
    t, standing = pose_template(pose), pose_template("standing")
    feet = abs(point(t, "r_ankle")[1] - point(t, "l_ankle")[1])
    knees = abs(point(t, "r_knee")[1] - point(t, "l_knee")[1])
    assert feet > 0.04 or knees > 0.04
    assert feet + knees > abs(point(standing, "r_ankle")[1] - point(standing, "l_ankle")[1]) + 0.04


def test_running_strides_further_than_walking() -> None:
    def stride(pose: str) -> float:
        t = pose_template(pose)
        return abs(point(t, "r_ankle")[1] - point(t, "l_ankle")[1]) + abs(point(t, "r_knee")[1] - point(t, "l_knee")[1])

    assert stride("running") > stride("walking")


@pytest.mark.parametrize("pose", ["sitting", "riding", "crouching"])
def test_seated_and_crouched_poses_bend_the_knees_and_lower_the_hips(pose: str) -> None:
    t, standing = pose_template(pose), pose_template("standing")
    assert point(t, "r_hip")[1] > point(standing, "r_hip")[1] + 0.03
    assert point(t, "neck")[1] > point(standing, "neck")[1]
    for hip, knee, ankle in (("r_hip", "r_knee", "r_ankle"), ("l_hip", "l_knee", "l_ankle")):
        thigh = np.subtract(point(t, knee), point(t, hip))
        shin = np.subtract(point(t, ankle), point(t, knee))
        cosine = float(thigh @ shin / (np.linalg.norm(thigh) * np.linalg.norm(shin)))
        assert cosine < 0.9, f"{pose}: the {knee} is nearly straight"


def test_riding_leaves_room_below_for_the_horse() -> None:
    assert pose_template("riding").ground > 1.0
    assert pose_template("standing").ground == 1.0


@pytest.mark.parametrize(("pose", "side"), [("waving", "r"), ("pointing", "l")])
def test_waving_and_pointing_raise_an_arm(pose: str, side: str) -> None:
    t, standing = pose_template(pose), pose_template("standing")
    wrist, shoulder = point(t, f"{side}_wrist"), point(t, f"{side}_shoulder")
    assert wrist[1] < point(standing, f"{side}_wrist")[1] - 0.2
    if pose == "waving":
        assert wrist[1] < point(t, "nose")[1] + 0.02, "a waving hand is up by the head"
    else:
        assert abs(wrist[0] - shoulder[0]) > 0.25, "a pointing arm reaches out"


def test_bowing_lowers_the_head_and_shoulders_over_planted_legs() -> None:
    t, standing = pose_template("bowing"), pose_template("standing")
    assert point(t, "nose")[1] > point(standing, "nose")[1] + 0.1
    assert point(t, "neck")[1] > point(standing, "neck")[1] + 0.05
    assert point(t, "r_ankle") == point(standing, "r_ankle")


def test_arms_crossed_puts_each_wrist_across_the_body() -> None:
    t = pose_template("arms crossed")
    assert point(t, "r_wrist")[0] > 0.5 > point(t, "l_wrist")[0]


def test_pose_names_forgive_case_and_separators() -> None:
    assert pose_template("Arms_Crossed") is TEMPLATES["arms crossed"]
    assert pose_template(" WAVING ") is TEMPLATES["waving"]


def test_an_unknown_pose_stands_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="engine.rendering.poses"):
        assert pose_template("juggling") is TEMPLATES["standing"]
    assert "juggling" in caplog.text


def test_templates_are_frozen_and_checked() -> None:
    t = pose_template("standing")
    with pytest.raises(AttributeError):
        t.name = "x"  # type: ignore[misc]
    with pytest.raises(ValueError, match="18 keypoints"):
        PoseTemplate("short", t.keypoints[:17])
    with pytest.raises(ValueError, match="outside"):
        PoseTemplate("off", ((1.2, 0.5), *t.keypoints[1:]))
    with pytest.raises(ValueError, match="neck"):
        PoseTemplate("headless", (t.keypoints[0], None, *t.keypoints[2:]))


# --- placement --------------------------------------------------------------------------


def test_wide_shows_a_small_full_body_standing_on_the_lower_third() -> None:
    width, height = 1024, 768
    points = place(pose_template("standing"), framing="wide", width=width, height=height)
    assert all(p is not None for p in points)
    ys = [p[1] for p in points if p is not None]
    assert 0.38 * height <= max(ys) - min(ys) <= 0.5 * height
    ankle_y = points[KEYPOINT_NAMES.index("r_ankle")][1]  # type: ignore[index]
    assert 0.62 * height <= ankle_y <= 0.82 * height
    neck_x = points[KEYPOINT_NAMES.index("neck")][0]  # type: ignore[index]
    assert neck_x == pytest.approx(width / 2)


def test_x_center_moves_the_figure() -> None:
    points = place(pose_template("standing"), framing="wide", width=900, height=600, x_center=1 / 3)
    assert points[KEYPOINT_NAMES.index("neck")][0] == pytest.approx(300)  # type: ignore[index]


def test_medium_is_waist_up_with_the_hips_at_the_bottom_edge() -> None:
    width, height = 1024, 768
    points = dict(zip(KEYPOINT_NAMES, place(pose_template("standing"), framing="medium", width=width, height=height)))
    for name in ("r_knee", "l_knee", "r_ankle", "l_ankle"):
        assert points[name] is None
    for name in ("r_hip", "l_hip"):
        assert points[name] is not None and 0.88 * height <= points[name][1] < height
    assert points["nose"] is not None and points["nose"][1] < 0.3 * height
    wide = place(pose_template("standing"), framing="wide", width=width, height=height)
    assert _span(points["r_shoulder"], points["l_shoulder"]) > 2.5 * _span(wide[2], wide[5])


@pytest.mark.parametrize("pose", [*POSES, "arms crossed"])
@pytest.mark.parametrize("size", SIZES)
def test_close_up_keeps_only_head_neck_and_shoulders(pose: str, size: tuple[int, int]) -> None:
    width, height = size
    points = place(pose_template(pose), framing="close-up", width=width, height=height)
    shown = {KEYPOINT_NAMES[i] for i, p in enumerate(points) if p is not None}
    assert shown <= {KEYPOINT_NAMES[i] for i in CLOSE_UP_JOINTS}
    assert {"nose", "neck", "r_shoulder", "l_shoulder"} <= shown, "both shoulders stay in a portrait frame too"
    assert _span(points[2], points[5]) >= 0.5 * min(width, height), "head and shoulders fill the frame"


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("pose", POSES)
def test_placed_points_lie_inside_the_image(framing: str, pose: str) -> None:
    for width, height in SIZES:
        for p in place(pose_template(pose), framing=framing, width=width, height=height):
            if p is not None:
                assert 0 <= p[0] < width and 0 <= p[1] < height


@pytest.mark.parametrize("framing", ["wide", "medium"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("x_center", [0.0, 1 / 3, 0.5, 1.0])
def test_an_arm_out_keeps_its_hand_in_frame(framing: str, size: tuple[int, int], x_center: float) -> None:
    width, height = size
    for pose in ("waving", "pointing"):
        points = dict(zip(KEYPOINT_NAMES, place(pose_template(pose), framing=framing, width=width, height=height,
                                                 x_center=x_center)))  # fmt: skip
        assert points["r_wrist"] is not None and points["l_wrist"] is not None, (pose, size, x_center)


def test_a_figure_that_fits_stays_where_it_was_put() -> None:
    standing = place(pose_template("standing"), framing="medium", width=1024, height=768, x_center=1 / 3)
    assert standing[KEYPOINT_NAMES.index("neck")][0] == pytest.approx(1024 / 3)  # type: ignore[index]


def test_place_rejects_bad_input() -> None:
    t = pose_template("standing")
    with pytest.raises(ValueError, match="framing"):
        place(t, framing="extreme close-up", width=64, height=64)
    with pytest.raises(ValueError, match="size"):
        place(t, framing="wide", width=0, height=64)
    with pytest.raises(ValueError, match="x_center"):
        place(t, framing="wide", width=64, height=64, x_center=1.5)
    with pytest.raises(ValueError, match="18 points"):
        draw_openpose([(1.0, 1.0)] * 17, 64, 64)


def _span(a: tuple[float, float] | None, b: tuple[float, float] | None) -> float:
    assert a is not None and b is not None
    return float(np.hypot(a[0] - b[0], a[1] - b[1]))


# --- drawing ----------------------------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("pose", [*POSES, "arms crossed"])
@pytest.mark.parametrize("size", [(64, 64), (1024, 768)])
def test_every_pose_renders_an_rgb_image_of_the_requested_size(pose: str, framing: str, size: tuple[int, int]) -> None:
    template, image = pose_image(pose, framing, *size)
    assert template.name == pose
    assert image.mode == "RGB" and image.size == size
    lit = np.any(pixels(image) > 0, axis=-1)
    assert 0 < lit.sum() < 0.5 * lit.size
    assert pixels(image)[0, 0].tolist() == [0, 0, 0], "black background"


def _openpose_shades(overlaps: int = 3) -> np.ndarray:
    """Joint colours, plus every colour up to ``overlaps`` limbs at 60% opacity make over black."""
    limbs = np.array(COLOURS[: len(poses.LIMB_SEQ)], dtype=np.float64)
    layers = [np.zeros((1, 3))]
    for _ in range(overlaps):
        below = layers[-1]
        layers.append((LIMB_OPACITY * limbs[:, None, :] + (1 - LIMB_OPACITY) * below[None, :, :]).reshape(-1, 3))
    return np.unique(np.round(np.concatenate([np.array(COLOURS), *layers[1:]])), axis=0)


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("pose", ["standing", "waving", "sitting", "running", "arms crossed"])
def test_only_openpose_colours_are_used(pose: str, framing: str) -> None:
    _, image = pose_image(pose, framing, 512, 512)
    lit = np.unique(pixels(image)[np.any(pixels(image) > 0, axis=-1)], axis=0)
    shades = _openpose_shades()
    # every lit pixel is a joint colour, a limb colour at 60%, or such limbs blended where they cross
    distance = np.abs(lit[:, None, :] - shades[None, :, :]).max(axis=-1).min(axis=-1)
    assert distance.max() <= 3, lit[distance > 3][:5]
    assert not np.any(np.all(lit > 200, axis=-1)), "white or grey is no OpenPose colour"


def test_a_full_body_shows_all_18_joint_colours_exactly() -> None:
    _, image = pose_image("standing", "wide", 1024, 768)
    for name in KEYPOINT_NAMES:
        assert count_colour(image, joint_colour(name)) > 0, name


def test_limbs_are_drawn_at_60_percent_of_their_colour() -> None:
    _, image = pose_image("standing", "wide", 1024, 768)
    # limb 7 (r_hip -> r_knee) is COLOURS[7] at 60%: (0, 153, 51)
    assert count_colour(image, (0, 153, 51)) > 20
    # the r_hip joint dot itself keeps its full colour
    assert count_colour(image, joint_colour("r_hip")) > 20


def test_stick_width_scales_with_the_image() -> None:
    assert poses.stick_width(512, 512) == 4
    assert poses.stick_width(1024, 1024) == 8
    assert poses.stick_width(1024, 768) == 6
    assert poses.stick_width(64, 64) == 1
    small = draw_openpose([(10.0, 10.0), *([None] * 17)], 512, 512)
    large = draw_openpose([(20.0, 20.0), *([None] * 17)], 1024, 1024)
    assert count_colour(large, COLOURS[0]) > 3 * count_colour(small, COLOURS[0])


def test_close_up_is_much_larger_than_wide() -> None:
    _, wide = pose_image("standing", "wide", 1024, 768)
    _, close = pose_image("standing", "close-up", 1024, 768)
    wl, wt, wr, wb = lit_box(wide)
    cl, ct, cr, cb = lit_box(close)
    assert (cr - cl) > 3 * (wr - wl)
    assert (cr - cl) * (cb - ct) > 4 * (wr - wl) * (wb - wt)


@pytest.mark.parametrize("pose", POSES)
def test_close_up_drops_the_legs_and_arms(pose: str) -> None:
    _, close = pose_image(pose, "close-up", 1024, 768)
    _, wide = pose_image(pose, "wide", 1024, 768)
    for name in ("r_ankle", "l_ankle", *LEG_JOINTS, *ARM_JOINTS):
        assert count_colour(close, joint_colour(name)) == 0, name
    for name in ("r_ankle", "l_ankle"):
        assert count_colour(wide, joint_colour(name)) > 0, name
    for name in ("nose", "neck", "r_shoulder", "l_shoulder"):
        assert count_colour(close, joint_colour(name)) > 0, name


def test_an_unknown_hint_draws_the_standing_skeleton() -> None:
    template, unknown = pose_image("juggling", "medium", 256, 192)
    _, standing = pose_image("standing", "medium", 256, 192)
    assert template.name == "standing"
    assert unknown.tobytes() == standing.tobytes()


@pytest.mark.parametrize("framing", ["wide", "medium"])
def test_different_poses_draw_different_skeletons(framing: str) -> None:
    images = {pose: pose_image(pose, framing, 256, 256)[1].tobytes() for pose in [*POSES, "arms crossed"]}
    assert images["waving"] != images["standing"]
    assert len(set(images.values())) == len(images), "two poses draw the same picture"


def test_drawing_is_deterministic() -> None:
    first = pose_image("running", "wide", 320, 240)[1].tobytes()
    again = pose_image("running", "wide", 320, 240)[1].tobytes()
    assert first == again


def test_hidden_and_off_image_joints_are_skipped() -> None:
    image = draw_openpose([None] * 18, 64, 48)
    assert image.getbbox() is None
    off = draw_openpose([(-500.0, -500.0), (-400.0, -600.0), *([None] * 16)], 64, 48)
    assert off.size == (64, 48) and off.getbbox() is None
    # a limb between two off-image joints that crosses the frame is still drawn, clipped
    across = draw_openpose([(-500.0, -500.0), (600.0, 600.0), *([None] * 16)], 64, 48)
    assert across.getbbox() is not None
    assert count_colour(across, COLOURS[0]) == 0, "the joints themselves are off the image"


def test_importing_poses_loads_no_torch() -> None:
    code = "import sys, engine.rendering.poses; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=poses.__file__.rsplit("/engine/", 1)[0], check=False)
    assert result.returncode == 0
