"""The request rules a user meets, declared once.

The bot checks every request against these constants (``bot/service.py`` is the only place a
request is checked), and every adapter declares its options from them: Discord's ``Range`` and
``Choice`` lists, the CLI's argparse, the help text of the console and Telegram. The engine's
own checks are guards that name the same constants. The story's length is a deployment setting
(``[story] max_chars``), read the same way by the service and the adapters.
"""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["simple", "ref-guided"]
MODES: tuple[str, ...] = get_args(Mode)

# An explicit frame count: any board from a single panel up to a 4x3 grid. Without one, the
# planner picks its own count within [planner] min_shots..max_shots (6-10 by default).
MIN_FRAMES = 1
MAX_FRAMES = 12

SEED_SPACE = 2**32  # seeds are 32-bit: frame seeds are derived modulo this
MAX_SEED = SEED_SPACE - 1


def allowed_modes() -> str:
    """How a reply names the modes: ``simple | ref-guided``."""
    return " | ".join(MODES)


def allowed_frames() -> str:
    return f"{MIN_FRAMES}..{MAX_FRAMES}"


def allowed_seeds() -> str:
    return f"0..{MAX_SEED}"
