"""An eval, start to end: render boards (or take existing ones), score them, write the results.

``render_boards`` draws every story × mode × seed through the real ``StoryEngine``, into
``<out>/boards/<story>/<mode>/seed-<n>/``; each report.json names its story (``eval_story``)
so the boards can be scored again later with ``--boards``. ``evaluate`` scores boards and
writes ``eval.json``, ``eval.md`` and ``contact_sheet.png`` into the output folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.evaluation.boards import EvalBoard, load_our_board
from engine.evaluation.metrics import BoardScorer
from engine.evaluation.outputs import SheetRow, contact_sheet, write_eval_json, write_eval_md
from engine.evaluation.stats import summarise_boards
from engine.limits import Mode
from engine.storyboard import BoardRequest, StoryEngine

log = logging.getLogger(__name__)

EVAL_JSON, EVAL_MD, CONTACT_SHEET = "eval.json", "eval.md", "contact_sheet.png"
STORY_SUFFIX = ".txt"


@dataclass(frozen=True)
class EvalStory:
    story_id: str
    text: str


def read_stories(folder: Path) -> list[EvalStory]:
    """Every ``*.txt`` under ``folder``, named by its file name without the suffix."""
    files = sorted(folder.glob(f"*{STORY_SUFFIX}"))
    if not files:
        raise FileNotFoundError(f"no {STORY_SUFFIX} stories in {folder}")
    return [EvalStory(path.stem, path.read_text(encoding="utf-8").strip()) for path in files]


def render_boards(engine: StoryEngine, stories: Sequence[EvalStory], modes: Sequence[Mode], seeds: Sequence[int],
                  out_dir: Path, *, frames: int | None = None, system: str = "ours",
                  references: Sequence[Path] = ()) -> list[EvalBoard]:
    """Each story in each mode with each seed, drawn by ``engine``; the boards, ready to score."""
    boards = []
    for story in stories:
        for mode in modes:
            for seed in seeds:
                folder = out_dir / "boards" / story.story_id / mode / f"seed-{seed}"
                started = time.perf_counter()
                engine.run(BoardRequest(story=story.text, mode=mode, frames=frames, seed=seed,
                                        report_extra={"eval_story": story.story_id}), folder)
                log.info("eval: %s %s seed %d drawn in %.1fs", story.story_id, mode, seed,
                         time.perf_counter() - started)
                boards.append(load_our_board(folder, references=references, system=system, story_id=story.story_id))
    return boards


def evaluate(scorer: BoardScorer, boards: Sequence[EvalBoard], out_dir: Path, *, clip_model: str,
             notes: Sequence[str] = ()) -> dict:
    """Score ``boards`` and write eval.json, eval.md and the contact sheet; the eval.json data."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scored, rows, started = [], [], time.perf_counter()
    for board in boards:
        result = scorer.score(board)
        scored.append({"system": board.system, "mode": board.mode, "story_id": board.story_id, "seed": board.seed,
                       "source": str(board.source), "references": [str(p) for p in board.references],
                       **result})
        rows.append(_sheet_row(board, result["frames"]))
    seconds = time.perf_counter() - started
    summary = summarise_boards(scored)
    data = {"clip_model": clip_model, "copy_ceiling": scorer.copy_ceiling, "faces": scorer.faces is not None,
            "face_model": scorer.faces.signature() if scorer.faces is not None else None,
            # frames whose face the board's own check had found, with these face models, in these pixels
            "faces_reused": sum(frame["face_from"] == "check" for board in scored for frame in board["frames"]),
            "notes": list(notes), "scoring_seconds": round(seconds, 3),
            "scored_frames": sum(len(b.frames) for b in boards), "boards": scored, "summary": summary}
    write_eval_json(out_dir / EVAL_JSON, data)
    write_eval_md(out_dir / EVAL_MD, summary, title="Storyboard eval", notes=list(notes) + [f"metric CLIP: {clip_model}"])
    contact_sheet(rows, out_dir / CONTACT_SHEET)
    log.info("eval: %d boards scored in %.1fs -> %s", len(boards), seconds, out_dir)
    return data


def _sheet_row(board: EvalBoard, frames: Sequence[dict]) -> SheetRow:
    label = f"{board.system}/{board.mode} · {board.story_id}" + (f" · seed {board.seed}" if board.seed is not None else "")
    return SheetRow(label=label, frames=[frame.path for frame in board.frames],
                    scores=[_frame_scores(frame) for frame in frames])


def _frame_scores(frame: dict) -> str:
    """Under a thumbnail: I = CLIP-I, C = crop CLIP-I, F = face similarity, T = CLIP-T."""
    parts = [f"{name} {frame[key]:.2f}" for name, key in (("I", "clip_i"), ("C", "clip_i_crop"),
                                                          ("F", "face_similarity"), ("T", "clip_t"))
             if frame.get(key) is not None and (frame["scored"] or key == "clip_t")]
    return " ".join(parts) + (" COPY" if frame["copy"] and frame["scored"] else "")
