"""The request rules a user meets, declared once.

The bot checks every request against these constants (``bot/service.py`` is the only place a
request is checked), and every adapter declares its options from them: Discord's ``Range`` and
``Choice`` lists, the CLI's argparse, the help text of the console and Telegram. The engine's
own checks are guards that name the same constants. The story's length is a deployment setting
(``[story] max_chars``), read the same way by the service and the adapters.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

Mode = Literal["simple", "ref-guided"]
MODES: tuple[str, ...] = get_args(Mode)

# An explicit frame count: any board from a single panel up to a 4x3 grid. Without one, the
# planner picks its own count within [planner] min_shots..max_shots (6-10 by default).
MIN_FRAMES = 1
MAX_FRAMES = 12

# A board's frame shape, per story. Each maps to an SDXL-native size near one megapixel (all
# multiples of 64); a renderer configured for a smaller square ([engine] width x height: the
# preview, the draft mode, the tiny test models) draws the same shape scaled to its pixel count.
Aspect = Literal["1:1", "16:9", "9:16", "4:3", "3:4", "2.39:1"]
ASPECTS: tuple[str, ...] = get_args(Aspect)
NATIVE_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024), "16:9": (1344, 768), "9:16": (768, 1344),
    "4:3": (1152, 896), "3:4": (896, 1152), "2.39:1": (1536, 640),
}
NATIVE_PIXELS = 1024 * 1024
SCALED_MULTIPLE = 16  # a scaled size's sides: what SDXL's VAE and UNet (and the tiny test UNet) can take
MIN_FRAME_SIDE = 64  # the shortest side any renderer draws
MAX_FRAME_SIDE = 4096

SEED_SPACE = 2**32  # seeds are 32-bit: frame seeds are derived modulo this
MAX_SEED = SEED_SPACE - 1


def allowed_modes() -> str:
    """How a reply names the modes: ``simple | ref-guided``."""
    return " | ".join(MODES)


def allowed_frames() -> str:
    return f"{MIN_FRAMES}..{MAX_FRAMES}"


def allowed_seeds() -> str:
    return f"0..{MAX_SEED}"


def allowed_aspects() -> str:
    return " | ".join(ASPECTS)


def frame_size(aspect: str, pixels: int = NATIVE_PIXELS) -> tuple[int, int]:
    """(width, height) of a frame of ``aspect`` for a renderer that draws ``pixels`` pixels a
    frame: the native size at one megapixel, else that shape scaled to ``pixels`` (and no
    shorter than ``MIN_FRAME_SIDE``)."""
    if aspect not in NATIVE_SIZES:
        raise ValueError(f"aspect must be one of {allowed_aspects()}, got {aspect!r}")
    width, height = NATIVE_SIZES[aspect]
    if pixels == NATIVE_PIXELS:
        return width, height
    if pixels < 1:
        raise ValueError(f"a frame needs pixels, got {pixels}")
    scale = max(math.sqrt(pixels / NATIVE_PIXELS), MIN_FRAME_SIDE / min(width, height))
    return _to_multiple(width * scale), _to_multiple(height * scale)


def _to_multiple(side: float) -> int:
    return max(SCALED_MULTIPLE, int(side / SCALED_MULTIPLE + 0.5) * SCALED_MULTIPLE)
