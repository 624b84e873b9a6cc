"""A finished board as the export files read it: its title block and its panels, from the
board folder's report.json and frame files.

The PDF shot sheet (``engine.exports.pdf``) and the MP4 animatic (``engine.exports.animatic``)
both start here, so they agree on what a panel says and in which order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from engine.board_files import REPORT_FILE, plan_from_report
from engine.errors import EngineError
from engine.limits import NATIVE_SIZES


class ExportError(EngineError):
    """An export that cannot be made (a missing codec, a file too large even at the lowest
    quality, a board folder that is not a finished board); the message says which. The board
    itself is never touched."""


@dataclass(frozen=True)
class ExportPanel:
    number: int  # 1-based, in reading order
    image: Path
    framing: str  # "close-up", "medium", "wide", ...
    camera_angle: str
    pose: str
    description: str  # the English line the frame was drawn from
    caption: str  # the story's own sentence, in its language
    dialogue: str  # 'Name: "…"' when the panel has a spoken line, else ""
    seed: int


@dataclass(frozen=True)
class ExportBoard:
    folder: Path
    title: str
    language: str
    date: str  # YYYY-MM-DD (UTC) the board was drawn
    mode: str
    seed: int
    planner: str
    renderer: str
    aspect: str  # "16:9", ...; for a board from before aspects, the frames' own "WxH"
    width: int  # a frame's size in pixels
    height: int
    panels: tuple[ExportPanel, ...]

    @property
    def wide(self) -> bool:
        """Wider than 4:3: laid out two to a row, on a landscape page."""
        return self.width / self.height > 1.4


def load_export_board(folder: Path) -> ExportBoard:
    """The finished board in ``folder``; ``ExportError`` when it is not one."""
    report_path = folder / REPORT_FILE
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        plan = plan_from_report(report)
        panels = tuple(_panel(frame, shot, plan.spoken_line(shot), folder)
                       for frame, shot in zip(report["frames"], plan.shots, strict=True))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{folder} is not a finished board ({type(exc).__name__}: {exc})") from exc
    missing = [str(p.image) for p in panels if not p.image.is_file()]
    if missing:
        raise ExportError(f"{folder}: frame files missing: {', '.join(missing)}")
    with Image.open(panels[0].image) as first:
        width, height = first.size
    return ExportBoard(
        folder=folder, title=report["title"], language=report["language"], date=_date(report, report_path),
        mode=str(report.get("mode", "?")), seed=int(report.get("seed", 0)), planner=str(report.get("planner", "?")),
        renderer=str(report.get("renderer", "?")), aspect=_aspect(report, width, height),
        width=width, height=height, panels=panels)


def _panel(frame: dict, shot, dialogue: str, folder: Path) -> ExportPanel:
    return ExportPanel(number=shot.index, image=folder / frame["file"], framing=shot.framing,
                       camera_angle=shot.camera_angle, pose=shot.pose, description=shot.description,
                       caption=shot.caption, dialogue=dialogue, seed=int(frame["seed"]))


def _date(report: dict, report_path: Path) -> str:
    created = report.get("created_at")
    if created:
        return str(created)[:10]
    return datetime.fromtimestamp(report_path.stat().st_mtime, tz=UTC).strftime("%Y-%m-%d")


def _aspect(report: dict, width: int, height: int) -> str:
    aspect = report.get("aspect")
    if aspect in NATIVE_SIZES:
        return aspect
    return f"{width}x{height}"
