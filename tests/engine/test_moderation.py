"""Banned terms on the skeleton of a text: Unicode tricks do not hide a term, ordinary words do not match."""

from __future__ import annotations

import pytest

from engine.moderation import CONFUSABLES_FILE, TermFilter, fold_table, skeleton, strip_bidi

TERMS = TermFilter(["kill", "вор", "кара", "bad phrase"])


@pytest.mark.parametrize(
    "text",
    [
        "kill",
        "Aldar wants to KILL the bai",
        "k\u2064ill",  # invisible plus
        "k\u034fill",  # combining grapheme joiner
        "ki\u180ell",  # Mongolian vowel separator
        "kil\u200el",  # left-to-right mark
        "k\u3164ill",  # Hangul filler: a letter (Lo) that draws as nothing
        "k\ufe0fill",  # variation selector
        "k\u0456ll",  # Cyrillic і
        "\u041aILL",  # Cyrillic К
        "K\u0406LL",  # Cyrillic І, in capitals: TR39's own table maps it to l
        "kіlL",
        "k i l l",
        "k-i-l-l",
        "k.i.l.l",
        "k_i_l_l",
        "k *i* l *l",
        "Aldar is a k i l l er",  # a spelled-out run has no word boundaries inside it
        "kill\u0301",  # combining acute (NFKC makes it a precomposed ĺ)
        "kíll",
        "ｋｉｌｌ",
        "𝐤𝐢𝐥𝐥",
        "kıll",  # dotless i
        "в\u043e\u0440",
        "в\u006f\u0440",  # вoр: Latin o in the Russian word
        "ВОР",
        "Вор",
        "B\u041e\u0420",  # Latin B for the Cyrillic В
        "в о р",
        "a BAD   PHRASE here",
        "a bad-phrase here",
    ],
)
def test_a_hidden_term_is_found(text):
    assert TERMS.find(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "Aldar Kose showed his skill, and the killer whale swam by.",
        "I like ill kings.",
        "I k ill nobody",  # only single letters are joined; "k" and "ill" stay two words
        "Воробей сел на ворота, а бай говорил с гостем о вороне.",  # вор inside longer words
        "Алдар Көсе қара атқа мінді.",  # Kazakh қара (black) is not the Russian кара: қ keeps its descender
        "Қара түн түсті, Алдар тауға кетті.",
        "They wrote a bop song.",  # looks like ВОР only in capitals; lowercase в is a small capital ʙ
        "a bad phrasebook",
        "и в степи, и у реки, а я дома",  # Russian one-letter words, joined but not into a term
    ],
)
def test_ordinary_words_near_a_term_are_not_a_match(text):
    assert TERMS.find(text) is None


@pytest.mark.parametrize("name", ["en_fur_coat", "en_merchant", "en_steppe_ride", "kk_kozha", "ru_bai"])
def test_the_sample_stories_pass(stories, name):
    assert TermFilter(["kill", "вор", "ұры", "кара", "bad", "өлтір"]).find(stories[name]) is None


def test_find_names_the_term_as_configured():
    assert TermFilter(["Kill", "Bad Phrase"]).find("a b a d  p h r a s e") == "Bad Phrase"
    assert TermFilter(["Kill"]).find("no match here") is None


def test_no_terms_finds_nothing_and_reads_no_table():
    fold_table.cache_clear()
    assert TermFilter([]).find("kill") is None
    assert TermFilter(["  ", ""]).find("kill") is None
    assert fold_table.cache_info().currsize == 0


def test_a_term_without_letters_is_ignored_with_a_warning(caplog):
    assert TermFilter(["!!!", "kill"]).find("!!! kill") == "kill"
    assert "'!!!'" in caplog.text and "ignored" in caplog.text


def test_the_skeleton_joins_only_single_letters_and_keeps_words_apart():
    assert skeleton("k i l l him") == skeleton("k-i-l-l  him") == "k\x1fi\x1fl\x1fl him"
    assert skeleton("I like ill kings") == "I like ill kings"
    assert skeleton("d\u200barkword") == "darkword"


def test_ascii_is_never_folded():
    """TR39 folds l, I and 1 together and m into rn: English words would become each other."""
    table = fold_table()
    assert not any(ch.isascii() for ch in table)
    assert TermFilter(["bum"]).find("burn") is None
    assert TermFilter(["fail"]).find("fall") is None


def test_kazakh_letters_stay_apart_from_their_russian_neighbours():
    for kazakh, russian in ("қк", "ғг", "ңн", "өо", "ұу"):
        assert skeleton(kazakh) != skeleton(russian)


def test_the_table_is_the_unicode_file():
    head = CONFUSABLES_FILE.read_text(encoding="utf-8-sig").splitlines()[:8]
    assert "# confusables.txt" in head and "# Version: 13.0.0" in head
    assert (CONFUSABLES_FILE.parent / "LICENSE_UNICODE").is_file()
    assert fold_table()["\u0430"] == "a" and fold_table()["\u041a"] == "K"


def test_strip_bidi_removes_every_bidi_control():
    text = "\u202aa\u202bb\u202cc\u202dd\u202ee\u2066f\u2067g\u2068h\u2069i\u200ej\u200fk\u061cl"
    assert strip_bidi(text) == "abcdefghijkl"
