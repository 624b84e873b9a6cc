"""The PDF shot sheet, read back with pypdf as a reader would see it: its pages and their
orientation and paper, the text on them (in English, Kazakh and Russian), the embedded frames,
and the file size limit."""

from __future__ import annotations

import io
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader
from skimage import data as photos

from engine.build import build_engine
from engine.exports.board import ExportBoard, ExportError, load_export_board
from engine.exports.pdf import COLUMNS, CREATOR, ROWS_PER_PAGE, WIDE_COLUMNS, build_pdf, write_pdf
from engine.settings import EngineSettings, ExportSettings, RenderSettings
from engine.storyboard import BoardRequest
from tests.engine.exports.conftest import STORY

KAZAKH = "Алдар Көсе күліп, атқа мінеді."
RUSSIAN = "Бай кричит ему вслед."
DIALOGUE = 'the bai: "Give me back my horse!"'
PT_PER_MM = 72 / 25.4
A4 = (210 * PT_PER_MM, 297 * PT_PER_MM)
LETTER = (8.5 * 72, 11 * 72)
DISCORD_LIMIT = 10 * 2**20


@pytest.fixture(scope="module")
def make_wide_board(tmp_path_factory) -> Callable[..., Path]:
    """``make_wide_board(frames=6, side=256)``: a finished 16:9 board of STORY; ``side=1024`` draws
    the native 1344x768 frames, ``side=256`` small 336x192 ones. (``make_board`` draws 1:1 frames
    whatever its width and height, now that a board's shape is its request's aspect.)"""
    made: dict[tuple[int, int], Path] = {}

    def make(frames: int = 6, side: int = 256) -> Path:
        if (frames, side) not in made:
            folder = tmp_path_factory.mktemp("wide")
            engine = build_engine(EngineSettings(render=RenderSettings(renderer="preview", width=side, height=side)))
            engine.run(BoardRequest(STORY, frames=frames, seed=0, aspect="16:9"), folder)
            made[(frames, side)] = folder
        return made[(frames, side)]

    return make


@pytest.fixture(scope="module")
def photo_board(make_wide_board, tmp_path_factory) -> ExportBoard:
    """A 10-panel 1344x768 board whose frames are photographs: what real SDXL frames weigh as JPEG."""
    folder = tmp_path_factory.mktemp("photo") / "board"
    shutil.copytree(make_wide_board(frames=10, side=1024), folder)
    pictures = [photos.astronaut(), photos.chelsea(), photos.coffee(), photos.rocket()]
    noise = np.random.default_rng(0)
    for index, frame in enumerate(sorted(folder.glob("frame_*.png"))):
        picture = Image.fromarray(pictures[index % len(pictures)]).convert("RGB").resize((1344, 768))
        # Grain, so that no two frames are the same picture (the PDF would embed a repeat only once).
        grain = noise.normal(0, 6, (768, 1344, 3))
        Image.fromarray(np.clip(np.asarray(picture) + grain, 0, 255).astype(np.uint8)).save(frame)
    board = load_export_board(folder)
    assert (board.width, board.height) == (1344, 768) and board.wide
    return board


def _reader(pdf: bytes) -> PdfReader:
    return PdfReader(io.BytesIO(pdf))


def _flat(text: str) -> str:
    """Whitespace normalised: a wrapped caption reads back with line breaks inside it."""
    return " ".join(text.split())


def _page_texts(pdf: bytes) -> list[str]:
    return [_flat(page.extract_text()) for page in _reader(pdf).pages]


def _expected_pages(panels: int, wide: bool) -> int:
    per_row = WIDE_COLUMNS if wide else COLUMNS
    return math.ceil(panels / (per_row * ROWS_PER_PAGE))


@pytest.mark.parametrize("frames", [6, 10])
@pytest.mark.parametrize("wide", [False, True], ids=["square", "wide"])
def test_pages_hold_the_panels_a_row_of_two_or_three_rows_per_page_times(make_board, make_wide_board, frames, wide):
    board = load_export_board(make_wide_board(frames=frames) if wide else make_board(frames=frames))
    assert board.wide is wide and len(board.panels) == frames
    pdf = build_pdf(board, ExportSettings())
    pages = _page_texts(pdf)
    assert len(pages) == _expected_pages(frames, wide)
    # Every page holds the next panels in reading order, a full page before the last.
    per_page = (WIDE_COLUMNS if wide else COLUMNS) * ROWS_PER_PAGE
    for number in range(1, frames + 1):
        page = pages[(number - 1) // per_page]
        assert f"Shot {number} " in page + " ", (number, page)
    for page_number, page in enumerate(pages, start=1):
        assert f"page {page_number} of {len(pages)}" in page


def test_the_text_is_real_text_in_every_language_of_the_story(make_board):
    board = load_export_board(make_board())
    text = " ".join(_page_texts(build_pdf(board, ExportSettings())))
    assert _flat(board.title) in text
    assert {KAZAKH, RUSSIAN} <= {panel.caption for panel in board.panels}  # the story's lines became captions
    for panel in board.panels:
        assert f"Shot {panel.number}" in text
        assert _flat(panel.caption) in text
        assert _flat(panel.description) in text
        assert f"{panel.framing} · {panel.camera_angle} · {panel.pose} · seed {panel.seed}" in text
    assert [panel.dialogue for panel in board.panels if panel.dialogue] == [DIALOGUE]
    assert DIALOGUE in text


def test_the_title_block_names_the_board(make_board):
    board = load_export_board(make_board())
    first_page = _page_texts(build_pdf(board, ExportSettings()))[0]
    for fact in (board.title, board.date, f"mode {board.mode}", f"seed {board.seed}",
                 f"planner {board.planner}", f"renderer {board.renderer}"):
        assert fact in first_page


def test_later_pages_repeat_the_title(make_board):
    board = load_export_board(make_board(frames=10))
    pages = _page_texts(build_pdf(board, ExportSettings()))
    assert len(pages) > 1 and all(page.startswith(board.title) for page in pages)


def test_the_metadata_names_the_story_and_the_bot(make_board):
    board = load_export_board(make_board())
    metadata = _reader(build_pdf(board, ExportSettings())).metadata
    assert metadata.title == board.title
    assert metadata.creator == CREATOR


def test_the_same_board_gives_the_same_document(make_board):
    board = load_export_board(make_board())
    first, second = build_pdf(board, ExportSettings()), build_pdf(board, ExportSettings())
    assert _page_texts(first) == _page_texts(second)
    assert _reader(first).metadata.creation_date == _reader(second).metadata.creation_date


@pytest.mark.parametrize(("paper", "size"), [("A4", A4), ("Letter", LETTER)])
@pytest.mark.parametrize("wide", [False, True], ids=["portrait", "landscape"])
def test_paper_from_the_settings_landscape_for_a_wide_board(make_board, make_wide_board, paper, size, wide):
    board = load_export_board(make_wide_board() if wide else make_board())
    for page in _reader(build_pdf(board, ExportSettings(paper=paper))).pages:
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        assert (width, height) == pytest.approx(tuple(reversed(size)) if wide else size, abs=0.5)


def test_a_photographic_10_panel_board_fits_discord(photo_board):
    settings = ExportSettings()
    assert settings.max_bytes == DISCORD_LIMIT
    pdf = build_pdf(photo_board, settings)
    assert len(pdf) <= DISCORD_LIMIT
    reader = _reader(pdf)
    assert len(reader.pages) == _expected_pages(10, wide=True)
    # Each frame is a JPEG no wider than its share of the page needs at the settings' dpi: downscaled.
    share_px = float(reader.pages[0].mediabox.width) / 72 / WIDE_COLUMNS * settings.pdf_dpi
    images = [image for page in reader.pages for image in page.images]
    assert len(images) == 10
    for image in images:
        assert image.name.endswith(".jpg") and image.image.mode == "RGB"
        assert image.image.width <= share_px < photo_board.width
        assert image.image.width / image.image.height == pytest.approx(1344 / 768, rel=0.01)


def test_frames_are_never_upscaled(make_board):
    board = load_export_board(make_board())  # 256 px frames, placed wider than 256 px at 300 dpi
    pdf = build_pdf(board, ExportSettings(pdf_dpi=300))
    sizes = {image.image.size for page in _reader(pdf).pages for image in page.images}
    assert sizes == {(256, 256)}


def test_a_lower_dpi_embeds_fewer_pixels(photo_board):
    def widths(dpi: int) -> set[int]:
        pdf = build_pdf(photo_board, ExportSettings(pdf_dpi=dpi))
        return {image.image.width for page in _reader(pdf).pages for image in page.images}

    (at_72,), (at_150,) = widths(72), widths(150)
    assert at_72 == pytest.approx(at_150 * 72 / 150, abs=1)


def test_a_file_above_the_limit_is_made_again_at_lower_quality(photo_board, caplog):
    full = build_pdf(photo_board, ExportSettings())
    # The settings model's floor is 1 MB; a copy skips validation, to put the limit just below this file.
    tight = ExportSettings().model_copy(update={"max_bytes": len(full) - 1})
    with caplog.at_level(logging.WARNING, logger="engine.exports.pdf"):
        smaller = build_pdf(photo_board, tight)
    assert len(smaller) <= tight.max_bytes
    assert "used quality 70, 150 dpi" in caplog.text
    # Still the whole sheet: every panel, its text, its frame.
    assert _page_texts(smaller) == _page_texts(full)
    assert sum(len(page.images) for page in _reader(smaller).pages) == 10


def test_a_file_above_the_limit_even_at_the_lowest_quality_is_refused(make_board):
    board = load_export_board(make_board())
    tiny = ExportSettings().model_copy(update={"max_bytes": 20_000})  # below the embedded fonts alone
    with pytest.raises(ExportError, match=r"even at JPEG quality 30, 72 dpi .*the limit is 0\.02 MB"):
        build_pdf(board, tiny)


def _long_caption_board(folder: Path, repeats: int) -> tuple[ExportBoard, str]:
    """A small wide board (the least room for notes) whose first caption is one very long sentence."""
    caption = "Aldar Kose rides " + " ".join(["far across the wide golden steppe past the quiet yurts"] * repeats) + "."
    engine = build_engine(EngineSettings(render=RenderSettings(renderer="preview", width=256, height=256)))
    engine.run(BoardRequest(f"{caption} {STORY}", frames=5, seed=0, aspect="16:9"), folder)
    board = load_export_board(folder)
    assert board.wide and board.panels[0].caption == caption
    return board, caption


def test_long_notes_are_set_smaller_and_the_grid_holds(tmp_path, caplog):
    board, caption = _long_caption_board(tmp_path, repeats=8)
    with caplog.at_level(logging.WARNING, logger="engine.exports.pdf"):
        pages = _page_texts(build_pdf(board, ExportSettings()))
    assert len(pages) == _expected_pages(5, wide=True)
    assert caption in pages[0] and "do not fit" not in caplog.text
    assert "Shot 5" in pages[-1]


def test_notes_too_long_even_when_small_are_cut_with_an_ellipsis(tmp_path, caplog):
    board, caption = _long_caption_board(tmp_path, repeats=30)
    with caplog.at_level(logging.WARNING, logger="engine.exports.pdf"):
        pages = _page_texts(build_pdf(board, ExportSettings()))
    assert len(pages) == _expected_pages(5, wide=True)
    assert "shot 1: its notes do not fit" in caplog.text
    first_panel = pages[0].split("Shot 1 ", 1)[1].split("Shot 2 ", 1)[0]
    assert caption[:200] in first_panel and caption not in first_panel and "…" in first_panel
    assert "Shot 2" in pages[0] and "Shot 5" in pages[-1]


def test_write_pdf_writes_the_file(make_board, tmp_path):
    out = write_pdf(make_board(), tmp_path / "board.pdf", ExportSettings())
    assert out == tmp_path / "board.pdf"
    assert out.read_bytes().startswith(b"%PDF-")
    assert len(_reader(out.read_bytes()).pages) == 1
    assert [path.name for path in tmp_path.iterdir()] == ["board.pdf"]


def test_a_folder_that_is_not_a_finished_board_is_refused(make_board, tmp_path):
    with pytest.raises(ExportError, match="is not a finished board"):
        write_pdf(tmp_path, tmp_path / "board.pdf", ExportSettings())
    broken = tmp_path / "broken"
    shutil.copytree(make_board(), broken)
    (broken / "frame_03.png").unlink()
    with pytest.raises(ExportError, match="frame files missing: .*frame_03.png"):
        write_pdf(broken, tmp_path / "board.pdf", ExportSettings())
    assert not (tmp_path / "board.pdf").exists()


def test_an_unreadable_frame_is_refused(make_board, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(make_board(), broken)
    (broken / "frame_02.png").write_bytes(b"not a picture")
    with pytest.raises(ExportError, match="frame_02.png: the frame cannot be read"):
        build_pdf(load_export_board(broken), ExportSettings())
