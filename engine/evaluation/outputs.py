"""The files an eval writes: eval.json (every number), eval.md (the summary table a README can
show) and a contact sheet (every board's frames in a row, each with its scores, to look at).

The summary these take is ``engine.evaluation.stats.summarise_boards``'s: ``{"system/mode":
{metric: {"mean", "std", "ci95", "n"}}}``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from engine.board_files import write_bytes
from engine.evaluation.stats import METRICS
from engine.images import png_bytes
from engine.rendering.fonts import load_font, wrap_text

log = logging.getLogger(__name__)

EMPTY_CELL = "–"  # a metric no board of the group has

# one sentence per metric, for the legend under the table
METRIC_LEGEND: dict[str, str] = {
    "clip_i": "CLIP image similarity of each frame to the character reference (CLIP-I).",
    "clip_i_pairwise": "CLIP image similarity between the frames of a board, every pair.",
    "clip_i_crop": "CLIP-I on the character's crop instead of the whole frame.",
    "crop_found_rate": "share of frames in which the character's crop was found.",
    "face_similarity": "face-embedding similarity of each frame's face to the reference face.",
    "face_found_rate": "share of frames in which a face was found.",
    "clip_t": "CLIP similarity of each frame to the text it was drawn from (CLIP-T).",
    "copy_paste_rate": "share of frames above the copy ceiling: too close to the reference to be a new picture.",
    "copy_gap": "mean similarity to the reference minus mean similarity between frames.",
    "cast_consistency": "CLIP-I of the supporting cast across the frames they appear in.",
    "rerolls_per_frame": "extra renders per frame before one was kept.",
    "accepted_rate": "share of frames that passed the identity check.",
    "seconds_per_board": "wall-clock seconds to draw one board.",
}

# contact sheet caps: 13 cells of 168 px by 200 rows of ~190 px keeps a sheet near 2,200 × 38,000 px
MAX_SHEET_FRAMES = 12  # frames drawn per row; the rest are counted in the label
MAX_SHEET_ROWS = 200  # boards drawn; the rest are left out with a warning

PAPER: tuple[int, int, int] = (250, 248, 242)
INK: tuple[int, int, int] = (40, 36, 52)
MISSING: tuple[int, int, int] = (200, 196, 190)
_PAD = 4  # around every cell, so neighbouring thumbnails never touch


def write_eval_json(path: Path, data: dict) -> None:
    """Write ``data`` as UTF-8 JSON, atomically; a NaN or infinity is refused (it is a metric bug)."""
    try:
        text = json.dumps(data, ensure_ascii=False, indent=2, allow_nan=False)
    except ValueError as exc:
        where = _first_non_finite(data)
        raise ValueError(f"eval results hold a NaN or infinity at {where or '?'}: a metric bug, not written") from exc
    _write_atomically(path, (text + "\n").encode("utf-8"))


def markdown_table(summary: dict[str, dict[str, dict]]) -> str:
    """The summary as GitHub markdown: mean ± std per group and metric, the 95% intervals, a legend."""
    header = ["system/mode", *METRICS]
    means = [[_escape(group), *(_mean_cell(metrics.get(m)) for m in METRICS)] for group, metrics in summary.items()]
    intervals = [[_escape(group), *(_interval_cell(metrics.get(m)) for m in METRICS)]
                 for group, metrics in summary.items()]
    parts = [
        "Mean ± sample standard deviation over boards.",
        "",
        _table(header, means),
        "",
        "95% bootstrap confidence interval of the mean, and n, the boards that have the metric.",
        "",
        _table(header, intervals),
        "",
        *(f"- `{metric}`: {METRIC_LEGEND[metric]}" for metric in METRICS),
    ]
    return "\n".join(parts) + "\n"


def write_eval_md(path: Path, summary: dict[str, dict[str, dict]], *, title: str, notes: Sequence[str] = ()) -> None:
    """eval.md: the title, the notes as bullets, and the summary table; written atomically."""
    lines = [f"# {title}", ""]
    if notes:
        lines += [*(f"- {note}" for note in notes), ""]
    text = "\n".join(lines) + markdown_table(summary)
    _write_atomically(path, text.encode("utf-8"))


@dataclass(frozen=True)
class SheetRow:
    """One board on the contact sheet: its label, its frames, and one short score text per frame."""

    label: str  # e.g. "ours/simple · story en_01 · seed 3"
    frames: Sequence[Path]
    scores: Sequence[str] = ()  # e.g. "I .91 C .88 F .72"; empty: no scores drawn

    def __post_init__(self) -> None:
        # tuples, so a frozen row cannot change under the sheet being drawn from it
        object.__setattr__(self, "frames", tuple(Path(p) for p in self.frames))
        object.__setattr__(self, "scores", tuple(self.scores))
        if self.scores and len(self.scores) != len(self.frames):
            raise ValueError(f"{self.label}: {len(self.scores)} score texts for {len(self.frames)} frames")


def contact_sheet(rows: Sequence[SheetRow], path: Path, *, thumb: int = 160) -> Path:
    """Draw every board as a row (label cell, then its frames with their scores under them) into a PNG.

    Each frame is fitted in a ``thumb`` × ``thumb`` box, aspect kept. Rows are as wide as the
    widest; at most MAX_SHEET_FRAMES frames per row and MAX_SHEET_ROWS rows are drawn.
    """
    if not rows:
        raise ValueError("a contact sheet needs at least one board")
    if thumb < 16:
        raise ValueError(f"thumb must be at least 16 pixels, got {thumb}")
    rows = _capped_rows(rows)
    font = load_font(_font_size(thumb))
    cell_w, row_h = thumb + 2 * _PAD, _row_height(thumb, font)
    columns = 1 + min(MAX_SHEET_FRAMES, max(len(row.frames) for row in rows))
    sheet = Image.new("RGB", (columns * cell_w, len(rows) * row_h), PAPER)
    draw = ImageDraw.Draw(sheet)
    for index, row in enumerate(rows):
        _draw_row(sheet, draw, row, top=index * row_h, thumb=thumb, font=font)
    _save_png(sheet, path)
    log.info("contact sheet of %d boards written to %s", len(rows), path)
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, data)


def _first_non_finite(value: object, where: str = "") -> str | None:
    """The path (``summary.ours/simple.clip_i.mean``) of the first NaN or infinity in ``value``, for the error."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "the top level"
    if isinstance(value, dict):
        children = ((f"{where}.{key}" if where else str(key), child) for key, child in value.items())
    elif isinstance(value, (list, tuple)):
        children = ((f"{where}[{i}]", child) for i, child in enumerate(value))
    else:
        return None
    for child_where, child in children:
        found = _first_non_finite(child, child_where)
        if found:
            return found
    return None


def _mean_cell(stats: dict | None) -> str:
    if not stats or not stats.get("n") or stats.get("mean") is None:
        return EMPTY_CELL
    if stats.get("std") is None:
        return f"{stats['mean']:.3f}"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _interval_cell(stats: dict | None) -> str:
    if not stats or not stats.get("n") or not stats.get("ci95"):
        return EMPTY_CELL
    lo, hi = stats["ci95"]
    return f"[{lo:.3f}, {hi:.3f}] n={stats['n']}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [_table_line(header), _table_line(["---"] * len(header)), *(_table_line(row) for row in rows)]
    return "\n".join(lines)


def _table_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _escape(text: str) -> str:
    # a "|" in a system's name would otherwise split the cell
    return text.replace("|", "\\|")


def _font_size(thumb: int) -> int:
    return max(10, thumb // 12)


def _line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent


def _row_height(thumb: int, font: ImageFont.FreeTypeFont) -> int:
    """A thumbnail, its one line of scores, and the padding around both."""
    return thumb + _line_height(font) + 3 * _PAD


def _capped_rows(rows: Sequence[SheetRow]) -> list[SheetRow]:
    if len(rows) > MAX_SHEET_ROWS:
        log.warning("contact sheet: %d boards, only the first %d are drawn", len(rows), MAX_SHEET_ROWS)
    return list(rows[:MAX_SHEET_ROWS])


def _draw_row(sheet: Image.Image, draw: ImageDraw.ImageDraw, row: SheetRow, *, top: int, thumb: int,
              font: ImageFont.FreeTypeFont) -> None:
    cell_w = thumb + 2 * _PAD
    _draw_label(draw, _label_text(row), left=_PAD, top=top + _PAD, thumb=thumb, font=font)
    for column, frame in enumerate(row.frames[:MAX_SHEET_FRAMES], start=1):
        left = column * cell_w + _PAD
        _paste_thumbnail(sheet, frame, left=left, top=top + _PAD, thumb=thumb)
        score = row.scores[column - 1] if row.scores else ""
        if score:
            line = wrap_text(score, font, thumb, max_lines=1)
            draw.text((left, top + thumb + 2 * _PAD), line[0] if line else "", font=font, fill=INK)


def _label_text(row: SheetRow) -> str:
    hidden = len(row.frames) - MAX_SHEET_FRAMES
    return f"{row.label} (+{hidden} frames not shown)" if hidden > 0 else row.label


def _draw_label(draw: ImageDraw.ImageDraw, text: str, *, left: int, top: int, thumb: int,
                font: ImageFont.FreeTypeFont) -> None:
    """The label wrapped into the label cell, as many lines as a thumbnail's height holds."""
    line_h = _line_height(font)
    for number, line in enumerate(wrap_text(text, font, thumb, max_lines=max(1, thumb // line_h))):
        draw.text((left, top + number * line_h), line, font=font, fill=INK)


def _paste_thumbnail(sheet: Image.Image, frame: Path, *, left: int, top: int, thumb: int) -> None:
    """The frame fitted in the thumb box, centred; a frame that cannot be read is drawn as a grey box,
    so one lost file does not cost the sheet of a whole eval run."""
    try:
        with Image.open(frame) as image:
            fitted = ImageOps.contain(image.convert("RGB"), (thumb, thumb), Image.Resampling.LANCZOS)
    except (OSError, ValueError) as exc:
        log.warning("contact sheet: cannot read %s (%s); drawn as a grey box", frame, exc)
        fitted = Image.new("RGB", (thumb, thumb), MISSING)
    sheet.paste(fitted, (left + (thumb - fitted.width) // 2, top + (thumb - fitted.height) // 2))


def _save_png(sheet: Image.Image, path: Path) -> None:
    _write_atomically(path, png_bytes(sheet))
