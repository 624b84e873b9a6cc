"""What every renderer takes and promises: ``FrameRequest`` and the ``Renderer`` protocol.

Two renderers implement it: ``engine.rendering.preview.PreviewRenderer`` (Pillow sketches, any
machine) and ``engine.rendering.sdxl.SdxlRenderer`` (diffusers SDXL + the character LoRA).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from engine.limits import MAX_FRAME_SIDE, MIN_FRAME_SIDE
from engine.rendering.prompts import Prompt
from engine.shots import Shot


StepCallback = Callable[[int, int], None]  # (step just finished, 1-based; total steps)
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class FrameRequest:
    """Everything a renderer needs for one frame.

    ``reference`` is what a ref-guided frame is guided by: the user's ``picture`` when the board
    has one (every frame, frame 1 included), else frame 1. ``lora`` False draws without the
    character LoRA (the user's own character, ``--no-lora``)."""

    shot: Shot
    prompt: Prompt
    seed: int
    width: int
    height: int
    reference: Image.Image | None = None
    control_image: Image.Image | None = None  # the shot's pose skeleton, ref-guided frames only
    picture: Image.Image | None = None  # the user's character picture, for the whole board
    lora: bool = True

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not MIN_FRAME_SIDE <= value <= MAX_FRAME_SIDE:
                raise ValueError(
                    f"frame {name} must be between {MIN_FRAME_SIDE} and {MAX_FRAME_SIDE} pixels, got {value}"
                )
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")


@dataclass(frozen=True)
class ModeOff:
    """Why a render mode is not loaded: switched off in config, or its weights did not load."""

    mode: str
    weights: str = ""  # the weights that did not load ("engine.controlnet = name"); "" = switched off

    def describe(self) -> str:
        if self.weights:
            return f"{self.mode} mode is not available: its weights did not load ({self.weights})"
        return f"{self.mode} mode is switched off (engine.ref_guided = false)"


class Renderer(Protocol):
    """Renders a batch of frames, one seed each, so any frame can be redrawn on its own."""

    name: str
    batch_size: int
    modes: tuple[str, ...]  # the render modes this renderer has loaded

    def fit_prompt(self, prompt: Prompt) -> Prompt:
        """The prompt as this renderer will really use it (e.g. trimmed to the text encoder's budget)."""
        ...

    def render(
        self,
        requests: Sequence[FrameRequest],
        *,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[Image.Image]:
        """One image per request, in order. Raises ``engine.errors.Cancelled`` if ``should_cancel`` turns true."""
        ...
