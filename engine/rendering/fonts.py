"""Fonts shipped with the engine, and pixel-measured text wrapping.

The storyboard captions are the user's own sentences (English, Russian or Kazakh), so the
font must cover Cyrillic including the Kazakh letters ә ғ қ ң ө ұ ү һ і. DejaVu Sans does,
and it ships in ``engine/assets/fonts`` (licence alongside), so every machine draws the same
glyphs. System fonts are never consulted.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import ImageFont

FONT_DIR = Path(__file__).resolve().parents[1] / "assets" / "fonts"
_REGULAR = "DejaVuSans.ttf"
_BOLD = "DejaVuSans-Bold.ttf"
ELLIPSIS = "…"


@functools.lru_cache(maxsize=64)
def load_font(size: int, *, bold: bool = False) -> ImageFont.FreeTypeFont:
    """Load the bundled DejaVu Sans (or Bold) at ``size`` pixels; cached per (size, bold).

    The basic layout engine is used on purpose: it is always available, and it keeps the
    pixels identical whether or not libraqm is installed.
    """
    if size < 1:
        raise ValueError(f"font size must be at least 1 pixel, got {size}")
    path = FONT_DIR / (_BOLD if bold else _REGULAR)
    if not path.is_file():
        raise FileNotFoundError(f"bundled font is missing: {path}")
    return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)


def wrap_text(text: str, font: ImageFont.FreeTypeFont, max_width: int, max_lines: int) -> list[str]:
    """Wrap ``text`` into at most ``max_lines`` lines no wider than ``max_width`` pixels.

    Words are split on whitespace; a word wider than a line is broken between characters.
    When the text does not fit, the last kept line ends with "…".
    """
    if max_lines <= 0 or max_width <= 0:
        return []
    lines = _greedy_lines(text.split(), font, max_width, limit=max_lines + 1)
    if len(lines) <= max_lines:
        return lines
    kept = lines[:max_lines]
    kept[-1] = _ellipsise(kept[-1], font, max_width)
    return kept


def _fits(candidate: str, font: ImageFont.FreeTypeFont, max_width: int) -> bool:
    return font.getlength(candidate) <= max_width


def _greedy_lines(words: list[str], font: ImageFont.FreeTypeFont, max_width: int, limit: int) -> list[str]:
    """Fill lines word by word; stop once ``limit`` lines exist (the caller only needs to know it overflowed)."""
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if _fits(candidate, font, max_width):
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while not _fits(current, font, max_width):
            head, current = _split_word(current, font, max_width)
            lines.append(head)
        if len(lines) >= limit:
            return lines
    if current:
        lines.append(current)
    return lines


def _split_word(word: str, font: ImageFont.FreeTypeFont, max_width: int) -> tuple[str, str]:
    """Return the longest prefix of ``word`` that fits (at least one character) and the rest."""
    low, high = 1, len(word) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if _fits(word[:middle], font, max_width):
            low = middle
        else:
            high = middle - 1
    return word[:low], word[low:]


def _ellipsise(line: str, font: ImageFont.FreeTypeFont, max_width: int) -> str:
    """Trim ``line`` from the end until it fits with a trailing ellipsis."""
    trimmed = line.rstrip()
    while trimmed and not _fits(trimmed + ELLIPSIS, font, max_width):
        trimmed = trimmed[:-1].rstrip()
    return trimmed + ELLIPSIS
