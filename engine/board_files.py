"""A board on disk: its records (``FrameResult``, ``Storyboard``), the files they are kept in, and
the one way to read them back.

A finished board's folder holds ``frame_NN.png`` (and ``pose_NN.png`` in ref-guided mode),
``grid.<ext>`` and ``report.json``; an unfinished one holds checkpoints: ``plan.json`` and one
``frame_NN.json`` per frame kept so far. Every file is written atomically (a ``.tmp`` renamed).
``load_saved_board`` reads either kind; a GPU worker's result goes through ``frames_from_report``
too, after bot/render/wire.py has checked it against what the job asked for. The bot only stores
and posts those files, so their pixels are read only if something asks for a frame's ``image``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from PIL import Image

from engine.errors import CheckpointError
from engine.identity.faces import FaceRecord
from engine.identity.validate import Attempt
from engine.rendering.grid import EncodedGrid
from engine.rendering.prompts import Dropped, Prompt
from engine.shots import Shot, ShotList

REPORT_FILE = "report.json"
PLAN_FILE = "plan.json"
CHARACTER_FILE = "character.png"  # the user's character picture, as the board was drawn from it


@dataclass(frozen=True)
class FrameResult:
    index: int
    shot: Shot
    prompt: Prompt
    attempts: tuple[Attempt, ...]
    chosen: int  # index into attempts of the attempt kept
    accepted: bool  # the kept attempt passed validation
    picture: Image.Image | Path = field(repr=False, compare=False)  # the pixels, or the file that holds them
    reused: bool = False
    pose_template: str | None = None  # ref-guided frames: the OpenPose template that steered them
    pose_source: str | None = None  # "template", or "detected: <picture>" with pose_source = "detect"

    @cached_property
    def image(self) -> Image.Image:
        """The frame's pixels, read from its file the first time they are needed."""
        if isinstance(self.picture, Image.Image):
            return self.picture
        return _read_rgb(self.picture)

    @property
    def seed(self) -> int:
        return self.attempts[self.chosen].seed

    @property
    def file_name(self) -> str:
        return f"frame_{self.index:02d}.png"

    @property
    def pose_file_name(self) -> str:
        return f"pose_{self.index:02d}.png"

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "shot": self.shot.model_dump(mode="json"),
            "prompt": self.prompt.positive,
            "prompt_2": self.prompt.positive_2,
            "negative_prompt": self.prompt.negative,
            "dropped": [cut.to_json() for cut in self.prompt.dropped],
            "seed": self.seed,
            "attempts": [a.to_json() for a in self.attempts],
            "chosen_attempt": self.chosen,
            "accepted": self.accepted,
            "file": self.file_name,
            "reused": self.reused,
            "pose_template": self.pose_template,
            "pose_file": self.pose_file_name if self.pose_template else None,
            "pose_source": self.pose_source,
            "face": self.face.to_json() if self.face is not None else None,
        }

    @property
    def face(self) -> FaceRecord | None:
        """What the face check found in the kept picture (None: no face check ran)."""
        return self.attempts[self.chosen].face

    @classmethod
    def from_json(cls, data: dict, folder: Path, *, read_pixels: bool = True) -> FrameResult:
        """A frame from its record. ``read_pixels``: decode the picture now (a resumed board redraws
        its grid from them, and a bad checkpoint must fail here); else on first use of ``image``."""
        path = folder / data["file"]
        return cls(
            index=data["index"],
            shot=Shot.model_validate(data["shot"]),
            prompt=Prompt(
                positive=data["prompt"], negative=data["negative_prompt"], positive_2=data.get("prompt_2", ""),
                dropped=tuple(Dropped(**cut) for cut in data.get("dropped", ())),
            ),
            attempts=_attempts(data),
            chosen=data.get("chosen_attempt", 0),
            accepted=data["accepted"],
            picture=_read_rgb(path) if read_pixels else path,
            pose_template=data.get("pose_template"),
            pose_source=data.get("pose_source"),
        )


def _attempts(data: dict) -> tuple[Attempt, ...]:
    """A frame record's attempts, the kept one with its face record (report.json keeps only that one)."""
    chosen = data.get("chosen_attempt", 0)
    face = FaceRecord.from_json(data["face"]) if data.get("face") else None
    return tuple(
        Attempt(seed=a["seed"], scores=dict(a["scores"]), verdict=a.get("verdict", "unchecked"),
                face=face if i == chosen else None)
        for i, a in enumerate(data["attempts"])
    )


@dataclass(frozen=True)
class Storyboard:
    plan: ShotList
    frames: tuple[FrameResult, ...]
    grid: EncodedGrid
    report: dict
    out_dir: Path

    @property
    def grid_path(self) -> Path:
        return self.out_dir / f"grid.{self.grid.extension}"

    @property
    def report_path(self) -> Path:
        return self.out_dir / REPORT_FILE


@dataclass(frozen=True)
class SavedBoard:
    """What a folder holds from an earlier run: a plan and the frames finished so far."""

    plan: ShotList | None
    frames: dict[int, FrameResult]


def plan_from_report(report: dict) -> ShotList:
    """Rebuild the exact plan a report.json was made from."""
    shots = [Shot.model_validate(frame["shot"]) for frame in report["frames"]]
    return ShotList(title=report["title"], language=report["language"], cast=report.get("cast", ()),
                    places=report.get("places", ()), shots=tuple(shots))


def frames_from_report(report: dict, folder: Path, *, read_pixels: bool = True) -> tuple[FrameResult, ...]:
    """A finished board's frames, as report.json records them, with their pictures from ``folder``."""
    return tuple(FrameResult.from_json(frame, folder, read_pixels=read_pixels) for frame in report["frames"])


def _read_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:
        raise CheckpointError(f"frame image {path} is missing or unreadable: {exc}") from exc


def load_saved_board(folder: Path) -> SavedBoard:
    """Read a finished board (report.json) or the checkpoints of an unfinished one."""
    report_path = folder / REPORT_FILE
    if report_path.exists():
        report = read_json(report_path)
        return SavedBoard(plan=plan_from_report(report), frames={f.index: f for f in frames_from_report(report, folder)})
    plan_path = folder / PLAN_FILE
    plan = ShotList.model_validate(read_json(plan_path)) if plan_path.exists() else None
    frames: dict[int, FrameResult] = {}
    for meta_path in sorted(folder.glob("frame_*.json")):
        frame = FrameResult.from_json(read_json(meta_path), folder)
        frames[frame.index] = frame
    return SavedBoard(plan=plan, frames=frames)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is missing or unreadable: {exc}") from exc


def write_checkpoint(frame: FrameResult, folder: Path) -> None:
    """A finished frame's picture and record: what a resumed run keeps."""
    frame.image.save(folder / frame.file_name)
    write_json(folder / f"frame_{frame.index:02d}.json", frame.to_json())


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a crash never leaves half a file behind."""
    write_bytes(path, json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8"))


def remove_checkpoints(folder: Path) -> None:
    for path in [folder / PLAN_FILE, *folder.glob("frame_*.json")]:
        path.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Write atomically, like ``write_json``: a temporary file of its own beside ``path`` (two
    writers of one file never share it), renamed over it."""
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
