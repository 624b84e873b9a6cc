"""Frame validation: scoring and the re-roll policy.

A validator scores a batch of frames against an identity reference; the policy decides
whether a score passes and which attempt to keep:

* ``identity`` (CLIP image-image cosine) must reach ``threshold``;
* an ``identity`` above ``copy_ceiling`` means the frame copies its reference: re-rolled;
* ``clip_t`` (image vs. the shot's description) is recorded, not enforced.

The preview renderer draws no character, so it is paired with ``NullValidator``, which
scores nothing and says so in the report. ``ClipScorer`` is the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from PIL import Image

Verdict = Literal["pass", "unchecked", "low_identity", "copy_paste"]


class Validator(Protocol):
    name: str

    @property
    def needs_reference(self) -> bool:
        """True when identity is checked against frame 1, which must then be final first."""
        ...

    def score(
        self, images: Sequence[Image.Image], *, texts: Sequence[str], reference: Image.Image | None
    ) -> list[dict[str, float]]:
        """Scores in 0..1 per image; ``identity`` only when there is a reference to compare with."""
        ...


class NullValidator:
    """Scores nothing: used with renderers that draw no real character."""

    name = "none"
    needs_reference = False

    def score(
        self, images: Sequence[Image.Image], *, texts: Sequence[str], reference: Image.Image | None
    ) -> list[dict[str, float]]:
        return [{} for _ in images]


class ClipScorer:
    """CLIP embeddings on the model's device, batched; the model is loaded once by engine.models."""

    name = "clip"

    def __init__(self, model: Any, processor: Any, *, reference_images: Sequence[Image.Image] = ()) -> None:
        import torch  # the ML stack is imported only when a real scorer is built

        self._torch = torch
        self.model = model.eval()
        self.processor = processor
        self._reference = self._mean_embedding(list(reference_images)) if reference_images else None

    @property
    def needs_reference(self) -> bool:
        return self._reference is None

    def score(
        self, images: Sequence[Image.Image], *, texts: Sequence[str], reference: Image.Image | None
    ) -> list[dict[str, float]]:
        if len(texts) != len(images):
            raise ValueError(f"need one text per image, got {len(texts)} texts for {len(images)} images")
        image_emb = self.embed_images(images)
        text_emb = self.embed_texts(texts)
        clip_t = (image_emb * text_emb).sum(dim=-1)
        ref = self._reference if self._reference is not None else (
            self.embed_images([reference])[0] if reference is not None else None
        )
        identity = image_emb @ ref if ref is not None else None
        scores = []
        for i in range(len(images)):
            entry = {"clip_t": round(float(clip_t[i]), 4)}
            if identity is not None:
                entry["identity"] = round(float(identity[i]), 4)
            scores.append(entry)
        return scores

    def embed_images(self, images: Sequence[Image.Image]):
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        with self._torch.inference_mode():
            features = self.model.get_image_features(pixel_values=self._to_model(inputs["pixel_values"]))
        return _normalise(_embedding(features)).float()

    def embed_texts(self, texts: Sequence[str]):
        inputs = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
        with self._torch.inference_mode():
            features = self.model.get_text_features(
                input_ids=inputs["input_ids"].to(self._device),
                attention_mask=inputs["attention_mask"].to(self._device),
            )
        return _normalise(_embedding(features)).float()

    def _mean_embedding(self, images: list[Image.Image]):
        return _normalise(self.embed_images(images).mean(dim=0, keepdim=True))[0]

    @property
    def _device(self):
        return next(self.model.parameters()).device

    def _to_model(self, tensor):
        param = next(self.model.parameters())
        return tensor.to(device=param.device, dtype=param.dtype)


def _embedding(features: Any):
    """transformers 5 returns a model output (the projection in ``pooler_output``); 4.x a tensor."""
    return features if hasattr(features, "norm") else features.pooler_output


def _normalise(tensor):
    return tensor / tensor.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class Attempt:
    seed: int
    scores: dict[str, float] = field(default_factory=dict)
    verdict: Verdict = "unchecked"

    def to_json(self) -> dict:
        return {"seed": self.seed, "scores": dict(self.scores), "verdict": self.verdict}


@dataclass(frozen=True)
class RetryPolicy:
    """Accept a frame whose identity lies in [threshold, copy_ceiling]; else re-roll up to ``max_retries``."""

    threshold: float
    max_retries: int
    copy_ceiling: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {self.threshold}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not self.threshold <= self.copy_ceiling <= 1.0:
            raise ValueError(f"copy_ceiling must be within threshold..1, got {self.copy_ceiling}")

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def verdict(self, scores: dict[str, float]) -> Verdict:
        identity = scores.get("identity")
        if identity is None:
            return "unchecked"
        if identity > self.copy_ceiling:
            return "copy_paste"
        if identity < self.threshold:
            return "low_identity"
        return "pass"

    def passes(self, scores: dict[str, float]) -> bool:
        return self.verdict(scores) in ("pass", "unchecked")

    def best(self, attempts: Sequence[Attempt]) -> int:
        """Index of the attempt to keep: a passing one first, then the highest identity that is
        not a copy, then the least copying; the earliest wins ties."""
        if not attempts:
            raise ValueError("no attempts to choose from")

        def rank(i: int) -> tuple:
            scores = attempts[i].scores
            identity = scores.get("identity", float("-inf"))
            copy = identity > self.copy_ceiling
            return (self.passes(scores), not copy, -identity if copy else identity, -i)

        return max(range(len(attempts)), key=rank)
