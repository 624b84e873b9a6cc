"""Frame validation: scoring and the re-roll policy.

A validator scores one image; the policy decides whether a score passes and which
attempt to keep. The preview renderer draws no character, so it is paired with the
``NullValidator``, which scores nothing and says so in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from engine.prompts import Prompt


class Validator(Protocol):
    name: str

    def score(self, image: Image.Image, *, prompt: Prompt, reference: Image.Image | None) -> dict[str, float]:
        """Return named scores in 0..1; ``identity`` is the one the policy checks."""
        ...


class NullValidator:
    """Scores nothing: used with renderers that draw no real character."""

    name = "none"

    def score(self, image: Image.Image, *, prompt: Prompt, reference: Image.Image | None) -> dict[str, float]:
        return {}


@dataclass(frozen=True)
class Attempt:
    seed: int
    scores: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"seed": self.seed, "scores": dict(self.scores)}


@dataclass(frozen=True)
class RetryPolicy:
    """Accept a frame whose identity score reaches ``threshold``; else re-roll up to ``max_retries``."""

    threshold: float
    max_retries: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {self.threshold}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def passes(self, scores: dict[str, float]) -> bool:
        identity = scores.get("identity")
        return identity is None or identity >= self.threshold

    @staticmethod
    def best(attempts: list[Attempt]) -> int:
        """Index of the attempt to keep: the highest identity score, the first on ties."""
        if not attempts:
            raise ValueError("no attempts to choose from")
        ranked = [a.scores.get("identity", float("-inf")) for a in attempts]
        return ranked.index(max(ranked))
