"""The shot list: what a planner produces and every later stage consumes.

The vocabularies below are shared by the offline planner, the LLM planner and the
renderers (the preview renderer picks palettes and silhouettes from them, the SDXL
renderer picks OpenPose skeletons from ``pose``). Keep them small and concrete.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Framing = Literal["wide", "medium", "close-up"]
CameraAngle = Literal["front", "eye-level", "low-angle", "high-angle", "three-quarter"]
Pose = Literal[
    "standing",
    "walking",
    "riding",
    "sitting",
    "pointing",
    "laughing",
    "talking",
    "running",
    "bowing",
    "holding",
    "crouching",
    "waving",
]
TimeOfDay = Literal["dawn", "day", "sunset", "night"]
Language = Literal["en", "ru", "kk"]

# Settings the renderers know how to paint. A planner may only emit one of these.
Setting = Literal[
    "steppe",
    "bazaar",
    "yurt",
    "village",
    "mountains",
    "river",
    "camp",
    "road",
    "winter steppe",
]

FRAMINGS: tuple[str, ...] = get_args(Framing)
CAMERA_ANGLES: tuple[str, ...] = get_args(CameraAngle)
POSES: tuple[str, ...] = get_args(Pose)
TIMES_OF_DAY: tuple[str, ...] = get_args(TimeOfDay)
LANGUAGES: tuple[str, ...] = get_args(Language)
SETTINGS: tuple[str, ...] = get_args(Setting)


class Shot(BaseModel):
    """One panel of the storyboard. English fields feed SDXL; ``caption`` is the user's words."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=1, description="1-based position on the board")
    description: str = Field(min_length=1, description="one English line: what the panel shows")
    caption: str = Field(min_length=1, description="the story's own sentence, in its language")
    action: str = Field(min_length=1, description="English verb phrase, e.g. 'haggles with the merchant'")
    setting: Setting
    framing: Framing
    camera_angle: CameraAngle
    pose: Pose
    emotion: str = Field(min_length=1, description="English adjective, e.g. 'sly', 'surprised'")
    time_of_day: TimeOfDay
    characters: tuple[str, ...] = Field(default=(), description="other characters, English nouns")
    props: tuple[str, ...] = Field(default=(), description="objects in the panel, English nouns")


class ShotList(BaseModel):
    """A whole plan. ``python -m bot plan`` prints exactly this as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1)
    language: Language
    shots: tuple[Shot, ...] = Field(min_length=1)

    def check_numbering(self) -> None:
        """Raise ValueError unless shots are numbered 1..n in order."""
        got = [shot.index for shot in self.shots]
        if got != list(range(1, len(got) + 1)):
            raise ValueError(f"shots must be numbered 1..{len(got)} in order, got {got}")
