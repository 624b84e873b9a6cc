"""A finished board's take-away files, the PDF shot sheet and the MP4 animatic, made on demand.

A file is built once, on a worker thread (the MP4's encoding is seconds of CPU), and kept in
the board's folder beside report.json, so a second press, on any platform, sends the same
file again without building it. Two presses at once build it once: the second waits for the
first. A build that fails leaves nothing behind, and the board itself is never touched; the
reason reaches the user as ``err_export_failed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from bot.errors import BadRequest
from engine.board_files import write_bytes
from engine.exports.board import ExportError, load_export_board
from engine.settings import ExportSettings

log = logging.getLogger(__name__)

ExportKind = Literal["pdf", "mp4"]
EXPORT_KINDS: tuple[str, ...] = get_args(ExportKind)
FILE_NAMES: dict[str, str] = {"pdf": "storyboard.pdf", "mp4": "animatic.mp4"}
MIME_TYPES: dict[str, str] = {"pdf": "application/pdf", "mp4": "video/mp4"}


@dataclass(frozen=True)
class ExportFile:
    kind: str
    path: Path
    built: bool  # made by this call; False: the cached file
    size: int  # bytes
    width: int | None = None  # the video's, for the platforms' players
    height: int | None = None
    seconds: float | None = None

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.kind]


class BoardExports:
    """Builds and caches export files; one instance per process, shared by every adapter."""

    def __init__(self, settings: ExportSettings) -> None:
        self.settings = settings
        # one lock per file being made or waited for; a lock nobody holds any more drops out
        self._locks: weakref.WeakValueDictionary[Path, asyncio.Lock] = weakref.WeakValueDictionary()

    async def get(self, folder: Path, kind: str, *, job_id: int) -> ExportFile:
        """The ``kind`` file of the board in ``folder``: the cached one, else built now."""
        if kind not in EXPORT_KINDS:
            raise ValueError(f"export kind must be one of {EXPORT_KINDS}, got {kind!r}")
        path = folder / FILE_NAMES[kind]
        lock = self._locks.setdefault(path, asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(self._cached_or_built, folder, kind, path, job_id)  # file work: off the loop

    def _cached_or_built(self, folder: Path, kind: str, path: Path, job_id: int) -> ExportFile:
        if path.is_file():
            return ExportFile(kind, path, built=False, size=path.stat().st_size, **_video_facts(path, kind))
        return self._build(folder, kind, path, job_id)

    def _build(self, folder: Path, kind: str, path: Path, job_id: int) -> ExportFile:
        # fpdf2, and PyAV (FFmpeg's libraries) with OpenCV, are imported here: each loads only where its file is made
        started = time.perf_counter()
        try:
            board = load_export_board(folder)
            if kind == "pdf":
                from engine.exports.pdf import build_pdf

                data = build_pdf(board, self.settings)
                made = ExportFile(kind, path, built=True, size=len(data))
            else:
                from engine.exports.animatic import build_animatic

                animatic = build_animatic(board, self.settings)
                data = animatic.data
                made = ExportFile(kind, path, built=True, size=len(data), width=animatic.width,
                                  height=animatic.height, seconds=animatic.seconds)
            write_bytes(path, data)
        except ExportError as exc:
            log.warning("job %d: no %s: %s", job_id, kind, exc)
            raise BadRequest("err_export_failed", kind=kind.upper(), job=job_id, reason=str(exc)) from exc
        log.info("job %d: %s built in %.2fs (%d bytes)", job_id, kind, time.perf_counter() - started, made.size)
        return made


def _video_facts(path: Path, kind: str) -> dict[str, float | int]:
    """A cached MP4's size and length, read from its header (cheap), for the players' previews."""
    if kind != "mp4":
        return {}
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base) if stream.duration else None
        return {"width": stream.width, "height": stream.height, "seconds": seconds}
