"""The storyboard sheet: layout, Cyrillic captions, and encoding inside the photo limits."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine.rendering.fonts import ELLIPSIS, load_font, wrap_text
from engine.rendering.grid import SPOKEN, EncodedGrid, GridPanel, auto_columns, compose_grid, encode_grid
from engine.settings import GridSettings

KAZAKH_LETTERS = "әғқңөұүһі"
LONG_KAZAKH_CAPTION = (
    "Алдар Көсе қулығымен сараң байды алдап, оның ішігін, атын және бір қап күмісін алып кетті; "
    "ал бай әлі күнге дейін қазанның ет пісіруін күтіп, бәріне өзінің қалай алданғанын айтып жүр."
)


def solid_panels(count: int, size: tuple[int, int] = (100, 80), caption: str = "Алдар Көсе") -> list[GridPanel]:
    return [GridPanel(Image.new("RGB", size, (60, 120, 180)), number, caption) for number in range(1, count + 1)]


def noise_panel(rng: random.Random, size: int) -> Image.Image:
    return Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))


def decode(encoded: EncodedGrid) -> Image.Image:
    image = Image.open(io.BytesIO(encoded.data))
    image.load()
    return image


def assert_within_photo_limits(encoded: EncodedGrid, settings: GridSettings) -> None:
    assert len(encoded.data) <= settings.max_bytes
    assert encoded.width + encoded.height <= settings.max_dimension_sum
    assert max(encoded.width, encoded.height) / min(encoded.width, encoded.height) <= settings.max_aspect_ratio
    image = decode(encoded)
    assert image.size == (encoded.width, encoded.height)
    assert image.format.lower() == encoded.format


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------


def test_ten_noisy_production_panels_fit_telegram_photo_limits() -> None:
    rng = random.Random(0)
    panels = [GridPanel(noise_panel(rng, 1024), number, LONG_KAZAKH_CAPTION) for number in range(1, 11)]
    settings = GridSettings()
    sheet = compose_grid(panels, settings, title="Алдар Көсе және сараң бай")
    assert sheet.width * sheet.height * 3 > settings.max_bytes  # raw pixels would not fit
    encoded = encode_grid(sheet, settings)
    assert_within_photo_limits(encoded, settings)
    assert len(encoded.data) <= 10_000_000
    assert encoded.width + encoded.height <= 10_000
    assert encoded.format in ("jpeg", "webp")  # noise is far too big for PNG


def test_small_board_stays_lossless_png() -> None:
    settings = GridSettings()
    sheet = compose_grid(solid_panels(4, (256, 256)), settings)
    encoded = encode_grid(sheet, settings)
    assert encoded.format == "png"
    assert (encoded.extension, encoded.mime_type) == ("png", "image/png")
    assert (encoded.width, encoded.height) == sheet.size
    assert decode(encoded).tobytes() == sheet.tobytes()


def test_oversized_sheet_is_shrunk_to_the_dimension_sum_keeping_its_shape() -> None:
    settings = GridSettings(max_dimension_sum=1000)
    encoded = encode_grid(Image.new("RGB", (1600, 800), (250, 248, 242)), settings)
    assert encoded.width + encoded.height <= 1000
    assert abs(encoded.width / encoded.height - 2.0) < 0.01
    assert_within_photo_limits(encoded, settings)


def test_extreme_aspect_is_padded_with_background_not_stretched() -> None:
    settings = GridSettings(max_aspect_ratio=20.0)
    strip = Image.new("RGB", (5000, 100), (250, 248, 242))
    strip.paste((200, 30, 30), (0, 0, 5000, 100))
    strip.paste((250, 248, 242), (0, 0, 1, 1))  # the background colour sits in the corner
    encoded = encode_grid(strip, settings)
    assert (encoded.width, encoded.height) == (5000, 250)
    image = decode(encoded).convert("RGB")
    assert image.getpixel((2500, 10)) == (250, 248, 242)  # padding above
    assert image.getpixel((2500, 125)) == (200, 30, 30)  # content kept at full height


def test_tight_byte_budget_falls_back_to_lossy_and_then_shrinks() -> None:
    settings = GridSettings(max_bytes=100_000)
    encoded = encode_grid(noise_panel(random.Random(1), 600), settings)
    assert_within_photo_limits(encoded, settings)
    assert encoded.format in ("jpeg", "webp")
    assert encoded.width < 600  # even WebP cannot hold 600x600 noise in 100 kB


def test_encoded_grid_names_its_file_type() -> None:
    assert (EncodedGrid(b"", "jpeg", 1, 1).extension, EncodedGrid(b"", "jpeg", 1, 1).mime_type) == ("jpg", "image/jpeg")
    assert (EncodedGrid(b"", "webp", 1, 1).extension, EncodedGrid(b"", "webp", 1, 1).mime_type) == ("webp", "image/webp")


# ---------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "columns"),
    [(1, 1), (2, 2), (3, 3), (4, 2), (5, 3), (6, 3), (7, 4), (8, 4), (9, 3), (10, 5), (11, 4), (12, 4)],
)
def test_auto_columns(count: int, columns: int) -> None:
    assert auto_columns(count) == columns


@pytest.mark.parametrize(("count", "columns", "rows"), [(8, 4, 2), (6, 3, 2), (10, 5, 2), (1, 1, 1)])
def test_sheet_width_is_columns_of_panels_plus_gutters(count: int, columns: int, rows: int) -> None:
    settings = GridSettings(gutter=16)
    sheet = compose_grid(solid_panels(count), settings)
    assert sheet.width == columns * 100 + (columns + 1) * 16
    one_row = compose_grid(solid_panels(1), settings)
    assert sheet.height == one_row.height + (rows - 1) * (one_row.height - 16)


def test_explicit_columns_override_the_automatic_choice() -> None:
    sheet = compose_grid(solid_panels(6), GridSettings(columns=2, gutter=10))
    assert sheet.width == 2 * 100 + 3 * 10


def test_every_panel_is_pasted_in_its_cell() -> None:
    colours = [(200, 10 * number, 40) for number in range(1, 9)]
    panels = [GridPanel(Image.new("RGB", (100, 80), colour), number, "") for number, colour in enumerate(colours, 1)]
    settings = GridSettings(gutter=16)
    sheet = compose_grid(panels, settings)
    cell_h = (sheet.height - 16) // 2
    for slot, colour in enumerate(colours):
        row, column = divmod(slot, 4)
        centre = (16 + column * 116 + 50, 16 + row * cell_h + 40)
        assert sheet.getpixel(centre) == colour


def test_panels_take_the_first_panels_size() -> None:
    panels = [
        GridPanel(Image.new("RGB", (100, 80), (10, 10, 10)), 1, "a"),
        GridPanel(Image.new("RGBA", (300, 240), (240, 20, 20, 255)), 2, "b"),
    ]
    sheet = compose_grid(panels, GridSettings(gutter=16))
    assert sheet.width == 2 * 100 + 3 * 16
    assert sheet.getpixel((16 + 116 + 50, 16 + 40)) == (240, 20, 20)


def test_title_adds_a_line_on_top() -> None:
    plain = compose_grid(solid_panels(2), GridSettings())
    titled = compose_grid(solid_panels(2), GridSettings(), title="Алдар Көсе және сараң бай")
    assert titled.height > plain.height
    assert titled.width == plain.width


def test_empty_panel_list_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one panel"):
        compose_grid([], GridSettings())


# ---------------------------------------------------------------------------------------
# Captions and fonts
# ---------------------------------------------------------------------------------------


def glyph_pixels(char: str, bold: bool) -> bytes:
    canvas = Image.new("L", (80, 80))
    ImageDraw.Draw(canvas).text((10, 10), char, font=load_font(48, bold=bold), fill=255)
    return canvas.tobytes()


@pytest.mark.parametrize("bold", [False, True])
def test_kazakh_letters_have_real_glyphs(bold: bool) -> None:
    font = load_font(48, bold=bold)
    missing = glyph_pixels("\ue000", bold)  # a private-use character: the .notdef box
    for char in KAZAKH_LETTERS + KAZAKH_LETTERS.upper():
        assert font.getmask(char).getbbox() is not None, char
        assert glyph_pixels(char, bold) != missing, f"{char!r} renders as the missing-glyph box"
    assert len({glyph_pixels(char, bold) for char in KAZAKH_LETTERS}) == len(KAZAKH_LETTERS)


def test_fonts_come_from_the_package_and_are_cached() -> None:
    font = load_font(20)
    assert "engine/assets/fonts" in str(font.path).replace("\\", "/")
    assert load_font(20) is font
    with pytest.raises(ValueError):
        load_font(0)


def test_wrap_keeps_lines_inside_the_width_and_ellipsises_the_last() -> None:
    font = load_font(20)
    lines = wrap_text(LONG_KAZAKH_CAPTION, font, 300, 3)
    assert len(lines) == 3
    assert lines[-1].endswith(ELLIPSIS)
    assert all(font.getlength(line) <= 300 for line in lines)
    assert " ".join(lines).startswith("Алдар Көсе қулығымен")


def test_wrap_leaves_short_text_alone_and_breaks_overlong_words() -> None:
    font = load_font(20)
    assert wrap_text("Алдар Көсе", font, 300, 3) == ["Алдар Көсе"]
    broken = wrap_text("Ә" * 60, font, 200, 10)
    assert len(broken) > 1 and "".join(broken) == "Ә" * 60
    assert all(font.getlength(line) <= 200 for line in broken)
    assert wrap_text("anything", font, 200, 0) == []


def ink_rows(sheet: Image.Image, box: tuple[int, int, int, int]) -> int:
    """Rows of ``box`` that contain dark caption ink (the paper is near white)."""
    region = sheet.crop(box).convert("L")
    return sum(1 for y in range(region.height) if any(region.getpixel((x, y)) < 120 for x in range(region.width)))


def test_caption_is_drawn_under_the_panel_and_clipped_at_caption_lines() -> None:
    def caption_ink(lines: int) -> int:
        sheet = compose_grid(solid_panels(1, (400, 300), LONG_KAZAKH_CAPTION), GridSettings(caption_lines=lines, gutter=16))
        text_left = 16 + 40  # right of the number badge
        return ink_rows(sheet, (text_left, 16 + 300, 16 + 400, sheet.height))

    assert caption_ink(1) > 0
    assert caption_ink(3) > caption_ink(2) > caption_ink(1)


def test_a_quoted_line_is_drawn_under_its_panels_caption_in_its_own_ink():
    settings = GridSettings()
    silent = [GridPanel(Image.new("RGB", (200, 160), (60, 120, 180)), n, f"caption {n}") for n in (1, 2)]
    speaking = [silent[0], GridPanel(silent[1].image, 2, "caption 2", dialogue='Алдар Көсе: "Сәлем, бай!"')]
    plain, spoken = compose_grid(silent, settings), compose_grid(speaking, settings)

    def spoken_ink(sheet: Image.Image, box: tuple[int, int, int, int]) -> int:
        pixels = np.asarray(sheet.crop(box).convert("RGB")).reshape(-1, 3).astype(int)
        return int((np.abs(pixels - np.array(SPOKEN)).sum(axis=1) < 60).sum())

    assert spoken.height > plain.height  # room for the line was made under the captions
    gutter, panel_w = settings.gutter, 200
    first = (gutter, gutter + 160, gutter + panel_w, spoken.height)
    second = (2 * gutter + panel_w, gutter + 160, 2 * (gutter + panel_w), spoken.height)
    assert spoken_ink(spoken, second) > 20 and spoken_ink(spoken, first) == 0
    assert spoken_ink(plain, (0, 0, plain.width, plain.height)) == 0
