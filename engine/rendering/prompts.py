"""Shot -> SDXL prompts, built from the whole shot and the plan's story bible.

SDXL's CLIP text encoders read English only, so prompts are built from the shot's English
fields and the bible's English looks, never from the user's caption. The two encoders get
different jobs, and each reads at most 77 tokens:

* prompt 1 (CLIP ViT-L), the subject: the trigger token and the hero's look (or, in a panel
  without him, the look of who it is about), the pose and action, the framing, the emotion
  and the camera angle;
* prompt 2 (OpenCLIP bigG), the scene: the place's look, the looks of the others present, the
  time of day, the style and the props.

A prompt is a list of named parts, each with a rank. When a text is over its encoder's budget,
the part of lowest rank goes first (``CUT_ORDER``, then the later of two equal ranks); the
subject of prompt 1 and the trigger token are never cut. What was cut is kept on the prompt
(``dropped``) and goes into report.json per frame. A cast member's look is the same string in
every panel they are in, since it is read from the bible, not written per shot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.settings import PromptSettings
from engine.shots import HERO_ID, Shot, ShotList

# Face-consistency bias: a close, frontal view keeps the LoRA's identity strongest.
_FRAMING_PHRASE = {
    "wide": "wide establishing shot, full body, small figure in the landscape",
    "medium": "medium shot, waist up",
    "close-up": "close-up portrait, head and shoulders, face clearly visible",
}
_ANGLE_PHRASE = {
    "front": "front view, facing the viewer",
    "eye-level": "eye-level view",
    "low-angle": "low-angle view",
    "high-angle": "high-angle view",
    "three-quarter": "three-quarter view",
}
_TIME_PHRASE = {
    "dawn": "at dawn, pale pink light",
    "day": "in bright daylight",
    "sunset": "at sunset, golden light",
    "night": "at night, moonlight and firelight",
}

CLIP_TOKEN_BUDGET = 77  # CLIP's context, start and end tokens included
TokenCounter = Callable[[str], int]
_PIECES = re.compile(r"[A-Za-z]+|[^\sA-Za-z]")

KEPT = 100  # the rank of a part that is never cut
# The order parts are cut in when a text is over budget: first listed, first cut.
CUT_ORDER = ("angle", "props", "emotion", "time", "others", "framing", "style", "action", "place")
_RANK = {name: rank for rank, name in enumerate(CUT_ORDER, start=1)}


@dataclass(frozen=True)
class Part:
    """One comma-separated piece of a prompt text, named for the ``dropped`` record."""

    name: str
    text: str

    @property
    def rank(self) -> int:
        return _RANK.get(self.name.split(":")[0], KEPT)


@dataclass(frozen=True)
class Dropped:
    """A part cut from a prompt to fit its encoder: which prompt (1 or 2), which part, its words."""

    prompt: int
    part: str
    text: str

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "part": self.part, "text": self.text}


@dataclass(frozen=True)
class Prompt:
    """SDXL's two prompts: ``positive`` for CLIP ViT-L (the subject) and ``positive_2`` for
    OpenCLIP bigG (the scene). ``parts``/``parts_2`` are what they were joined from (empty for
    a prompt read back from report.json, which is final); ``dropped`` is what fitting cut."""

    positive: str
    negative: str
    positive_2: str = ""
    parts: tuple[Part, ...] = field(default=(), compare=False)  # how it was built, not what it says
    parts_2: tuple[Part, ...] = field(default=(), compare=False)
    dropped: tuple[Dropped, ...] = ()

    @property
    def scene(self) -> str:
        return self.positive_2 or self.positive


def build_prompt(shot: Shot, settings: PromptSettings, bible: ShotList | None = None, *, lora: bool = True) -> Prompt:
    """Compose the SDXL prompts for one shot. ``bible``: the plan the shot belongs to, whose cast
    and places give the looks; without one (or in a plan without a bible) the shot's own nouns
    and setting stand in. ``lora`` False (a character of the user's own): no trigger token."""
    present = _present(shot, bible)
    hero_in_shot = not present or HERO_ID in present
    angle = shot.camera_angle
    if settings.face_bias and shot.framing != "wide" and angle in ("eye-level", "three-quarter"):
        angle = "front"
    if hero_in_shot and lora:
        subject = Part("subject", f"{settings.trigger_token}, {settings.character}")  # the look the LoRA learned
    elif hero_in_shot:
        subject = Part("subject", settings.character)
    else:  # a panel about someone else: the LoRA's trigger would draw Aldar Kose into it
        subject = Part("subject", _look(bible, present[0], shot.characters[0] if shot.characters else "a person"))
    parts = (
        subject,
        Part("action", f"{shot.pose}, {shot.action}"),
        Part("framing", _FRAMING_PHRASE[shot.framing]),
        Part("emotion", f"{shot.emotion} expression"),
        Part("angle", _ANGLE_PHRASE[angle]),
    )
    scene = [Part("trigger", settings.trigger_token)] if hero_in_shot and lora else []
    scene.append(Part("place", _place(shot, bible)))
    scene.extend(_others(shot, bible, present, subject_id=HERO_ID if hero_in_shot else present[0]))
    scene.append(Part("time", _TIME_PHRASE[shot.time_of_day]))
    scene.append(Part("style", settings.style_suffix))
    if shot.props:
        scene.append(Part("props", "props: " + ", ".join(shot.props)))
    return Prompt(positive=_join(parts), negative=settings.negative_prompt, positive_2=_join(scene),
                  parts=parts, parts_2=tuple(scene))


def _present(shot: Shot, bible: ShotList | None) -> tuple[int, ...]:
    """The cast ids in the panel, when the plan has a cast to look them up in."""
    return shot.cast_ids if bible is not None and bible.cast else ()


def _look(bible: ShotList | None, cast_id: int, fallback: str) -> str:
    if bible is not None and any(m.id == cast_id for m in bible.cast):
        return bible.member(cast_id).look
    return fallback


def _place(shot: Shot, bible: ShotList | None) -> str:
    if bible is not None and shot.place_id is not None:
        return bible.place(shot.place_id).look
    return f"in the {shot.setting}"


def _others(shot: Shot, bible: ShotList | None, present: tuple[int, ...], *, subject_id: int) -> list[Part]:
    if present:
        return [Part(f"others:{cast_id}", f"with {bible.member(cast_id).look}")
                for cast_id in present if cast_id not in (subject_id, HERO_ID)]
    return [Part("others", "with " + ", ".join(shot.characters))] if shot.characters else []


def _join(parts: tuple[Part, ...] | list[Part]) -> str:
    return ", ".join(part.text for part in parts)


def estimate_clip_tokens(text: str) -> int:
    """A conservative CLIP token count without a tokenizer: every four letters of a word
    count as a token, every other character as one, plus start and end. Measured on the
    sample stories' prompts, it overestimates the real tokenizer by 20-40%, never under."""
    pieces = _PIECES.findall(text)
    return 2 + sum(max(1, math.ceil(len(p) / 4)) if p.isalpha() else 1 for p in pieces)


def fit_parts(parts: tuple[Part, ...], count_tokens: TokenCounter = estimate_clip_tokens,
              budget: int = CLIP_TOKEN_BUDGET) -> tuple[tuple[Part, ...], tuple[Part, ...]]:
    """The parts that fit ``budget`` tokens, and those cut: the lowest rank first (the later of
    two equal ranks). A part of rank ``KEPT`` is never cut, even when the kept ones alone are over."""
    kept, cut = list(parts), []
    while count_tokens(_join(kept)) > budget:
        cuttable = [i for i, part in enumerate(kept) if part.rank < KEPT]
        if not cuttable:
            break
        lowest = min(cuttable, key=lambda i: (kept[i].rank, -i))
        cut.append(kept.pop(lowest))
    return tuple(kept), tuple(cut)


def fit_to_budget(text: str, count_tokens: TokenCounter = estimate_clip_tokens,
                  budget: int = CLIP_TOKEN_BUDGET) -> str:
    """Drop trailing comma-separated parts until ``text`` fits ``budget`` tokens. The first
    part always stays. (For texts with no named parts: the negative prompt.)"""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    while len(parts) > 1 and count_tokens(", ".join(parts)) > budget:
        parts.pop()
    return ", ".join(parts)


def fit_prompt(prompt: Prompt, count_tokens: TokenCounter = estimate_clip_tokens,
               count_tokens_2: TokenCounter | None = None, budget: int = CLIP_TOKEN_BUDGET) -> Prompt:
    """Each of the prompt's texts within its encoder's budget (``count_tokens_2`` for prompt 2),
    cut by rank, with what was cut recorded in ``dropped``."""
    second = count_tokens_2 or count_tokens
    if not prompt.parts:  # read back from a report: already fitted when it was drawn
        return Prompt(positive=fit_to_budget(prompt.positive, count_tokens, budget),
                      negative=fit_to_budget(prompt.negative, count_tokens, budget),
                      positive_2=fit_to_budget(prompt.positive_2, second, budget) if prompt.positive_2 else "",
                      dropped=prompt.dropped)
    parts, cut = fit_parts(prompt.parts, count_tokens, budget)
    parts_2, cut_2 = fit_parts(prompt.parts_2, second, budget)
    dropped = tuple(Dropped(1, p.name, p.text) for p in cut) + tuple(Dropped(2, p.name, p.text) for p in cut_2)
    return Prompt(positive=_join(parts), negative=fit_to_budget(prompt.negative, count_tokens, budget),
                  positive_2=_join(parts_2), parts=parts, parts_2=parts_2, dropped=prompt.dropped + dropped)
