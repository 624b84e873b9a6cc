"""The storyboard sheet: panels in rows, each numbered with its caption, and an encoder that
keeps the sheet inside the chat platforms' photo limits.

Captions are the user's own sentences (English, Russian or Kazakh) and are drawn with the
bundled DejaVu Sans. ``encode_grid`` guarantees the byte, dimension-sum and aspect-ratio
limits from ``GridSettings`` (Telegram's photo limits by default: 10 MB, w + h ≤ 10000,
aspect ≤ 20), which also keeps the file under Discord's default 10 MiB.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from engine.errors import EngineError
from engine.rendering.fonts import load_font, wrap_text
from engine.settings import GridSettings

logger = logging.getLogger(__name__)

PAPER: tuple[int, int, int] = (250, 248, 242)
INK: tuple[int, int, int] = (40, 36, 52)
SPOKEN: tuple[int, int, int] = (120, 40, 30)  # a quoted line: set apart from the caption in ink of its own
FRAME_LINE: tuple[int, int, int] = (190, 186, 178)

# columns for 1..12 panels when GridSettings.columns == 0
_AUTO_COLUMNS = {1: 1, 2: 2, 3: 3, 4: 2, 5: 3, 6: 3, 7: 4, 8: 4, 9: 3, 10: 5, 11: 4, 12: 4}

_JPEG_QUALITIES = (95, 90, 85, 80, 75, 70, 65, 60)
_WEBP_QUALITY = 70
_DOWNSCALE_STEP = 0.85
_MAX_DOWNSCALES = 20
_MIN_SIDE = 16


@dataclass(frozen=True)
class GridPanel:
    """One frame of the board with its number and the story's sentence as caption."""

    image: Image.Image
    number: int
    caption: str
    dialogue: str = ""  # who says what, under the caption: Name: "…"


class GridEncodingError(EngineError, RuntimeError):
    """The sheet could not be brought inside the size limits (should never happen)."""


@dataclass(frozen=True)
class EncodedGrid:
    """The encoded sheet, ready to upload."""

    data: bytes
    format: str  # "png" | "jpeg" | "webp"
    width: int
    height: int

    @property
    def extension(self) -> str:
        return {"png": "png", "jpeg": "jpg", "webp": "webp"}[self.format]

    @property
    def mime_type(self) -> str:
        return f"image/{self.format}"


# ---------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    columns: int
    rows: int
    panel_w: int
    panel_h: int
    gutter: int
    title_h: int
    caption_h: int
    caption_font: ImageFont.FreeTypeFont
    badge_font: ImageFont.FreeTypeFont
    title_font: ImageFont.FreeTypeFont

    @property
    def cell_h(self) -> int:
        return self.panel_h + self.caption_h

    @property
    def size(self) -> tuple[int, int]:
        width = self.columns * self.panel_w + (self.columns + 1) * self.gutter
        height = self.gutter + self.title_h + self.rows * self.cell_h + self.rows * self.gutter
        return width, height

    def origin(self, slot: int) -> tuple[int, int]:
        row, column = divmod(slot, self.columns)
        x = self.gutter + column * (self.panel_w + self.gutter)
        y = self.gutter + self.title_h + row * (self.cell_h + self.gutter)
        return x, y


WIDE_PANEL = 1.6  # width / height from which panels read as wide (16:9, 2.39:1): two to a row
TALL_PANEL = 0.75  # and up to which they read as tall (9:16): a strip
MAX_STRIP = 6  # tall panels in one strip; more go in two rows


def auto_columns(count: int, panel_ratio: float = 1.0) -> int:
    """Columns for ``count`` panels of ``panel_ratio`` (width / height).

    Square-ish panels: 4 → 2×2, 6 → 3×2, 8 → 4×2, 10 → 5×2 …; wide panels: rows of two, so a
    16:9 board reads down the page; tall panels: one strip of up to six, else two rows.
    """
    if count < 1:
        raise ValueError(f"a grid needs at least one panel, got {count}")
    if panel_ratio <= 0:
        raise ValueError(f"a panel's width / height must be positive, got {panel_ratio}")
    if panel_ratio >= WIDE_PANEL:
        return min(count, 2)
    if panel_ratio <= TALL_PANEL:
        return count if count <= MAX_STRIP else math.ceil(count / 2)
    return _AUTO_COLUMNS.get(count, math.ceil(math.sqrt(count)))


def _layout(count: int, panel_size: tuple[int, int], settings: GridSettings, title: str, *,
            speaking: bool = False) -> _Layout:
    panel_w, panel_h = panel_size
    columns = min(settings.columns or auto_columns(count, panel_w / panel_h), count)
    caption_font = load_font(max(12, panel_w // 30))
    badge_font = load_font(max(12, round(caption_font.size * 1.1)), bold=True)
    title_font = load_font(max(16, panel_w // 16), bold=True)
    line_h = _line_height(caption_font)
    text_h = (settings.caption_lines + (settings.dialogue_lines if speaking else 0)) * line_h
    caption_h = max(_badge_diameter(badge_font), text_h) + 2 * _caption_pad(panel_w)
    title_h = _line_height(title_font) + settings.gutter if title else 0
    return _Layout(
        columns=columns,
        rows=math.ceil(count / columns),
        panel_w=panel_w,
        panel_h=panel_h,
        gutter=settings.gutter,
        title_h=title_h,
        caption_h=caption_h,
        caption_font=caption_font,
        badge_font=badge_font,
        title_font=title_font,
    )


def _line_height(font: ImageFont.FreeTypeFont) -> int:
    return round(font.size * 1.25)


def _badge_diameter(font: ImageFont.FreeTypeFont) -> int:
    return round(font.size * 1.7)


def _caption_pad(panel_w: int) -> int:
    return max(4, panel_w // 64)


# ---------------------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------------------


def compose_grid(panels: Sequence[GridPanel], settings: GridSettings, *, title: str = "") -> Image.Image:
    """Lay the panels out in rows on paper, each numbered and captioned; all panels take the
    first panel's size."""
    if not panels:
        raise ValueError("compose_grid needs at least one panel, got none")
    panel_size = panels[0].image.size
    layout = _layout(len(panels), panel_size, settings, title, speaking=any(p.dialogue for p in panels))
    sheet = Image.new("RGB", layout.size, PAPER)
    draw = ImageDraw.Draw(sheet)
    if title:
        _draw_title(draw, title, layout, sheet.width)
    for slot, panel in enumerate(panels):
        x, y = layout.origin(slot)
        sheet.paste(_fit_panel(panel.image, panel_size), (x, y))
        draw.rectangle((x - 1, y - 1, x + layout.panel_w, y + layout.panel_h), outline=FRAME_LINE)
        _draw_caption(draw, panel, layout, settings, (x, y + layout.panel_h))
    return sheet


def _fit_panel(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return rgb if rgb.size == size else rgb.resize(size, Image.Resampling.LANCZOS)


def _draw_title(draw: ImageDraw.ImageDraw, title: str, layout: _Layout, sheet_w: int) -> None:
    lines = wrap_text(title, layout.title_font, sheet_w - 2 * layout.gutter, max_lines=1)
    if lines:
        draw.text((layout.gutter, layout.gutter), lines[0], font=layout.title_font, fill=INK)


def _draw_caption(
    draw: ImageDraw.ImageDraw, panel: GridPanel, layout: _Layout, settings: GridSettings, origin: tuple[int, int]
) -> None:
    """Number badge on the left, the wrapped caption beside it, and who says what below that."""
    pad = _caption_pad(layout.panel_w)
    x, y = origin[0], origin[1] + pad
    diameter = _badge_diameter(layout.badge_font)
    draw.ellipse((x, y, x + diameter, y + diameter), fill=INK)
    centre = (x + diameter / 2, y + diameter / 2)
    draw.text(centre, str(panel.number), font=layout.badge_font, fill=PAPER, anchor="mm")
    text_x = x + diameter + pad
    width = layout.panel_w - (text_x - x)
    lines = wrap_text(panel.caption, layout.caption_font, width, settings.caption_lines)
    spoken = wrap_text(panel.dialogue, layout.caption_font, width, settings.dialogue_lines) if panel.dialogue else []
    line_h = _line_height(layout.caption_font)
    for k, (line, colour) in enumerate([(line, INK) for line in lines] + [(line, SPOKEN) for line in spoken]):
        draw.text((text_x, y + k * line_h), line, font=layout.caption_font, fill=colour)


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------


def encode_grid(image: Image.Image, settings: GridSettings) -> EncodedGrid:
    """Encode the sheet within ``settings``' byte, dimension-sum and aspect-ratio limits.

    Order: shrink (keeping the aspect, padding with the sheet's background rather than
    distorting) until the geometry fits; PNG; JPEG at the highest quality that fits;
    WebP; then shrink by 0.85 and try again.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    background = rgb.getpixel((0, 0))
    scale = 1.0
    for _ in range(_MAX_DOWNSCALES):
        fitted, scale = _fit_geometry(rgb, settings, background, scale)
        for fmt, data, detail in _candidates(fitted, settings.max_bytes):
            if len(data) <= settings.max_bytes:
                logger.info(
                    "grid encoded as %s (%s), %dx%d, %d bytes, scale %.3f",
                    fmt, detail, fitted.width, fitted.height, len(data), scale,
                )
                return EncodedGrid(data=data, format=fmt, width=fitted.width, height=fitted.height)
        logger.info(
            "grid at %dx%d does not fit in %d bytes in any format; shrinking",
            fitted.width, fitted.height, settings.max_bytes,
        )
        scale *= _DOWNSCALE_STEP
    raise GridEncodingError(
        f"could not encode a {image.width}x{image.height} grid within {settings.max_bytes} bytes "
        f"after {_MAX_DOWNSCALES} downscales"
    )


def _fit_geometry(
    image: Image.Image, settings: GridSettings, background: tuple[int, ...], scale: float
) -> tuple[Image.Image, float]:
    """Resize by ``scale`` (or less, until the padded size fits w + h) and pad to the aspect limit.

    Returns the fitted image and the scale actually used.
    """
    while True:
        content = (max(1, math.floor(image.width * scale)), max(1, math.floor(image.height * scale)))
        canvas = _padded_size(content, settings.max_aspect_ratio)
        if sum(canvas) <= settings.max_dimension_sum:
            break
        scale *= min(0.999, settings.max_dimension_sum / sum(canvas))
    if min(content) < _MIN_SIDE and min(image.size) >= _MIN_SIDE:
        raise GridEncodingError(f"grid would shrink to {content[0]}x{content[1]} to fit the limits")
    resized = image if content == image.size else image.resize(content, Image.Resampling.LANCZOS)
    if canvas == content:
        return resized, scale
    padded = Image.new("RGB", canvas, background)
    padded.paste(resized, ((canvas[0] - content[0]) // 2, (canvas[1] - content[1]) // 2))
    return padded, scale


def _padded_size(size: tuple[int, int], max_ratio: float) -> tuple[int, int]:
    """Grow the short side until long / short ≤ ``max_ratio``."""
    width, height = size
    if width >= height:
        return width, max(height, math.ceil(width / max_ratio))
    return max(width, math.ceil(height / max_ratio)), height


def _candidates(image: Image.Image, max_bytes: int) -> Iterator[tuple[str, bytes, str]]:
    """Encodings to try, best first: lossless PNG, then the best JPEG that fits, then WebP."""
    yield "png", _encode(image, "PNG", optimize=True), "optimized"
    quality, data = _best_jpeg(image, max_bytes)
    yield "jpeg", data, f"quality {quality}"
    yield "webp", _encode(image, "WEBP", quality=_WEBP_QUALITY, method=4), f"quality {_WEBP_QUALITY}"


def _best_jpeg(image: Image.Image, max_bytes: int) -> tuple[int, bytes]:
    """Highest quality in ``_JPEG_QUALITIES`` (95 → 60) that fits; the lowest one if none does.

    File size grows with quality, so a binary search over the list needs ~3 encodes, not 8.
    """
    low, high = 0, len(_JPEG_QUALITIES) - 1  # indices: 0 = best quality
    tried: dict[int, bytes] = {}
    best = len(_JPEG_QUALITIES) - 1
    while low <= high:
        middle = (low + high) // 2
        tried[middle] = _encode(image, "JPEG", quality=_JPEG_QUALITIES[middle], optimize=True)
        if len(tried[middle]) <= max_bytes:
            best, high = middle, middle - 1
        else:
            low = middle + 1
    if best not in tried:
        tried[best] = _encode(image, "JPEG", quality=_JPEG_QUALITIES[best], optimize=True)
    return _JPEG_QUALITIES[best], tried[best]


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
