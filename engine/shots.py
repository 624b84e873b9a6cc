"""The shot list: what a planner produces and every later stage consumes.

The vocabularies below are shared by the offline planner, the LLM planner and the
renderers (the preview renderer picks palettes and silhouettes from them, the SDXL
renderer picks OpenPose skeletons from ``pose``). Keep them small and concrete.

A plan also carries its story bible: the ``cast`` (each recurring character once, with a fixed
English look) and the ``places`` (each location once, with a fixed English look). Shots refer
to them by id, so a character or a place is described in the same words in every panel.
Aldar Kose is cast member ``HERO_ID``; his look is ``[prompt] character`` (``with_hero_look``).
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


HERO_ID = 0
NAME_CHARS = 60  # a cast member's or a place's name, in the story's language
LOOK_CHARS = 160  # any look; the hero's is [prompt] character, whose default is 106 characters
# a look a planner writes: a few English words (80 characters of them are 15-25 CLIP tokens), so
# the others present fit in prompt 2 beside the place's look (bench/prompt_budget.py measures it)
WRITTEN_LOOK_CHARS = 80


class CastMember(BaseModel):
    """Someone who recurs across the board, drawn with the same ``look`` in every panel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=0, description="stable id; 0 is Aldar Kose")
    name: str = Field(min_length=1, max_length=NAME_CHARS, description="as the story names them, in its language")
    look: str = Field(min_length=1, max_length=LOOK_CHARS, description="fixed English look, a few words")


class Place(BaseModel):
    """A location of the story, drawn with the same ``look`` in every panel set there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=0)
    name: str = Field(min_length=1, max_length=NAME_CHARS, description="as the story names it, in its language")
    look: str = Field(min_length=1, max_length=LOOK_CHARS, description="fixed English look, a few words")


DIALOGUE_CHARS = 200  # a quoted line, in the story's language


class Dialogue(BaseModel):
    """A line the story quotes in this shot, and who says it (a cast id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    speaker: int = Field(ge=0, description="cast id of who speaks")
    text: str = Field(min_length=1, max_length=DIALOGUE_CHARS, description="the quoted words, in the story's language")


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
    cast_ids: tuple[int, ...] = Field(default=(), description="ids of the cast members in the panel")
    place_id: int | None = Field(default=None, description="id of the place the panel shows")
    dialogue: Dialogue | None = Field(default=None, description="a line spoken in the panel, if the story quotes one")


class ShotList(BaseModel):
    """A whole plan. ``python -m bot plan`` prints exactly this as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1)
    language: Language
    cast: tuple[CastMember, ...] = ()
    places: tuple[Place, ...] = ()
    shots: tuple[Shot, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _ids_refer_to_the_bible(self) -> ShotList:
        """Every id is given once, and every shot names only cast members and places of this plan."""
        for kind, entries in (("cast member", self.cast), ("place", self.places)):
            ids = [entry.id for entry in entries]
            if len(set(ids)) != len(ids):
                raise ValueError(f"a {kind} id is given twice: {ids}")
        cast, places = {m.id for m in self.cast}, {p.id for p in self.places}
        for shot in self.shots:
            if unknown := set(shot.cast_ids) - cast:
                raise ValueError(f"shot {shot.index} names cast ids {sorted(unknown)} that the cast does not have")
            if shot.place_id is not None and shot.place_id not in places:
                raise ValueError(f"shot {shot.index} names place id {shot.place_id} that the places do not have")
            if shot.dialogue is not None and shot.dialogue.speaker not in cast:
                raise ValueError(f"shot {shot.index}'s line is spoken by cast id {shot.dialogue.speaker}, "
                                 "whom the cast does not have")
        return self

    def member(self, cast_id: int) -> CastMember:
        return next(m for m in self.cast if m.id == cast_id)

    def place(self, place_id: int) -> Place:
        return next(p for p in self.places if p.id == place_id)

    def spoken_line(self, shot: Shot) -> str:
        """The shot's dialogue as the board shows it, under the caption: ``Name: "…"``."""
        if shot.dialogue is None:
            return ""
        return f'{self.member(shot.dialogue.speaker).name}: "{shot.dialogue.text}"'

    def check_numbering(self) -> None:
        """Raise ValueError unless shots are numbered 1..n in order."""
        got = [shot.index for shot in self.shots]
        if got != list(range(1, len(got) + 1)):
            raise ValueError(f"shots must be numbered 1..{len(got)} in order, got {got}")


def hero_in(shot: Shot) -> bool:
    """Whether Aldar Kose is in the panel; a shot of a plan without a cast always has him."""
    return not shot.cast_ids or HERO_ID in shot.cast_ids


def with_hero_opening(plan: ShotList) -> ShotList:
    """The plan with Aldar Kose in shot 1: frame 1 is the board's identity reference, so it can
    never be a panel about somebody else."""
    first = plan.shots[0]
    if hero_in(first) or not any(m.id == HERO_ID for m in plan.cast):
        return plan
    opened = first.model_copy(update={"cast_ids": (HERO_ID, *first.cast_ids)})
    return plan.model_copy(update={"shots": (opened, *plan.shots[1:])})


def with_hero_look(plan: ShotList, look: str) -> ShotList:
    """The plan with Aldar Kose's look set to ``look`` (``[prompt] character``), whatever the planner
    wrote: one look for the hero, from the config the LoRA was trained with."""
    if not any(m.id == HERO_ID for m in plan.cast):
        return plan
    cast = tuple(m.model_copy(update={"look": look[:LOOK_CHARS]}) if m.id == HERO_ID else m for m in plan.cast)
    return plan.model_copy(update={"cast": cast})
