"""Banned terms, matched on a skeleton of the text that Unicode tricks do not change.

The story a user writes and the plan an LLM writes are both checked here, against the same
``[story] banned_terms``. The term and the text go through the same steps, so whatever is
folded is folded the same way on both sides:

1. NFKC, then NFD, and every format (Cf) and combining (Mn, Mc, Me) character and every other
   default-ignorable code point is dropped: zero-width and invisible characters, variation
   selectors, bidi controls, accents (``kill\u0301``; ``é`` is ``e``, ``й`` is ``и``, ``ё`` is ``е``).
2. Confusables fold to their Unicode TR39 prototype: ``kіll`` with a Cyrillic ``і`` is ``kill``,
   ``вoр`` with a Latin ``o`` is ``вор``. ``fold_table`` says where this differs from TR39's own
   skeleton, and why. Case is compared letter by letter: each letter of a term matches its
   look-alikes in either case.
3. Letters spelled out one at a time, split by spaces or punctuation (``k i l l``, ``k-i-l-l``),
   are read as one word; words of two or more letters stay apart (``_groups``).

A term matches only as a whole word, as before: ``kill`` is not found in ``skill`` or ``killer``.
The letters of a spelled-out run carry no word boundaries, so a term is found anywhere among
them (``a k i l l``).
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from itertools import groupby
from pathlib import Path
from types import MappingProxyType

log = logging.getLogger(__name__)

# Unicode 13.0.0 confusables.txt, unmodified, as published at
# https://www.unicode.org/Public/security/13.0.0/confusables.txt (licence: LICENSE_UNICODE beside it).
CONFUSABLES_FILE = Path(__file__).resolve().parent / "assets" / "confusables" / "confusables.txt"

# Bidi controls reorder what a reader sees (a title that reads backwards); they are removed
# from every text that ends up on a board.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_BIDI_TABLE = dict.fromkeys(map(ord, BIDI_CONTROLS))

# Default_Ignorable_Code_Point (DerivedCoreProperties.txt): drawn as nothing. Most are Cf or Mn,
# but the Hangul fillers are letters (Lo), so the category alone would let them through.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Mc", "Me"})

# Joins the letters of a spelled-out run in a skeleton: not a word character, so a term may start
# or end at any of them, and never in a skeleton otherwise (every other separator is a space).
_SPELLED = "\x1f"


def strip_bidi(text: str) -> str:
    return text.translate(_BIDI_TABLE)


def _dropped(ch: str) -> bool:
    if unicodedata.category(ch) in _DROPPED_CATEGORIES:
        return True
    point = ord(ch)
    return any(low <= point <= high for low, high in _DEFAULT_IGNORABLE)


def visible(text: str) -> str:
    """Step 1: NFKC, then NFD without the characters nobody sees as letters of their own."""
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text))
    return "".join(ch for ch in decomposed if not _dropped(ch))


@functools.cache
def fold_table() -> Mapping[str, str]:
    """Character -> the look-alike it folds to, from TR39's confusables; read once per process.

    It follows TR39's prototypes, with three changes that keep false matches down:

    * ASCII is never folded. TR39 folds ``l``, ``I`` and ``1`` together and ``m`` into ``rn``,
      which would make different English words one (``burn`` and ``bum``).
    * A character folds to its ASCII look-alike of the same case: a Cyrillic ``К`` and ``І`` are
      ``K`` and ``I``, its ``і`` is ``i``. (TR39 alone maps ``І`` to the ``l`` of ``l``/``I``/``1``.)
    * A prototype that needs a combining mark is not used (Kazakh ``ғ`` is ``r`` with a stroke,
      ``қ``, ``ң``, ``ө``, ``ұ`` likewise): without the mark they would be the Russian ``г``,
      ``к``, ``н``, ``о``, ``у``, and a Kazakh word another word.

    The other prototypes stay as TR39 has them: a Russian ``в`` looks like a small capital
    ``ʙ``, not a ``b``, and ``т`` like ``ᴛ``, so a Russian word folds onto an English one only
    where it really looks the same (``сор`` and ``cop``).
    """
    prototypes = _read_prototypes(CONFUSABLES_FILE)
    twins = _ascii_twins(prototypes)
    table: dict[str, str] = {}
    for source, prototype in prototypes.items():
        if source.isascii() or visible(source) != source:
            continue  # ASCII is the alphabet folded onto; the rest never gets past step 1 as it is
        value = _twin(source, twins.get(prototype, ()), prototype)
        if value.isalnum() and value != source:
            table[source] = value
    return MappingProxyType(table)


def _read_prototypes(path: Path) -> dict[str, str]:
    prototypes: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        fields = line.split("#", 1)[0].split(";")
        if len(fields) < 2:
            continue
        source = "".join(chr(int(point, 16)) for point in fields[0].split())
        prototypes[source] = "".join(chr(int(point, 16)) for point in fields[1].split())
    return prototypes


def _ascii_twins(prototypes: dict[str, str]) -> dict[str, list[str]]:
    """Prototype -> the printable ASCII characters that have it (``l`` -> ``1``, ``I``, ``l``, ``|``)."""
    twins: dict[str, list[str]] = {}
    for point in range(0x21, 0x7F):
        ch = chr(point)
        twins.setdefault(prototypes.get(ch, ch), []).append(ch)
    return twins


def _twin(source: str, candidates: Iterable[str], prototype: str) -> str:
    """The ASCII look-alike of ``source`` in its case, else any ASCII letter, else a digit; else the prototype."""
    def rank(ch: str) -> tuple[bool, bool, str]:
        same_case = (source.isupper() and ch.isupper()) or (source.islower() and ch.islower())
        return (not same_case, not ch.isalpha(), ch)

    ranked = sorted((ch for ch in candidates if ch.isalnum()), key=rank)
    return ranked[0] if ranked else prototype


def _is_word_char(ch: str, table: Mapping[str, str]) -> bool:
    return ch in table or ch.isalnum()


def _groups(text: str, table: Mapping[str, str]) -> list[list[str]]:
    """The words of ``text`` after step 1 (runs of letters and digits), grouped for step 3: a run of
    neighbouring one-letter words is one group, any other word a group of its own.

    ``k-i-l-l him`` -> ``[["k", "i", "l", "l"], ["him"]]``; "I like ill kings" stays four groups, so
    "kill" is not found in it. Only single letters are joined: joining longer words would find
    "carpet" in "car pet"."""
    words = ["".join(chars) for is_word, chars in groupby(visible(text), key=lambda ch: _is_word_char(ch, table))
             if is_word]
    groups: list[list[str]] = []
    for word in words:
        if len(word) == 1 and groups and len(groups[-1][-1]) == 1:
            groups[-1].append(word)
        else:
            groups.append([word])
    return groups


def skeleton(text: str) -> str:
    """What terms are looked for in: steps 1-3, the letters of a spelled-out run joined by ``_SPELLED``
    and other words by one space. Case is kept; a term's pattern allows either case of each letter."""
    table = fold_table()
    return " ".join(_SPELLED.join("".join(table.get(ch, ch) for ch in word) for word in group)
                    for group in _groups(text, table))


def _letter_pattern(ch: str, table: Mapping[str, str]) -> str:
    """Any case of ``ch``, folded: a Russian ``в`` looks like ``ʙ`` but its capital like ``B``."""
    spellings = {"".join(table.get(c, c) for c in visible(variant))
                 for variant in (ch, ch.lower(), ch.upper(), ch.casefold())}
    escaped = sorted(map(re.escape, spellings))
    return escaped[0] if len(escaped) == 1 else "(?:" + "|".join(escaped) + ")"


def _term_pattern(term: str, table: Mapping[str, str]) -> str:
    """``term``'s skeleton as a regex. Its letters may also be spelled out one by one in the text
    (joined by ``_SPELLED``), a multi-word term's too (``b a d p h r a s e``)."""
    letters = re.escape(_SPELLED) + "?"
    words = f"[ {re.escape(_SPELLED)}]"
    return words.join(letters.join(_letter_pattern(ch, table) for word in group for ch in word)
                      for group in _groups(term, table))


class TermFilter:
    """``[story] banned_terms``, compiled once: ``find`` names the first term a text contains.

    The same filter checks the user's story (bot) and the LLM's plan (engine)."""

    def __init__(self, terms: Iterable[str]) -> None:
        self._terms: tuple[str, ...] = ()
        self._pattern: re.Pattern[str] | None = None
        configured = tuple(dict.fromkeys(term for term in terms if term.strip()))
        if configured:  # no terms, no table to read
            self._compile(configured, fold_table())

    def _compile(self, configured: tuple[str, ...], table: Mapping[str, str]) -> None:
        patterns = {term: _term_pattern(term, table) for term in configured}
        for term in (term for term, pattern in patterns.items() if not pattern):
            log.warning("banned term %r has no letter or digit and is ignored", term)
        self._terms = tuple(term for term, pattern in patterns.items() if pattern)
        if self._terms:
            named = "|".join(f"(?P<t{i}>{patterns[term]})" for i, term in enumerate(self._terms))
            self._pattern = re.compile(rf"(?<!\w)(?:{named})(?!\w)")  # whole words only, as ever

    def find(self, text: str) -> str | None:
        """The banned term (as configured) that ``text`` contains, or None."""
        if self._pattern is None:
            return None
        match = self._pattern.search(skeleton(text))
        return self._terms[int(match.lastgroup[1:])] if match else None
