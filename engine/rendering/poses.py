"""OpenPose skeletons for the shot vocabulary: the pose image ControlNet-OpenPose is given.

Each pose in ``engine.shots.POSES`` (plus "arms crossed") is a template of the 18 COCO
keypoints that OpenPose and the OpenPose ControlNets use, as data, in a normalised body box:
x and y run 0..1, y down, one unit is the height of a standing figure (top of the head at
0, soles at 1), so the box is square and proportions survive placement. Figures face the
camera, so the subject's right side is on the image's left.

``place`` scales the box for a framing (wide, medium, close-up) into pixel coordinates and
``draw_openpose`` paints them the way the OpenPose annotator does (controlnet_aux
``draw_bodypose``): 17 limbs as ellipses at 60% opacity, then 18 joints as full-colour
dots, on black. Pure Pillow; no torch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from PIL import Image, ImageDraw

from engine.shots import FRAMINGS

logger = logging.getLogger(__name__)

Keypoint = tuple[float, float] | None

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "neck",
    "r_shoulder",
    "r_elbow",
    "r_wrist",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "r_hip",
    "r_knee",
    "r_ankle",
    "l_hip",
    "l_knee",
    "l_ankle",
    "r_eye",
    "l_eye",
    "r_ear",
    "l_ear",
)
_INDEX = {name: i for i, name in enumerate(KEYPOINT_NAMES)}

# OpenPose body_25 -> COCO-18 limb pairs (1-based, as in OpenPose / controlnet_aux util.py).
LIMB_SEQ: tuple[tuple[int, int], ...] = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11),
    (2, 12), (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
)  # fmt: skip
# Joint i is drawn in COLOURS[i]; limb i (LIMB_SEQ[i]) in COLOURS[i] at LIMB_OPACITY.
COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
LIMB_OPACITY = 0.6
_BASE_SIZE = 512  # the annotator's resolution: stick half-width and joint radius are 4 px there
_BASE_STICK = 4.0

# Close-ups keep the head and shoulders only: hands and legs at that scale read as clutter.
CLOSE_UP_JOINTS: frozenset[int] = frozenset(
    _INDEX[name] for name in ("nose", "neck", "r_shoulder", "l_shoulder", "r_eye", "l_eye", "r_ear", "l_ear")
)

# Framing geometry, as fractions of the image height.
_WIDE_BODY = 0.45  # a standing figure is 45% of the frame tall ...
_WIDE_GROUND = 0.75  # ... with its feet on the lower third line
_WIDE_MAX_EXTENT = 0.62  # a rider and the horse below him may take this much
_MEDIUM_TOP = 0.12  # waist-up: the head's top here ...
_MEDIUM_HIPS = 0.96  # ... and the hips at the bottom edge
_CLOSE_TOP = 0.10  # head and shoulders: the head's top here ...
_CLOSE_SHOULDERS = 0.75  # ... the shoulders here
_CLOSE_MAX_SHOULDER_SPAN = 0.9  # of the width, so portrait frames keep both shoulders


@dataclass(frozen=True)
class PoseTemplate:
    """One pose: 18 COCO keypoints in the body box (None where a joint is hidden; the neck,
    which every framing anchors on, never is).

    ``ground`` is the box y of the floor the figure stands on: 1.0 for a figure on its feet,
    more for a rider, whose horse stands below the box; wide shots put it on the ground line.
    """

    name: str
    keypoints: tuple[Keypoint, ...]
    ground: float = 1.0

    def __post_init__(self) -> None:
        if len(self.keypoints) != len(KEYPOINT_NAMES):
            raise ValueError(f"pose {self.name!r}: need {len(KEYPOINT_NAMES)} keypoints, got {len(self.keypoints)}")
        for name, point in zip(KEYPOINT_NAMES, self.keypoints, strict=True):
            if point is not None and not (0.0 <= point[0] <= 1.0 and 0.0 <= point[1] <= 1.0):
                raise ValueError(f"pose {self.name!r}: {name} {point} lies outside the 0..1 body box")
        if self.keypoints[_INDEX["neck"]] is None:
            raise ValueError(f"pose {self.name!r}: the neck anchors every framing and must be visible")
        if self.ground < 1.0:
            raise ValueError(f"pose {self.name!r}: ground must be >= 1.0, got {self.ground}")

    def point(self, name: str) -> Keypoint:
        return self.keypoints[_INDEX[name]]


# ---------------------------------------------------------------------------------------
# Templates (data)
# ---------------------------------------------------------------------------------------
# Standing proportions, one unit = figure height: nose 0.075, shoulders 0.185 (span 0.23),
# elbows 0.37, wrists 0.515, hips 0.50 (span 0.11), knees 0.72, ankles 0.955.

_Pt = tuple[float, float]


def _template(
    name: str,
    *,
    head: tuple[_Pt, _Pt, _Pt, _Pt, _Pt],  # nose, r_eye, l_eye, r_ear, l_ear
    neck: _Pt,
    right_arm: tuple[_Pt, _Pt, _Pt],  # shoulder, elbow, wrist
    left_arm: tuple[_Pt, _Pt, _Pt],
    right_leg: tuple[_Pt, _Pt, _Pt],  # hip, knee, ankle
    left_leg: tuple[_Pt, _Pt, _Pt],
    ground: float = 1.0,
) -> PoseTemplate:
    nose, r_eye, l_eye, r_ear, l_ear = head
    keypoints = (nose, neck, *right_arm, *left_arm, *right_leg, *left_leg, r_eye, l_eye, r_ear, l_ear)
    return PoseTemplate(name, keypoints, ground)


_FRONT_HEAD = ((0.50, 0.075), (0.478, 0.062), (0.522, 0.062), (0.455, 0.068), (0.545, 0.068))


def _head(
    dx: float = 0.0, dy: float = 0.0, *, tilt_deg: float = 0.0, nose_dy: float = 0.0, ears_dy: float = 0.0
) -> tuple[_Pt, _Pt, _Pt, _Pt, _Pt]:
    """The front-facing head moved by (dx, dy), rolled by ``tilt_deg`` about the nose.

    ``nose_dy`` pitches the face (down > 0), ``ears_dy`` moves the ears against the eyes
    (a head tipped back shows its ears lower, one bowed shows them higher)."""
    nx, ny = _FRONT_HEAD[0]
    cos, sin = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    moved: list[_Pt] = []
    for i, (x, y) in enumerate(_FRONT_HEAD):
        y += nose_dy if i == 0 else ears_dy if i >= 3 else 0.0
        rx, ry = x - nx, y - ny
        moved.append((round(nx + dx + rx * cos - ry * sin, 4), round(ny + dy + rx * sin + ry * cos, 4)))
    nose, r_eye, l_eye, r_ear, l_ear = moved
    return nose, r_eye, l_eye, r_ear, l_ear


_STANDING_LEGS = {"right_leg": ((0.445, 0.50), (0.445, 0.72), (0.445, 0.955)),
                  "left_leg": ((0.555, 0.50), (0.555, 0.72), (0.555, 0.955))}  # fmt: skip
_SHOULDERS = ((0.385, 0.185), (0.615, 0.185))
_HANGING_RIGHT = (_SHOULDERS[0], (0.37, 0.37), (0.365, 0.515))
_HANGING_LEFT = (_SHOULDERS[1], (0.63, 0.37), (0.635, 0.515))

_TEMPLATES: tuple[PoseTemplate, ...] = (
    _template(
        "standing", head=_head(), neck=(0.50, 0.18),
        right_arm=_HANGING_RIGHT, left_arm=_HANGING_LEFT, **_STANDING_LEGS,
    ),
    _template(  # mid-stride: right foot forward (nearer, so lower), left heel lifted; arms swing against the legs
        "walking", head=_head(), neck=(0.50, 0.18),
        right_arm=(_SHOULDERS[0], (0.36, 0.365), (0.345, 0.50)),
        left_arm=(_SHOULDERS[1], (0.62, 0.365), (0.575, 0.49)),
        right_leg=((0.445, 0.50), (0.44, 0.725), (0.435, 0.975)),
        left_leg=((0.555, 0.50), (0.575, 0.71), (0.60, 0.905)),
    ),
    _template(  # astride a horse that stands below the box: thighs spread over its back, knees bent, hands on the reins
        "riding", head=_head(dy=0.04), neck=(0.50, 0.22),
        right_arm=((0.385, 0.225), (0.365, 0.39), (0.46, 0.47)),
        left_arm=((0.615, 0.225), (0.635, 0.39), (0.54, 0.47)),
        right_leg=((0.445, 0.54), (0.36, 0.66), (0.38, 0.86)),
        left_leg=((0.555, 0.54), (0.64, 0.66), (0.62, 0.86)),
        ground=1.45,
    ),
    _template(  # on a low seat: thighs toward the camera, shins down, hands on the knees
        "sitting", head=_head(dy=0.18), neck=(0.50, 0.36),
        right_arm=((0.385, 0.365), (0.36, 0.545), (0.405, 0.685)),
        left_arm=((0.615, 0.365), (0.64, 0.545), (0.595, 0.685)),
        right_leg=((0.445, 0.68), (0.40, 0.72), (0.415, 0.955)),
        left_leg=((0.555, 0.68), (0.60, 0.72), (0.585, 0.955)),
    ),
    _template(  # left arm straight out to the image's right, head turned after it
        "pointing", head=_head(dx=0.012), neck=(0.50, 0.18),
        right_arm=_HANGING_RIGHT,
        left_arm=(_SHOULDERS[1], (0.79, 0.20), (0.935, 0.205)),
        **_STANDING_LEGS,
    ),
    _template(  # head thrown back and tilted, shoulders up, hands on the belly
        "laughing", head=_head(tilt_deg=-10.0, nose_dy=-0.008, ears_dy=0.01), neck=(0.50, 0.175),
        right_arm=((0.385, 0.175), (0.33, 0.34), (0.455, 0.41)),
        left_arm=((0.615, 0.175), (0.67, 0.34), (0.545, 0.42)),
        **_STANDING_LEGS,
    ),
    _template(  # one hand up in a gesture, palm toward the listener
        "talking", head=_head(dx=0.005), neck=(0.50, 0.18),
        right_arm=(_SHOULDERS[0], (0.355, 0.365), (0.31, 0.235)),
        left_arm=_HANGING_LEFT,
        **_STANDING_LEGS,
    ),
    _template(  # torso a little forward, right knee driven up, left leg pushing off, arms pumping
        "running", head=_head(dy=0.02), neck=(0.50, 0.20),
        right_arm=((0.385, 0.205), (0.33, 0.36), (0.40, 0.27)),
        left_arm=((0.615, 0.205), (0.68, 0.35), (0.65, 0.48)),
        right_leg=((0.445, 0.52), (0.435, 0.63), (0.42, 0.81)),
        left_leg=((0.555, 0.52), (0.575, 0.74), (0.60, 0.95)),
    ),
    _template(  # from the waist toward the camera: torso foreshortened, face down, right hand on the heart
        "bowing", head=_head(dy=0.19, nose_dy=0.02, ears_dy=-0.012), neck=(0.50, 0.295),
        right_arm=((0.385, 0.30), (0.40, 0.42), (0.52, 0.345)),
        left_arm=((0.615, 0.30), (0.615, 0.445), (0.595, 0.56)),
        **_STANDING_LEGS,
    ),
    _template(  # both hands in front at the waist, forearms toward the camera, holding something
        "holding", head=_head(), neck=(0.50, 0.18),
        right_arm=(_SHOULDERS[0], (0.365, 0.365), (0.455, 0.43)),
        left_arm=(_SHOULDERS[1], (0.635, 0.365), (0.545, 0.43)),
        **_STANDING_LEGS,
    ),
    _template(  # a squat: hips below the knees, knees wide, elbows on the knees, hands hanging between them
        "crouching", head=_head(dy=0.31), neck=(0.50, 0.485),
        right_arm=((0.385, 0.49), (0.38, 0.665), (0.465, 0.80)),
        left_arm=((0.615, 0.49), (0.62, 0.665), (0.535, 0.80)),
        right_leg=((0.45, 0.76), (0.39, 0.71), (0.425, 0.955)),
        left_leg=((0.55, 0.76), (0.61, 0.71), (0.575, 0.955)),
    ),
    _template(  # right arm raised, forearm up beside the head
        "waving", head=_head(), neck=(0.50, 0.18),
        right_arm=(_SHOULDERS[0], (0.235, 0.155), (0.205, 0.03)),
        left_arm=_HANGING_LEFT,
        **_STANDING_LEGS,
    ),
    _template(  # each hand at the other elbow across the chest
        "arms crossed", head=_head(), neck=(0.50, 0.18),
        right_arm=(_SHOULDERS[0], (0.385, 0.355), (0.59, 0.32)),
        left_arm=(_SHOULDERS[1], (0.615, 0.355), (0.41, 0.33)),
        **_STANDING_LEGS,
    ),
)  # fmt: skip

TEMPLATES: Mapping[str, PoseTemplate] = MappingProxyType({template.name: template for template in _TEMPLATES})
DEFAULT_POSE = "standing"


def pose_key(pose: str) -> str:
    """A pose name as the templates spell it: lower case, ``_`` and ``-`` read as spaces."""
    return " ".join(pose.strip().lower().replace("_", " ").replace("-", " ").split())


def pose_template(pose: str) -> PoseTemplate:
    """The template for a pose name (case, ``_`` and ``-`` forgiven); unknown names stand."""
    template = TEMPLATES.get(pose_key(pose))
    if template is None:
        logger.debug("no pose template for %r; using %r", pose, DEFAULT_POSE)
        return TEMPLATES[DEFAULT_POSE]
    return template


# ---------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------


def place(
    template: PoseTemplate, *, framing: str, width: int, height: int, x_center: float = 0.5
) -> list[tuple[float, float] | None]:
    """Pixel coordinates of the template's joints for a framing; None where hidden or off-image.

    - wide: the whole figure, 45% of the height, feet on the lower third line;
    - medium: waist-up, the head's top near 12% and the hips at the bottom edge (a little
      smaller when an outstretched arm would not fit the width);
    - close-up: head and shoulders fill the frame; only head, neck and shoulders are kept.

    ``x_center`` (a fraction of the width) is where the figure's centre line goes; the figure
    slides sideways from there only as far as it takes to keep every joint in frame.
    """
    # 1. check inputs
    _check_size(width, height)
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}; expected one of {FRAMINGS}")
    if not 0.0 <= x_center <= 1.0:
        raise ValueError(f"x_center must be within 0..1, got {x_center}")
    # 2. scale and anchor: pixel = (box - anchor) * scale + target
    scale, anchor, target = _FRAMERS[framing](template, width, height, x_center)
    keep = CLOSE_UP_JOINTS if framing == "close-up" else frozenset(range(len(KEYPOINT_NAMES)))
    projected = [
        None if point is None or index not in keep else ((point[0] - anchor[0]) * scale, (point[1] - anchor[1]) * scale)
        for index, point in enumerate(template.keypoints)
    ]
    # 3. slide sideways, when it fits, so an arm out (pointing, waving) keeps its hand in frame
    dx = _keep_in_frame([p[0] + target[0] for p in projected if p is not None], width, stick_width(width, height))
    # 4. drop what the frame cuts off
    points: list[tuple[float, float] | None] = []
    for p in projected:
        x, y = (p[0] + target[0] + dx, p[1] + target[1]) if p is not None else (-1.0, -1.0)
        points.append((x, y) if 0.0 <= x < width and 0.0 <= y < height else None)
    return points


def _keep_in_frame(xs: list[float], width: int, margin: float) -> float:
    """The smallest horizontal shift that puts all of ``xs`` inside the frame (0 if they cannot fit)."""
    if not xs:
        return 0.0
    low, high = min(xs) - margin, max(xs) + margin
    if high - low > width:
        return 0.0
    if low < 0:
        return -low
    if high > width - 1:
        return (width - 1) - high
    return 0.0


_Frame = tuple[float, tuple[float, float], tuple[float, float]]


def _frame_wide(template: PoseTemplate, width: int, height: int, x_center: float) -> _Frame:
    scale = height * min(_WIDE_BODY, _WIDE_MAX_EXTENT / template.ground)
    return scale, (0.5, template.ground), (width * x_center, height * _WIDE_GROUND)


def _frame_medium(template: PoseTemplate, width: int, height: int, x_center: float) -> _Frame:
    standing = TEMPLATES[DEFAULT_POSE]
    scale = height * (_MEDIUM_HIPS - _MEDIUM_TOP) / _mid_y(standing, "r_hip", "l_hip")
    xs = [point[0] for point in template.keypoints if point is not None]
    reach = max(max(xs) - min(xs), 0.01)  # an arm out in a narrow frame: step back until the hand fits
    scale = min(scale, max(1.0, width - 2 * stick_width(width, height) - 1) / reach)
    return scale, (0.5, _mid_y(template, "r_hip", "l_hip")), (width * x_center, height * _MEDIUM_HIPS)


def _frame_close_up(template: PoseTemplate, width: int, height: int, x_center: float) -> _Frame:
    standing = TEMPLATES[DEFAULT_POSE]
    shoulders_y = _mid_y(standing, "r_shoulder", "l_shoulder")
    span = standing.point("l_shoulder")[0] - standing.point("r_shoulder")[0]  # type: ignore[index]
    scale = min(height * (_CLOSE_SHOULDERS - _CLOSE_TOP) / shoulders_y, width * _CLOSE_MAX_SHOULDER_SPAN / span)
    neck, standing_neck = template.point("neck"), standing.point("neck")
    assert neck is not None and standing_neck is not None  # PoseTemplate insists on a neck
    return scale, neck, (width * x_center, height * _CLOSE_TOP + standing_neck[1] * scale)


_FRAMERS = {"wide": _frame_wide, "medium": _frame_medium, "close-up": _frame_close_up}


def _mid_y(template: PoseTemplate, a: str, b: str) -> float:
    ys = [point[1] for point in (template.point(a), template.point(b)) if point is not None]
    if not ys:
        return _mid_y(TEMPLATES[DEFAULT_POSE], a, b)
    return sum(ys) / len(ys)


# ---------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------


def stick_width(width: int, height: int) -> float:
    """The limb half-width (and joint radius) in pixels: 4 at 512, scaled with the short side."""
    return max(1.0, _BASE_STICK * min(width, height) / _BASE_SIZE)


def draw_openpose(points: Sequence[tuple[float, float] | None], width: int, height: int) -> Image.Image:
    """An RGB OpenPose control image: black, limbs at 60% opacity, then joints at full colour."""
    # 1. check inputs
    _check_size(width, height)
    if len(points) != len(KEYPOINT_NAMES):
        raise ValueError(f"need {len(KEYPOINT_NAMES)} points (COCO-18 order), got {len(points)}")
    canvas = Image.new("RGB", (width, height))
    stick = stick_width(width, height)
    alpha = round(255 * LIMB_OPACITY)
    # 2. limbs: a filled ellipse per limb, blended over what is there
    for (a, b), colour in zip(LIMB_SEQ, COLOURS, strict=False):
        p, q = points[a - 1], points[b - 1]
        if p is None or q is None:
            continue
        polygon = _limb_ellipse(p, q, stick)
        left = max(0, math.floor(min(x for x, _ in polygon)))
        top = max(0, math.floor(min(y for _, y in polygon)))
        right = min(width, math.ceil(max(x for x, _ in polygon)) + 1)
        bottom = min(height, math.ceil(max(y for _, y in polygon)) + 1)
        if right <= left or bottom <= top:
            continue
        mask = Image.new("L", (right - left, bottom - top))
        ImageDraw.Draw(mask).polygon([(x - left, y - top) for x, y in polygon], fill=alpha)
        canvas.paste(colour, (left, top, right, bottom), mask)
    # 3. joints on top, so each keeps its exact colour
    draw = ImageDraw.Draw(canvas)
    for point, colour in zip(points, COLOURS, strict=True):
        if point is None:
            continue
        x, y = point
        draw.ellipse((x - stick, y - stick, x + stick, y + stick), fill=colour)
    return canvas


_ELLIPSE_STEPS = 36


def _limb_ellipse(p: tuple[float, float], q: tuple[float, float], half_width: float) -> list[tuple[float, float]]:
    """The polygon of an ellipse spanning p..q, ``half_width`` across (cv2.ellipse2Poly's shape)."""
    cx, cy = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
    half_length = math.hypot(q[0] - p[0], q[1] - p[1]) / 2
    angle = math.atan2(q[1] - p[1], q[0] - p[0])
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    polygon = []
    for step in range(_ELLIPSE_STEPS):
        t = 2 * math.pi * step / _ELLIPSE_STEPS
        ex, ey = half_length * math.cos(t), half_width * math.sin(t)
        polygon.append((cx + ex * cos_a - ey * sin_a, cy + ex * sin_a + ey * cos_a))
    return polygon


def pose_image(
    pose: str | PoseTemplate, framing: str, width: int, height: int, *, x_center: float = 0.5
) -> tuple[PoseTemplate, Image.Image]:
    """The template a shot's pose maps to and its OpenPose image, framed: what the renderer feeds ControlNet."""
    template = pose if isinstance(pose, PoseTemplate) else pose_template(pose)
    points = place(template, framing=framing, width=width, height=height, x_center=x_center)
    return template, draw_openpose(points, width, height)


# ---------------------------------------------------------------------------------------
# Detected poses (pose_source = "detect"): keypoints found in a picture become a template
# ---------------------------------------------------------------------------------------
TEMPLATE_SOURCE = "template"

# Body segments whose length, against the standing template's, gives the figure's height.
# Foreshortening only shortens a segment, so the longest estimate is the truest one.
_MEASURING_SEGMENTS: tuple[tuple[str, str], ...] = (
    ("r_shoulder", "l_shoulder"), ("r_shoulder", "r_elbow"), ("l_shoulder", "l_elbow"),
    ("r_hip", "r_knee"), ("l_hip", "l_knee"), ("r_knee", "r_ankle"), ("l_knee", "l_ankle"),
)  # fmt: skip
_MIN_DETECTED_JOINTS = 4


class NoPoseFound(ValueError):
    """A picture gave no usable body: too few joints, or no neck and shoulders to anchor it."""


def template_from_keypoints(name: str, points: Sequence[tuple[float, float] | None]) -> PoseTemplate:
    """A template from 18 COCO keypoints in pixels (y down), as a pose detector reports them.

    The figure's height comes from its longest body segment against the standing template
    (torso, shoulders, upper arms, thighs, shins); the neck goes on the box's centre line.
    Feet, when seen, stand on the box's floor; otherwise the neck sits where a standing
    figure's does. Joints that would leave the box are clamped to its edge.
    """
    if len(points) != len(KEYPOINT_NAMES):
        raise ValueError(f"need {len(KEYPOINT_NAMES)} keypoints (COCO-18 order), got {len(points)}")
    found = {KEYPOINT_NAMES[i]: p for i, p in enumerate(points) if p is not None}
    if len(found) < _MIN_DETECTED_JOINTS:
        raise NoPoseFound(f"only {len(found)} body joint(s) found; at least {_MIN_DETECTED_JOINTS} are needed")
    neck = found.get("neck") or _midpoint(found.get("r_shoulder"), found.get("l_shoulder"))
    if neck is None:
        raise NoPoseFound("no neck or shoulders found, so the figure cannot be placed")
    height = _figure_height({**found, "neck": neck})
    if height is None:
        raise NoPoseFound("no two joints far enough apart to measure the figure")
    standing = TEMPLATES[DEFAULT_POSE]
    standing_neck = standing.point("neck")
    assert standing_neck is not None
    ankles = [found[a][1] for a in ("r_ankle", "l_ankle") if a in found]
    if ankles:  # the lowest foot on the floor line
        ankle_floor = max(p[1] for p in (standing.point("r_ankle"), standing.point("l_ankle")) if p is not None)
        top = max(ankles) - ankle_floor * height
    else:
        top = neck[1] - standing_neck[1] * height
    box: list[Keypoint] = []
    for point_name in KEYPOINT_NAMES:
        point = neck if point_name == "neck" else found.get(point_name)
        if point is None:
            box.append(None)
            continue
        x = standing_neck[0] + (point[0] - neck[0]) / height
        y = (point[1] - top) / height
        box.append((round(min(1.0, max(0.0, x)), 4), round(min(1.0, max(0.0, y)), 4)))
    return PoseTemplate(name, tuple(box))


def _midpoint(a: tuple[float, float] | None, b: tuple[float, float] | None) -> tuple[float, float] | None:
    if a is None or b is None:
        return None
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)


def _figure_height(found: Mapping[str, tuple[float, float]]) -> float | None:
    standing = TEMPLATES[DEFAULT_POSE]
    estimates: list[float] = []
    hips = _midpoint(found.get("r_hip"), found.get("l_hip")) or found.get("r_hip") or found.get("l_hip")
    if hips is not None:  # the torso: neck to the middle of the hips
        standing_hips = _mid_y(standing, "r_hip", "l_hip")
        standing_neck = standing.point("neck")
        assert standing_neck is not None
        estimates.append(math.dist(found["neck"], hips) / (standing_hips - standing_neck[1]))
    for a, b in _MEASURING_SEGMENTS:
        if a in found and b in found:
            reference = math.dist(standing.point(a), standing.point(b))  # type: ignore[arg-type]
            estimates.append(math.dist(found[a], found[b]) / reference)
    height = max(estimates, default=0.0)
    return height if height > 1.0 else None


@dataclass(frozen=True)
class PoseLibrary:
    """Which template each shot pose uses: a detected one where a picture gave it, else the built-in.

    ``detected`` maps a pose name (as ``pose_key`` spells it) to its template and the picture
    it came from; lookups say which it was, for report.json.
    """

    detected: Mapping[str, tuple[PoseTemplate, str]] = field(default_factory=dict)

    def lookup(self, pose: str) -> tuple[PoseTemplate, str]:
        hit = self.detected.get(pose_key(pose))
        if hit is not None:
            return hit[0], f"detected: {hit[1]}"
        return pose_template(pose), TEMPLATE_SOURCE

    def describe(self) -> dict[str, str]:
        return {name: source for name, (_, source) in sorted(self.detected.items())}


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
