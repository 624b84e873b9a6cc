"""A board's consistency and fidelity, measured as the field measures them.

Per board (``BoardScorer.score``), with the eval's own CLIP (``--clip-model``, never the
engine's identity checker grading itself) and, optionally, the dlib face models:

* ``clip_i``: whole-frame CLIP image similarity to the reference (ConsiStory+'s CLIP-I); with
  frame 1 as the reference, frame 1 itself is left out;
* ``clip_i_pairwise``: the mean similarity between every two frames with the character;
* ``clip_i_crop``: CLIP-I on the crop the identity check uses (the largest face), over the
  frames where one was found (``crop_found_rate``);
* ``face_similarity``: 1 − the dlib face-embedding distance to the reference face, where both
  faces are found (``face_found_rate``);
* ``clip_t``: each frame against its shot's description, not the prompt with its style words;
* ``copy_paste_rate``: frames whose whole-frame similarity to the reference is above the copy
  ceiling (the face crop of a re-framed copy is the reference's own face, so only the whole
  frame tells a copy from a new picture of the same person); ``copy_gap``: ``clip_i`` − ``clip_i_pairwise`` (ViStoryBench's point: identity
  bought by copying the reference shows as a high similarity to it, not between frames);
* ``cast_consistency``: for each supporting cast member in two or more frames, the whole-frame
  CLIP-I between those frames (there is no detector for them to crop by);
* cost, from the board's own report: ``rerolls_per_frame``, ``accepted_rate``, ``seconds_per_board``.

Every CLIP and face call is batched over the board. Faces are looked for only in the frames
whose faces count (the character's, and frame 1 when it is the reference), and not at all where
the board's own face check, with the same face models, already recorded what it found: dlib
costs the same per frame at any render speed (bench/eval_tiny.py).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from engine.evaluation.boards import EvalBoard
from engine.identity.faces import FaceRecord
from engine.identity.validate import ClipScorer, FaceCrop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Seen:
    """What the metric models make of some pictures: whole-picture and face-crop CLIP embeddings
    (unit length), whether a face crop was found, and the face embeddings."""

    whole: Any
    crop: Any
    found: list[bool]
    faces: list[Any]
    source: list[str]  # who found each face: the board's own face check ("check") or the eval


@dataclass(frozen=True)
class _Reference:
    whole: Any
    crop: Any
    face: Any  # the mean face embedding; None without a face


class BoardScorer:
    """Scores boards with one CLIP model (and face models), loaded once by the caller. A set of
    reference pictures is embedded once, however many boards share it."""

    def __init__(self, clip: ClipScorer, *, copy_ceiling: float) -> None:
        self.clip = clip
        self.copy_ceiling = copy_ceiling
        self.faces = clip.faces
        self._references: dict[tuple[Path, ...], _Reference] = {}

    def score(self, board: EvalBoard) -> dict:
        """``{"frames": [...], "metrics": {...}}`` for one board, every number a float or None."""
        looked = [frame.hero or (i == 0 and not board.references) for i, frame in enumerate(board.frames)]
        seen = self._see([_rgb(frame.path) for frame in board.frames], [frame.face for frame in board.frames], looked)
        # without reference pictures frame 1 is the reference: what was just made of it serves
        ref = self._reference(board.references) if board.references else _Reference(
            seen.whole[0], seen.crop[0], seen.faces[0])
        texts = self.clip.embed_texts([frame.text or " " for frame in board.frames])
        scored = [i for i, frame in enumerate(board.frames) if frame.hero and (board.references or i > 0)]
        rows = []
        for i, frame in enumerate(board.frames):
            clip_i = _dot(seen.whole[i], ref.whole)
            faced = looked[i] and self.faces is not None  # the face models looked at this frame
            rows.append({"index": frame.index, "file": str(frame.path), "hero": frame.hero, "scored": i in scored,
                         "clip_i": clip_i, "clip_i_crop": _dot(seen.crop[i], ref.crop) if seen.found[i] else None,
                         "crop_found": seen.found[i] if looked[i] else None,
                         "face_found": seen.faces[i] is not None if faced else None,
                         "face_from": seen.source[i] if faced else None,
                         "face_similarity": self._face_similarity(seen.faces[i], ref.face),
                         "clip_t": _dot(seen.whole[i], texts[i]), "copy": clip_i > self.copy_ceiling})
        return {"frames": rows, "metrics": self._metrics(board, rows, scored, seen.whole)}

    def _see(self, images: list[Image.Image], known: Sequence[FaceRecord | None] = (),
             looked: Sequence[bool] = ()) -> _Seen:
        """One batch per model for all of ``images``; faces only where ``looked`` (default: all),
        from ``known`` records where they fit. A frame not looked at keeps its whole picture as
        its crop, with no crop or face found."""
        looked = list(looked) or [True] * len(images)
        at = [i for i, wanted in enumerate(looked) if wanted]
        crops = self.clip.face_crops([images[i] for i in at], [known[i] for i in at] if known else ())
        by_index = dict(zip(at, crops, strict=True))
        crops = [by_index.get(i, FaceCrop(image, False, None, False)) for i, image in enumerate(images)]
        return _Seen(whole=self.clip.embed_images(images), crop=self.clip.embed_images([c.crop for c in crops]),
                     found=[c.found for c in crops], faces=[c.face for c in crops],
                     source=["check" if c.reused else "eval" for c in crops])

    def _reference(self, paths: tuple[Path, ...]) -> _Reference:
        if paths not in self._references:
            seen = self._see([_rgb(path) for path in paths])
            self._references[paths] = _Reference(_mean_unit(seen.whole), _mean_unit(seen.crop),
                                                 _mean_face(seen.faces))
        return self._references[paths]

    def _face_similarity(self, face: Any, ref_face: Any) -> float | None:
        if face is None or ref_face is None or self.faces is None:
            return None
        return round(1.0 - float(self.faces.distance(face, ref_face)), 4)

    def _metrics(self, board: EvalBoard, rows: list[dict], scored: list[int], frames_emb: Any) -> dict:
        hero = [i for i, frame in enumerate(board.frames) if frame.hero]
        clip_i = _mean([rows[i]["clip_i"] for i in scored])
        pairwise = _mean([_dot(frames_emb[a], frames_emb[b]) for a, b in itertools.combinations(hero, 2)])
        return {
            "clip_i": clip_i,
            "clip_i_pairwise": pairwise,
            "clip_i_crop": _mean([rows[i]["clip_i_crop"] for i in scored]),
            "crop_found_rate": _share([rows[i]["crop_found"] for i in hero]),
            "face_similarity": _mean([rows[i]["face_similarity"] for i in scored]),
            "face_found_rate": _share([rows[i]["face_found"] for i in hero]) if self.faces is not None else None,
            "clip_t": _mean([row["clip_t"] for row in rows]),
            "copy_paste_rate": _share([rows[i]["copy"] for i in scored]),
            "copy_gap": round(clip_i - pairwise, 4) if clip_i is not None and pairwise is not None else None,
            "cast_consistency": self._cast_consistency(board, frames_emb),
            "rerolls_per_frame": _mean(list(board.rerolls)) if board.rerolls else None,
            "accepted_rate": _share(list(board.accepted)) if board.accepted else None,
            "seconds_per_board": round(board.seconds, 4) if board.seconds is not None else None,
        }

    @staticmethod
    def _cast_consistency(board: EvalBoard, frames_emb: Any) -> float | None:
        per_member = []
        for member in board.supporting_cast:
            shown = [i for i, frame in enumerate(board.frames) if member in frame.cast_ids]
            similarity = _mean([_dot(frames_emb[a], frames_emb[b]) for a, b in itertools.combinations(shown, 2)])
            if similarity is not None:
                per_member.append(similarity)
        return _mean(per_member)


def _rgb(path: Any) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _mean_unit(embeddings: Any) -> Any:
    mean = embeddings.mean(dim=0)
    return mean / mean.norm().clamp_min(1e-12)


def _mean_face(faces: Sequence[Any]) -> Any:
    from engine.identity.faces import mean_embedding

    return mean_embedding(list(faces))


def _dot(a: Any, b: Any) -> float:
    return round(float((a * b).sum()), 4)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 4) if present else None


def _share(flags: Sequence[bool]) -> float | None:
    return round(sum(bool(f) for f in flags) / len(flags), 4) if flags else None
