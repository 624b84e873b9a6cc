"""What a claimed job asks the engine for, rebuilt from what is on disk.

A frame redo keeps every frame of its parent board but the one redrawn; a job resumed after a
crash keeps its own plan and the frames it had finished (read with ``engine.board_files``).
A job with the user's character picture reads it from where ``bot.pictures`` stored it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bot.pictures import read_picture
from bot.store.records import Job
from engine.board_files import load_saved_board
from engine.storyboard import BoardRequest

log = logging.getLogger(__name__)


def board_request(job: Job, out_dir: Path, parent_dir: Path | None) -> BoardRequest:
    """The request for ``job``: reads files, so it runs off the event loop."""
    plan, keep = None, {}
    if parent_dir is not None and job.kind == "regen_frame":
        parent = load_saved_board(parent_dir)
        plan = parent.plan
        keep = {i: f for i, f in parent.frames.items() if i != job.redo_frame}
    if job.attempts > 1 and out_dir.is_dir():  # resuming after a crash: reuse finished frames
        saved = load_saved_board(out_dir)
        if saved.plan is not None:
            plan = saved.plan
            keep = {**keep, **saved.frames}
            log.info("job %d: resuming with %d finished frame(s)", job.id, len(saved.frames))
    frames = len(plan.shots) if plan is not None else job.frames
    picture = read_picture(Path(job.character_image)) if job.character_image else None
    return BoardRequest(story=job.story, mode=job.mode, frames=frames, seed=job.seed, plan=plan, keep=keep,
                        character_image=picture, lora=job.lora, aspect=job.aspect)
