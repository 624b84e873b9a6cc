"""Small helpers shared by tests that look at what a user would see."""

from __future__ import annotations

import itertools
from pathlib import Path

from PIL import Image

from engine.grid import PAPER


def _long_runs(flags: list[bool]) -> list[tuple[int, int]]:
    """(start, length) of runs of True at least half as long as the longest run."""
    runs, pos = [], 0
    for value, group in itertools.groupby(flags):
        length = len(list(group))
        if value:
            runs.append((pos, length))
        pos += length
    longest = max((length for _, length in runs), default=0)
    return [(start, length) for start, length in runs if length >= longest / 2]


def count_panels(grid_path: Path) -> tuple[int, int]:
    """(columns, rows) of picture panels on a storyboard sheet, found from its pixels.

    Panels are the long runs of non-paper pixels; gutters, margins, titles, captions
    and number badges are paper or short runs. Rows are counted down a vertical line
    a little inside the first panel, columns across the middle of the first row.
    """
    with Image.open(grid_path) as img:
        image = img.convert("RGB")
    width, height = image.size
    pixels = image.load()

    def is_ink(x: int, y: int) -> bool:
        return any(abs(a - b) > 6 for a, b in zip(pixels[x, y], PAPER, strict=True))

    probe_y = height // 3
    first_x = next(x for x in range(width) if is_ink(x, probe_y))
    rows = _long_runs([is_ink(first_x + 20, y) for y in range(height)])
    top, panel_height = rows[0]
    columns = _long_runs([is_ink(x, top + panel_height // 2) for x in range(width)])
    return len(columns), len(rows)
