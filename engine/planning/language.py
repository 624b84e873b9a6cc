"""Which language a story is written in: Kazakh, Russian or English.

A pure, dependency-free guess from the letters alone. Kazakh Cyrillic is told apart
from Russian by the letters Russian lacks (ә ғ қ ң ө ұ ү һ і). A text counts as
Cyrillic when it has at least as many Cyrillic letters as Latin ones, so an English
story that quotes one Kazakh word stays English.
"""

from __future__ import annotations

import unicodedata

from engine.shots import Language

KAZAKH_LETTERS = frozenset("әғқңөұүһі")


def detect_language(text: str) -> Language:
    """Return "kk", "ru" or "en" for ``text`` (``"en"`` when it has no letters)."""
    cyrillic = latin = 0
    kazakh = False
    for char in unicodedata.normalize("NFC", text):
        if not char.isalpha():
            continue
        if _is_cyrillic(char):
            cyrillic += 1
            kazakh = kazakh or char.lower() in KAZAKH_LETTERS
        elif char.isascii():
            latin += 1
    if cyrillic and cyrillic >= latin:
        return "kk" if kazakh else "ru"
    return "en"


def _is_cyrillic(char: str) -> bool:
    return "\u0400" <= char <= "\u052f"
