"""Shot -> SDXL prompt.

SDXL's CLIP text encoders read English only, so prompts are built from the shot's
English structured fields, never from the user's caption. The trigger token comes
first: CLIP truncates at 77 tokens, and the character must survive truncation.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.settings import PromptSettings
from engine.shots import Shot

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


@dataclass(frozen=True)
class Prompt:
    """SDXL's two prompts: ``positive`` for CLIP ViT-L (the character and the action) and
    ``positive_2`` for OpenCLIP bigG (the scene and the style). Each encoder reads at most
    77 tokens, so the subject is never pushed out by scenery."""

    positive: str
    negative: str
    positive_2: str = ""

    @property
    def scene(self) -> str:
        return self.positive_2 or self.positive


def build_prompt(shot: Shot, settings: PromptSettings) -> Prompt:
    """Compose the SDXL prompts for one shot from its structured English fields."""
    angle = shot.camera_angle
    if settings.face_bias and shot.framing != "wide" and angle in ("eye-level", "three-quarter"):
        angle = "front"
    subject = [
        f"{settings.trigger_token}, {settings.character}",
        f"{shot.pose}, {shot.action}",
        f"{shot.emotion} expression",
        _FRAMING_PHRASE[shot.framing],
        _ANGLE_PHRASE[angle],
    ]
    scene = [settings.trigger_token, f"in the {shot.setting} {_TIME_PHRASE[shot.time_of_day]}"]
    if shot.characters:
        scene.append("with " + ", ".join(shot.characters))
    if shot.props:
        scene.append("props: " + ", ".join(shot.props))
    scene.append(settings.style_suffix)
    return Prompt(positive=", ".join(subject), negative=settings.negative_prompt, positive_2=", ".join(scene))
