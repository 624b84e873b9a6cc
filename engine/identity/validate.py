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

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from PIL import Image

from engine.identity.faces import FaceRecord, mean_embedding

FACE_RECORD = "face"  # the key of a score's FaceRecord (the one value in a score that is not a float)

# "not_in_shot": a panel without Aldar Kose is not compared with him (it passes, unscored)
Verdict = Literal["pass", "unchecked", "not_in_shot", "low_identity", "copy_paste", "wrong_face", "no_face"]


class Validator(Protocol):
    name: str

    def score(
        self, images: Sequence[Image.Image], *, texts: Sequence[str], reference: Image.Image | None,
        framings: Sequence[str] | None = None,
    ) -> list[dict[str, float]]:
        """Scores per image; ``identity`` only when there is a reference to compare with."""
        ...

    def with_pictures(self, pictures: Sequence[Image.Image]) -> Validator:
        """This validator comparing with ``pictures`` (the user's character picture) in place
        of the configured pictures and frame 1, for one board."""
        ...


class FaceCrop(NamedTuple):
    crop: Image.Image  # the largest face with a margin; the whole picture without one
    found: bool
    face: Any  # the face embedding; None without a face
    reused: bool  # taken from an earlier face check's record, not looked for again


class NullValidator:
    """Scores nothing: used with renderers that draw no real character."""

    name = "none"

    def score(
        self, images: Sequence[Image.Image], *, texts: Sequence[str], reference: Image.Image | None,
        framings: Sequence[str] | None = None,
    ) -> list[dict[str, float]]:
        return [{} for _ in images]

    def with_pictures(self, pictures: Sequence[Image.Image]) -> NullValidator:
        return self


class ClipScorer:
    """CLIP embeddings on the model's device, batched; the model is loaded once by engine.models.

    With ``faces`` (``FaceIdentity``, or ``FaceProcess`` running it in a child process),
    identity is CLIP on the face crop when a face is found (the whole frame otherwise, recorded
    as ``face_found`` 0), plus the face-embedding distance to the reference face when both
    faces are found. A close-up is expected to show a
    face (``face_expected`` 1): finding none there is a failure, never a pass on its own.
    Each score then also carries, under ``FACE_RECORD``, what the face check found (the
    board keeps it for an eval to reuse).
    """

    name = "clip"

    def __init__(self, model: Any, processor: Any, *, reference_images: Sequence[Image.Image] = (),
                 faces: Any = None) -> None:
        import torch  # the ML stack is imported only when a real scorer is built

        self._torch = torch
        self.model = model.eval()
        self.processor = processor
        self.faces = faces
        if faces is not None:
            self.name = "clip+face"
        # (reference picture, CLIP emb, face emb). The picture itself, not its id(): a board's
        # frame 1 is freed when the board ends, and the next one's may reuse its address.
        self._cache: tuple[Image.Image, Any, Any] | None = None
        self._reference = self._embed_pictures(reference_images) if reference_images else None

    def with_pictures(self, pictures: Sequence[Image.Image]) -> ClipScorer:
        """A scorer sharing this one's models whose reference is ``pictures``, every frame
        (frame 1 included) compared with them."""
        if not pictures:
            raise ValueError("with_pictures needs at least one picture")
        scorer = copy.copy(self)
        scorer._cache = None
        scorer._reference = self._embed_pictures(pictures)
        return scorer

    def _embed_pictures(self, pictures: Sequence[Image.Image]) -> tuple[Any, Any]:
        """The mean CLIP embedding of the pictures' face crops, and their mean face embedding."""
        found = self._faces_in(pictures)
        clip = _normalise(self.embed_images(_crops(pictures, found)).mean(dim=0, keepdim=True))[0]
        return clip, mean_embedding([face for _, face in found]) if self.faces is not None else None

    def score(
        self, images: Sequence[Image.Image], *, texts: Sequence[str], reference: Image.Image | None,
        framings: Sequence[str] | None = None,
    ) -> list[dict[str, float]]:
        if len(texts) != len(images):
            raise ValueError(f"need one text per image, got {len(texts)} texts for {len(images)} images")
        framings = list(framings) if framings is not None else [""] * len(images)
        ref_clip, ref_face = self._reference_embeddings(reference)
        faces = self._faces_in(images)
        crops = _crops(images, faces)
        clip_t = (self.embed_images(images) * self.embed_texts(texts)).sum(dim=-1)
        identity = self.embed_images(crops) @ ref_clip if ref_clip is not None else None
        scores = []
        for i, (box, face) in enumerate(faces):
            entry = {"clip_t": round(float(clip_t[i]), 4)}
            if identity is not None:
                entry["identity"] = round(float(identity[i]), 4)
            if self.faces is not None:
                entry.update(self._face_scores(box, face, ref_face, framings[i]))
                entry[FACE_RECORD] = FaceRecord.of(self.faces.signature(), images[i], box, face)
            scores.append(entry)
        return scores

    def _faces_in(self, images: Sequence[Image.Image]) -> list[tuple[Any, Any]]:
        """(box, embedding) of each image's largest face; (None, None) without a face check."""
        if self.faces is None or not images:
            return [(None, None)] * len(images)
        return self.faces.faces_in(images)

    def face_crops(self, images: Sequence[Image.Image], known: Sequence[FaceRecord | None] = ()) -> list[FaceCrop]:
        """What the identity check compares, per image: the image cut to its largest face (the
        whole image when none is found, or without a face check), and that face's embedding.

        ``known``: per image, what an earlier face check found, or None. A record these face
        models made (the same signature) of the same pixels is used as it is (``reused``); the
        other images go to the face models, in one call."""
        if known and len(known) != len(images):
            raise ValueError(f"need one face record (or None) per image, got {len(known)} for {len(images)}")
        signature = self.faces.signature() if self.faces is not None else None
        reused = [signature is not None and record is not None and record.describes(signature, image)
                  for image, record in zip(images, known or [None] * len(images), strict=True)]
        fresh = iter(self._faces_in([image for image, done in zip(images, reused, strict=True) if not done]))
        found = [(known[i].box, known[i].array) if done else next(fresh) for i, done in enumerate(reused)]
        return [FaceCrop(crop, box is not None, face, done)
                for crop, (box, face), done in zip(_crops(images, found), found, reused, strict=True)]

    def _face_scores(self, box: Any, face: Any, ref_face: Any, framing: str) -> dict[str, float]:
        entry = {"face_found": 1.0 if box is not None else 0.0, "face_expected": 1.0 if framing == "close-up" else 0.0}
        if face is not None and ref_face is not None:
            entry["face_distance"] = round(self.faces.distance(face, ref_face), 4)
        return entry

    def _reference_embeddings(self, reference: Image.Image | None) -> tuple[Any, Any]:
        if self._reference is not None:
            return self._reference
        if reference is None:
            return None, None
        if self._cache is None or self._cache[0] is not reference:
            found = self._faces_in([reference])
            self._cache = (reference, self.embed_images(_crops([reference], found))[0], found[0][1])
        return self._cache[1], self._cache[2]

    def embed_images(self, images: Sequence[Image.Image]):
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        with self._torch.inference_mode():
            features = self.model.get_image_features(pixel_values=self._to_model(inputs["pixel_values"]))
        return _normalise(_embedding(features))

    def embed_texts(self, texts: Sequence[str]):
        inputs = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
        with self._torch.inference_mode():
            features = self.model.get_text_features(
                input_ids=inputs["input_ids"].to(self._device),
                attention_mask=inputs["attention_mask"].to(self._device),
            )
        return _normalise(_embedding(features))

    @property
    def _device(self):
        return next(self.model.parameters()).device

    def _to_model(self, tensor):
        param = next(self.model.parameters())
        return tensor.to(device=param.device, dtype=param.dtype)


def _crops(images: Sequence[Image.Image], faces: Sequence[tuple[Any, Any]]) -> list[Image.Image]:
    """Each image cut to its face where one was found; the whole image otherwise."""
    return [box.crop(image) if box is not None else image for image, (box, _) in zip(images, faces, strict=True)]


def _embedding(features: Any):
    """transformers 5 returns a model output (the projection in ``pooler_output``); 4.x a tensor."""
    return features if hasattr(features, "norm") else features.pooler_output


def _normalise(tensor):
    """Unit length in float32: normalised in half precision, a cosine of two such vectors can pass
    1.0 and a score of 0.94 can read as 0.95 (bf16 keeps 3 significant digits)."""
    tensor = tensor.float()
    return tensor / tensor.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class Attempt:
    seed: int
    scores: dict[str, float] = field(default_factory=dict)
    verdict: Verdict = "unchecked"
    face: FaceRecord | None = None  # what the face check found (report.json keeps the kept attempt's)

    @classmethod
    def of(cls, seed: int, score: dict | None, verdict: Verdict) -> Attempt:
        """An attempt from a validator's score, its face record taken out of the numbers."""
        scores = dict(score or {})
        face = scores.pop(FACE_RECORD, None)
        return cls(seed=seed, scores=scores, verdict=verdict, face=face)

    def to_json(self) -> dict:
        return {"seed": self.seed, "scores": dict(self.scores), "verdict": self.verdict}


@dataclass(frozen=True)
class RetryPolicy:
    """Accept a frame whose identity lies in [threshold, copy_ceiling]; else re-roll up to ``max_retries``."""

    threshold: float
    max_retries: int
    copy_ceiling: float = 1.0
    face_threshold: float = 0.6  # largest face-embedding distance that is still the same person

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
        """CLIP identity within [threshold, copy_ceiling] AND (no face found, or the face matches);
        a close-up where a face was expected but none was found does not pass."""
        identity = scores.get("identity")
        if identity is None:
            return "unchecked"
        if identity > self.copy_ceiling:
            return "copy_paste"
        if identity < self.threshold:
            return "low_identity"
        if scores.get("face_distance", 0.0) > self.face_threshold:
            return "wrong_face"
        if scores.get("face_expected") == 1.0 and scores.get("face_found") == 0.0:
            return "no_face"
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
