"""The PDF shot sheet of a finished board: a title block, then every panel with its shot notes.

A director or an artist prints the board or reads it on a tablet, so the sheet is laid out for
paper (A4 or Letter from ``[export] paper``): landscape with two panels to a row for wide
frames, portrait with three otherwise, ``ROWS_PER_PAGE`` rows on every page. The same grid
repeats on every page, so a panel is never split across pages and the page count follows from
the panel count alone. Under each frame: the shot number, framing / camera angle / pose and
seed, the caption in the story's language, the spoken line, and the English description.

The text is real PDF text in the bundled DejaVu fonts (they cover Cyrillic and the Kazakh
letters), so captions can be searched and copied. Frames are embedded as JPEG at no more pixels
than their printed width needs at ``pdf_dpi``; the file must fit ``max_bytes`` (Discord's
attachment limit), so a file above it is rebuilt at lower quality a few times before giving up.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import MethodReturnValue
from PIL import Image

from engine.exports.board import ExportBoard, ExportError, ExportPanel, load_export_board
from engine.rendering.fonts import ELLIPSIS, FONT_DIR
from engine.settings import ExportSettings

log = logging.getLogger(__name__)

CREATOR = "Aldar Kose storyboard bot"
WIDE_COLUMNS = 2  # panels to a row on a wide board's landscape page
COLUMNS = 3  # panels to a row otherwise, on a portrait page
ROWS_PER_PAGE = 2  # on every page, so a page holds columns x ROWS_PER_PAGE panels

# Page geometry, in millimetres (the document's unit).
MARGIN = 10.0
GUTTER = 5.0  # between columns
ROW_GAP = 5.0
TITLE_BLOCK = 24.0  # page 1: the title and the board's facts
HEADER = 8.0  # later pages: the title again
FOOTER = 6.0  # every page: its number
MIN_TEXT = 24.0  # under each frame, at least this much height is kept for its notes
IMAGE_TEXT_GAP = 1.5
MM_PER_INCH = 25.4
MM_PER_PT = MM_PER_INCH / 72
LINE_SPACING = 1.25  # a text line's height, in font sizes

# A panel's notes that do not fit their box are set smaller, down to the last of these scales;
# only then are they cut (with "…"), last lines first, and the description is last on purpose.
TEXT_SCALES = (1.0, 0.85, 0.7)

# (JPEG quality, dpi) caps tried in turn after the settings' own values, while the file is too
# large; each is lowered to the settings where those are lower already.
SMALLER_STEPS = ((70, 150), (55, 120), (40, 100), (30, 72))

_FAMILY = "DejaVu"


@dataclass(frozen=True)
class _Style:
    bold: bool
    size: float  # points
    gray: int  # text colour, 0 (black) to 255

    def scaled(self, scale: float) -> _Style:
        return _Style(self.bold, self.size * scale, self.gray)

    @property
    def line_height(self) -> float:
        return self.size * LINE_SPACING * MM_PER_PT


_TITLE = _Style(bold=True, size=15, gray=0)
_FACTS = _Style(bold=False, size=8, gray=90)
_RUNNING = _Style(bold=False, size=7, gray=110)  # the header and footer lines
_NUMBER = _Style(bold=True, size=8.5, gray=0)
_SHOT = _Style(bold=False, size=7, gray=70)
_CAPTION = _Style(bold=False, size=8, gray=0)
_DIALOGUE = _Style(bold=True, size=7.5, gray=40)
_DESCRIPTION = _Style(bold=False, size=6.5, gray=100)


@dataclass(frozen=True)
class _Layout:
    """Where panels go: the same grid on every page, below the title block or the header."""

    columns: int
    column_width: float
    cell_height: float  # a frame and its notes
    image_width: float
    image_height: float

    @property
    def per_page(self) -> int:
        return self.columns * ROWS_PER_PAGE

    @property
    def text_height(self) -> float:
        return self.cell_height - self.image_height - IMAGE_TEXT_GAP


def columns_for(board: ExportBoard) -> int:
    """Panels to a row: two for a wide board, three otherwise."""
    return WIDE_COLUMNS if board.wide else COLUMNS


def page_count(board: ExportBoard) -> int:
    """Pages of the sheet: ``columns_for(board) * ROWS_PER_PAGE`` panels on each."""
    return math.ceil(len(board.panels) / (columns_for(board) * ROWS_PER_PAGE))


def build_pdf(board: ExportBoard, settings: ExportSettings) -> bytes:
    """The shot sheet of ``board`` as PDF bytes, within ``settings.max_bytes``; ``ExportError``
    when even the lowest quality step is above it."""
    steps = _quality_steps(settings)
    first_size = 0
    for quality, dpi in steps:
        data = _render(board, settings.paper, quality, dpi)
        first_size = first_size or len(data)
        if len(data) <= settings.max_bytes:
            if (quality, dpi) != steps[0]:
                log.warning("PDF of %r was %s at JPEG quality %d, %d dpi (limit %s); used quality %d, %d dpi: %s",
                            board.title, _mb(first_size), steps[0][0], steps[0][1], _mb(settings.max_bytes),
                            quality, dpi, _mb(len(data)))
            return data
    raise ExportError(f"the PDF of {board.title!r} is {_mb(len(data))} even at JPEG quality {quality}, {dpi} dpi "
                      f"({_mb(first_size)} at quality {steps[0][0]}, {steps[0][1]} dpi); "
                      f"the limit is {_mb(settings.max_bytes)}")


def write_pdf(folder: Path, out_path: Path, settings: ExportSettings) -> Path:
    """Write the shot sheet of the finished board in ``folder`` to ``out_path``; return ``out_path``.

    Written to a temporary file renamed into place, so a reader never sees half a PDF."""
    data = build_pdf(load_export_board(folder), settings)
    partial = out_path.with_name(out_path.name + ".tmp")
    partial.write_bytes(data)
    partial.replace(out_path)
    return out_path


def _quality_steps(settings: ExportSettings) -> list[tuple[int, int]]:
    """The settings' (quality, dpi), then each smaller step that actually lowers one of them."""
    steps = [(settings.pdf_jpeg_quality, settings.pdf_dpi)]
    for quality, dpi in SMALLER_STEPS:
        step = (min(quality, settings.pdf_jpeg_quality), min(dpi, settings.pdf_dpi))
        if step not in steps:
            steps.append(step)
    return steps


def _mb(size: int) -> str:
    # In MiB, as Discord counts its "10 MB" attachment limit.
    return f"{size / 2**20:.2f} MB"


def _render(board: ExportBoard, paper: str, quality: int, dpi: int) -> bytes:
    pdf = _new_document(board, paper)
    layout = _layout(pdf, board)
    pages = page_count(board)
    for index, panel in enumerate(board.panels):
        page, slot = divmod(index, layout.per_page)
        if slot == 0:
            _start_page(pdf, board, page + 1, pages)
        row, column = divmod(slot, layout.columns)
        x = MARGIN + column * (layout.column_width + GUTTER) + (layout.column_width - layout.image_width) / 2
        y = MARGIN + (TITLE_BLOCK if page == 0 else HEADER) + row * (layout.cell_height + ROW_GAP)
        _draw_panel(pdf, panel, layout, x, y, quality, dpi)
    return bytes(pdf.output())


def _new_document(board: ExportBoard, paper: str) -> FPDF:
    pdf = FPDF(orientation="landscape" if board.wide else "portrait", unit="mm", format=paper.lower())
    pdf.add_font(_FAMILY, "", FONT_DIR / "DejaVuSans.ttf")
    pdf.add_font(_FAMILY, "B", FONT_DIR / "DejaVuSans-Bold.ttf")
    # Everything is placed at computed positions; an automatic break would split a panel.
    pdf.set_auto_page_break(False)
    pdf.c_margin = 0  # text widths are the measured widths, with no cell padding
    pdf.set_title(board.title)
    pdf.set_creator(CREATOR)
    pdf.set_creation_date(_board_datetime(board))  # the same board gives the same file
    return pdf


def _board_datetime(board: ExportBoard) -> datetime:
    # A malformed date in an old report must not stop the export; a fixed epoch keeps it deterministic.
    try:
        return datetime.strptime(board.date, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)


def _layout(pdf: FPDF, board: ExportBoard) -> _Layout:
    """The grid sized for page 1 (the tallest top block), kept on the pages after it."""
    columns = columns_for(board)
    column_width = (pdf.w - 2 * MARGIN - (columns - 1) * GUTTER) / columns
    grid_height = pdf.h - 2 * MARGIN - TITLE_BLOCK - FOOTER
    cell_height = (grid_height - (ROWS_PER_PAGE - 1) * ROW_GAP) / ROWS_PER_PAGE
    aspect = board.width / board.height
    image_height = min(column_width / aspect, cell_height - MIN_TEXT - IMAGE_TEXT_GAP)
    return _Layout(columns=columns, column_width=column_width, cell_height=cell_height,
                   image_width=image_height * aspect, image_height=image_height)


def _start_page(pdf: FPDF, board: ExportBoard, number: int, pages: int) -> None:
    pdf.add_page()
    width = pdf.w - 2 * MARGIN
    if number == 1:
        _draw_title_block(pdf, board, width)
    else:
        _draw_lines(pdf, _RUNNING, _fit_lines(pdf, _RUNNING, board.title, width, 1), MARGIN, MARGIN, width)
    footer_y = pdf.h - MARGIN - _RUNNING.line_height
    _draw_lines(pdf, _RUNNING, [f"page {number} of {pages}"], MARGIN, footer_y, width, align="C")


def _draw_title_block(pdf: FPDF, board: ExportBoard, width: float) -> None:
    title = _fit_lines(pdf, _TITLE, board.title, width, 2)
    y = _draw_lines(pdf, _TITLE, title, MARGIN, MARGIN, width)
    facts = (f"{board.date} · mode {board.mode} · seed {board.seed} · planner {board.planner} · "
             f"renderer {board.renderer} · {board.aspect} · {len(board.panels)} panels")
    _draw_lines(pdf, _FACTS, _fit_lines(pdf, _FACTS, facts, width, 2), MARGIN, y + 0.5, width)
    pdf.set_draw_color(180)
    pdf.set_line_width(0.2)
    rule_y = MARGIN + TITLE_BLOCK - 2.5
    pdf.line(MARGIN, rule_y, MARGIN + width, rule_y)


def _draw_panel(pdf: FPDF, panel: ExportPanel, layout: _Layout, x: float, y: float, quality: int, dpi: int) -> None:
    jpeg = _frame_jpeg(panel.image, layout.image_width, quality, dpi)
    pdf.image(io.BytesIO(jpeg), x=x, y=y, w=layout.image_width, h=layout.image_height)
    pdf.set_draw_color(160)
    pdf.set_line_width(0.2)
    pdf.rect(x, y, layout.image_width, layout.image_height)
    text_y = y + layout.image_height + IMAGE_TEXT_GAP
    for style, lines in _fit_notes(pdf, panel, layout.image_width, layout.text_height):
        text_y = _draw_lines(pdf, style, lines, x, text_y, layout.image_width)


def _notes(panel: ExportPanel) -> list[tuple[_Style, str]]:
    """A panel's notes, in reading order: the story's words before the English prompt line."""
    notes = [(_NUMBER, f"Shot {panel.number}"),
             (_SHOT, f"{panel.framing} · {panel.camera_angle} · {panel.pose} · seed {panel.seed}"),
             (_CAPTION, panel.caption)]
    if panel.dialogue:
        notes.append((_DIALOGUE, panel.dialogue))
    notes.append((_DESCRIPTION, panel.description))
    return notes


def _fit_notes(pdf: FPDF, panel: ExportPanel, width: float, height: float) -> list[tuple[_Style, list[str]]]:
    """The panel's notes wrapped at the largest scale whose lines fit ``height``; cut at the smallest."""
    for scale in TEXT_SCALES:
        wrapped = [(style.scaled(scale), _wrap(pdf, style.scaled(scale), text, width)) for style, text in _notes(panel)]
        if sum(style.line_height * len(lines) for style, lines in wrapped) <= height:
            return wrapped
    log.warning("shot %d: its notes do not fit under its frame even set small; cut to %.0f mm", panel.number, height)
    return _cut(pdf, wrapped, width, height)


def _cut(pdf: FPDF, wrapped: list[tuple[_Style, list[str]]], width: float,
         height: float) -> list[tuple[_Style, list[str]]]:
    """The lines that fit ``height``, the last of them ending in "…"."""
    kept: list[tuple[_Style, list[str]]] = []
    used = 0.0
    for style, lines in wrapped:
        room = int((height - used) // style.line_height)
        if room < len(lines):
            if room > 0:
                kept.append((style, [*lines[:room - 1], _ellipsise(pdf, style, lines[room - 1], width)]))
            elif kept:
                last_style, last_lines = kept[-1]
                kept[-1] = (last_style, [*last_lines[:-1], _ellipsise(pdf, last_style, last_lines[-1], width)])
            return kept
        kept.append((style, lines))
        used += style.line_height * len(lines)
    return kept


def _fit_lines(pdf: FPDF, style: _Style, text: str, width: float, max_lines: int) -> list[str]:
    """``text`` wrapped to ``width``, at most ``max_lines`` lines, the last ending in "…" if cut."""
    lines = _wrap(pdf, style, text, width)
    if len(lines) <= max_lines:
        return lines
    return [*lines[:max_lines - 1], _ellipsise(pdf, style, lines[max_lines - 1], width)]


def _wrap(pdf: FPDF, style: _Style, text: str, width: float) -> list[str]:
    # fpdf2's own word wrapping, measured with the font that will draw the lines.
    _set_style(pdf, style)
    return pdf.multi_cell(w=width, text=text, dry_run=True, output=MethodReturnValue.LINES)


def _ellipsise(pdf: FPDF, style: _Style, line: str, width: float) -> str:
    _set_style(pdf, style)
    while line and pdf.get_string_width(line + ELLIPSIS) > width:
        line = line[:-1]
    return line.rstrip() + ELLIPSIS


def _draw_lines(pdf: FPDF, style: _Style, lines: list[str], x: float, y: float, width: float,
                align: str = "L") -> float:
    """Draw ``lines`` from ``y`` down; return the y below the last."""
    _set_style(pdf, style)
    for line in lines:
        pdf.set_xy(x, y)
        pdf.cell(w=width, h=style.line_height, text=line, align=align)
        y += style.line_height
    return y


def _set_style(pdf: FPDF, style: _Style) -> None:
    pdf.set_font(_FAMILY, "B" if style.bold else "", style.size)
    pdf.set_text_color(style.gray)


def _frame_jpeg(path: Path, placed_width: float, quality: int, dpi: int) -> bytes:
    """The frame as RGB JPEG, downscaled to the pixels ``placed_width`` mm needs at ``dpi`` (never up)."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except OSError as exc:
        raise ExportError(f"{path}: the frame cannot be read ({exc})") from exc
    target_width = max(1, round(placed_width / MM_PER_INCH * dpi))
    if rgb.width > target_width:
        target_height = max(1, round(rgb.height * target_width / rgb.width))
        rgb = rgb.resize((target_width, target_height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
