"""The offline planner: a story in, a ``ShotList`` out, with no network and no model.

``OfflinePlanner`` implements ``engine.planning.base.Planner`` with nothing beyond the
standard library and pydantic:

1. split the story into sentences at sentence boundaries (". ! ? …" before a capital, and
   line breaks), never inside a quote, so reported speech stays with its speaker
   ("Алдар Косе говорит: «…»" is one sentence); a piece that would end inside a clause
   (on "," ";" ":" or a dash) is joined to the next sentence;
2. fit them to the shot count: merge neighbouring sentences of a long story (an event);
   a short story keeps one panel per sentence and gets extra panels (below);
3. read each event's English structured fields (place, time of day, verbs, emotions,
   characters, props) from keyword tables in English, Russian and Kazakh (engine/planning/offline/lexicon.py);
4. carry the place, time of day and cast over from the previous event when a sentence
   names none (a story stays in one place until it moves);
5. decide who each sentence is about (the rule below);
6. give every shot a beat (establishing, medium, close-up, action, reaction, closing)
   that decides framing and camera angle and, when the story gives no verb, the pose;
7. write the story bible: Aldar Kose is cast member 0, every other character gets the next
   id when first seen on the board, every setting is one place; each shot names its cast
   and place by id, and names and looks come from the lexicon's likeness tables; a panel whose
   caption quotes someone carries the line as its ``dialogue``, said by whom the panel is about.

Who a sentence is about. Within a sentence, clauses are cut at "," ";" ":" a dash and words
such as "and", "while", "а", "ал" (``CLAUSE_WORDS``). A clause's subject is the first of these
named before its first verb the lexicon knows (anywhere, if it knows none): Aldar Kose, another
cast member (a person or an animal), or a pronoun (``PRONOUNS``). A pronoun means Aldar Kose
when he was in the previous sentence's shot, else the previous sentence's subject; a clause
that names nobody keeps the subject before it. Quoted words are not read for this. Then
Aldar Kose is in a sentence's shot when the sentence names him (quotes included), when its
subject is he, or when a pronoun stands for him; otherwise its subject is another cast member
alone, and the shot leaves id 0 out and lists that member first. Shot 1 always has him: it is
the board's identity reference. A merged event has him when any of its sentences does.

Extra panels. When the story has fewer events than the shot count, the longest events get
extra panels, after the event's own panel (before it for the story's last event, so the board
ends on the story's last words). Each extra is a distinct shot of the beat with a short caption
of its own, built from the bible's names in the story's language: a close-up of Aldar Kose
("Алдар Косе"), or of a cast member who is the subject of a clause without him ("…, а купец ждёт
у холодного котла": "Купец", drawn alone and doing what his clause says), an insert of a prop
("Котёл", in Aldar Kose's hands), the two of them ("Алдар Косе и купец"), a place and, when
the story says when, its time ("Степь на закате"). The extras of a sentence about another cast
member alone show that member, never Aldar Kose. Which comes first follows the beat's
framing; no caption is used twice on a board. When every name is taken, the caption says the
framing ("Крупный план: котёл"), and at the very last the panel's number.

Captions of the story's panels are the story's own words with whitespace collapsed, never
translated. Animals are listed in ``characters`` (they share the frame with Aldar Kose); objects
go to ``props``. Keyword stems match at the start of a word after NFKC, casefolding and
"ё"→"е", so inflected Russian and Kazakh forms match; a stem ending in "$" matches a
whole word only.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
from dataclasses import dataclass, replace

from engine.limits import MAX_FRAMES, MIN_FRAMES
from engine.planning.base import PlanError, PlanResult
from engine.planning.language import detect_language
from engine.planning.offline.lexicon import (
    ANIMALS,
    CAST_LIKENESSES,
    CLAUSE_WORDS,
    EMOTIONS,
    FRAMING_WORDS,
    HERO_LIKENESS,
    HERO_NAMES,
    HUMANS,
    NEGATIONS,
    PAIR,
    PANEL_WORD,
    PLACE_LIKENESSES,
    PLACE_LINE,
    PLACES,
    PRONOUNS,
    PROP_NAMES,
    PROPS,
    TIME_PHRASES,
    TIMES,
    VERBS,
    WINTER,
    Cue,
    Likeness,
    Verb,
    fold,
)
from engine.settings import PlannerSettings
from engine.shots import DIALOGUE_CHARS, HERO_ID, CastMember, Dialogue, Language, Place, Shot, ShotList

logger = logging.getLogger(__name__)

HERO = "Aldar Kose"
TITLE_CHARS = 60
MAX_CHARACTERS = 3
MAX_PROPS = 3


class _Words:
    """A text in matching form: folded words joined by single spaces."""

    def __init__(self, text: str) -> None:
        self.key = " " + " ".join(re.findall(r"\w+", fold(text))) + " "

    def first(self, stems: tuple[str, ...], *, negatable: bool = False) -> tuple[int, int] | None:
        """(position, -needle length) of the earliest stem match, or None."""
        best: tuple[int, int] | None = None
        for stem in stems:
            needle = " " + stem[:-1] + " " if stem.endswith("$") else " " + stem
            start = self.key.find(needle)
            while start != -1 and negatable and self._negated(start):
                start = self.key.find(needle, start + 1)
            if start != -1 and (best is None or (start, -len(needle)) < best):
                best = (start, -len(needle))
        return best

    def at(self, stems: tuple[str, ...]) -> int | None:
        """Position of the earliest stem match, or None."""
        where = self.first(stems)
        return where[0] if where else None

    def _negated(self, position: int) -> bool:
        return any(word in NEGATIONS for word in self.key[:position].split()[-2:])


def _found(
    words: _Words, cues: tuple[Cue, ...], language: Language, *, negatable: bool = False
) -> list[Cue]:
    """Cues named in the text, in order of first mention (one cue per position)."""
    hits = []
    for order, cue in enumerate(cues):
        where = words.first(cue.stems(language), negatable=negatable)
        if where is not None:
            hits.append((where, order, cue))
    hits.sort(key=lambda hit: (hit[0], hit[1]))
    result: list[Cue] = []
    taken: set[int] = set()
    for (position, _), _, cue in hits:
        if position not in taken and cue.value not in {c.value for c in result}:
            result.append(cue)
        taken.add(position)
    return result


def _values(
    words: _Words, cues: tuple[Cue, ...], language: Language, *, negatable: bool = False
) -> tuple[str, ...]:
    return tuple(cue.value for cue in _found(words, cues, language, negatable=negatable))


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class _Facts:
    """What one event names, in English."""

    place: str | None
    places: tuple[str, ...]  # every place named, in order (``place`` is the first)
    time_of_day: str | None
    winter: bool
    verbs: tuple[Verb, ...]
    emotions: tuple[str, ...]
    humans: tuple[str, ...]
    animals: tuple[str, ...]
    props: tuple[str, ...]


@dataclass(frozen=True)
class _Scene:
    """Where and when an event happens, and who is there, after carry-over."""

    setting: str
    time_of_day: str
    humans: tuple[str, ...]
    timed: bool = False  # the story has said when (this event or an earlier one)
    winter: bool = False


def _read_facts(text: str, language: Language) -> _Facts:
    words = _Words(text)
    places = _values(words, PLACES, language)
    times = _values(words, TIMES, language)
    verbs = tuple(v for v in _found(words, VERBS, language, negatable=True) if isinstance(v, Verb))
    animals = _values(words, ANIMALS, language)
    if any(verb.pose == "riding" for verb in verbs) and "horse" not in animals:
        animals = ("horse", *animals)
    return _Facts(
        place=places[0] if places else None,
        places=places,
        time_of_day=times[0] if times else None,
        winter=words.first(WINTER.stems(language)) is not None,
        verbs=verbs,
        emotions=_values(words, EMOTIONS, language, negatable=True),
        humans=_values(words, HUMANS, language),
        animals=animals,
        props=_tidy_props(_values(words, PROPS, language)),
    )


def _tidy_props(props: tuple[str, ...]) -> tuple[str, ...]:
    """Drop a plain noun that a more specific prop already names ("coat" beside "fur coat")."""
    return tuple(p for p in props if not any(o != p and o.endswith(" " + p) for o in props))


def _setting(place: str, winter: bool) -> str:
    return "winter steppe" if winter and place == "steppe" else place


def _scenes(facts: list[_Facts]) -> list[_Scene]:
    """Resolve place, time and cast per event, carrying each over until the story changes it."""
    place = next((f.place for f in facts if f.place), "steppe")
    time_of_day, timed, winter, humans = "day", False, False, ()
    scenes = []
    for fact in facts:
        moved = fact.place is not None and fact.place != place
        place = fact.place or place
        time_of_day = fact.time_of_day or time_of_day
        timed = timed or fact.time_of_day is not None
        winter = winter or fact.winter
        humans = fact.humans or (() if moved else humans)
        scenes.append(_Scene(_setting(place, winter), time_of_day, humans, timed, winter))
    return scenes


# --------------------------------------------------------------------------- text


_TERMINAL = re.compile(r"[.!?…]+[\"'»”’)\]]*(?=\s)")
_QUOTES = re.compile(r"«[^«»]*»|„[^„“”]*[“”]|“[^“”]*”|\"[^\"]*\"")
_OPEN_ENDED = re.compile(r"[,;:—–-]$")  # a piece that ends here is still inside its clause
_OPENERS = "\"'«“„‘([—–-•* "
_BULLET = re.compile(r"^[-*•]\s+")


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _starts_sentence(text: str) -> bool:
    head = text.lstrip(_OPENERS)
    return bool(head) and (head[0].isupper() or head[0].isdigit())


def _quote_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every quotation: «…», „…“, “…”, "…" (straight quotes paired in order)."""
    return [match.span() for match in _QUOTES.finditer(text)]


def _unquoted(text: str) -> str:
    """The text with its quotations blanked out: the narrator's words only."""
    return _QUOTES.sub(" ", text)


def split_sentences(story: str) -> list[str]:
    """The story's sentences with whitespace collapsed, in order.

    A sentence ends at ". ! ? …" (and any closing quote) before a capital, or at the end of a
    block of lines; never inside a quotation. A piece with no words is joined to the sentence
    before it, and one that ends inside a clause ("," ";" ":" or a dash) to the one after it.
    """
    pieces: list[str] = []
    for block in _blocks(story):
        pieces.extend(_split_block(block))
    sentences: list[str] = []
    carry = ""
    for piece in pieces:
        piece = f"{carry} {piece}".strip() if carry else piece
        carry = ""
        if not re.search(r"\w", piece) and sentences:
            sentences[-1] = f"{sentences[-1]} {piece}"
        elif not re.search(r"\w", piece) or _OPEN_ENDED.search(piece):
            carry = piece
        else:
            sentences.append(piece)
    if carry:  # the story itself ends inside a clause: keep its words, not the dangling mark
        sentences.append(carry.rstrip(",;:—–- ") or carry)
    return sentences


def _blocks(story: str) -> list[str]:
    """Group lines into blocks of running text.

    A blank line ends a block; so does a line that opens a sentence (capital letter,
    bullet or quote) after a line that does not run on with a comma, colon or hyphen.
    Wrapped lines of one sentence are joined with a space.
    """
    blocks: list[list[str]] = [[]]
    for raw in story.splitlines():
        line = _collapse(raw)
        if not line:
            blocks.append([])
            continue
        previous = blocks[-1][-1] if blocks[-1] else ""
        if previous and not previous.endswith((",", ";", ":", "-")) and _starts_sentence(line):
            blocks.append([])
        blocks[-1].append(_BULLET.sub("", line))
    return [" ".join(lines) for lines in blocks if lines]


def _split_block(block: str) -> list[str]:
    quotes = _quote_spans(block)
    sentences, start = [], 0
    for match in _TERMINAL.finditer(block):
        end = match.end()
        if any(a < end < b for a, b in quotes):
            continue  # a full stop inside a quotation: the speech goes on
        if _starts_sentence(block[end:]):
            sentences.append(block[start:end].strip())
            start = end
    tail = block[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def _word_count(text: str) -> int:
    return len(re.findall(r"\w+", text))


def _title(first_sentence: str) -> str:
    """A short title in the story's language: the first clause, trimmed to ~60 characters."""
    head = re.split(r"[,;:]\s", first_sentence, maxsplit=1)[0]
    clause = head if _word_count(head) >= 3 else first_sentence
    clause = clause.strip(" \"'«»“”„‘’.!?…,;:—–-")
    if len(clause) > TITLE_CHARS:
        clause = clause[:TITLE_CHARS].rsplit(" ", 1)[0].rstrip(",;:—– ") + "…"
    return clause or first_sentence


# --------------------------------------------------------------------------- fitting


def _fit_events(sentences: list[str], count: int) -> list[tuple[str, ...]]:
    """The story's events, at most ``count``: one per sentence, neighbours merged when there are too many."""
    events = [(sentence,) for sentence in sentences]
    if len(events) <= count:
        return events
    if len(events) > 4 * count:
        events = _chunk_evenly(events, 4 * count)
    while len(events) > count:  # merge neighbours, shortest pair first; first and last survive
        index = min(range(len(events) - 1), key=lambda i: (_length(events[i]) + _length(events[i + 1]), i))
        events[index : index + 2] = [events[index] + events[index + 1]]
    return events


def _length(event: tuple[str, ...]) -> int:
    return len(" ".join(event))


def _chunk_evenly(events: list[tuple[str, ...]], count: int) -> list[tuple[str, ...]]:
    bounds = [round(i * len(events) / count) for i in range(count + 1)]
    return [sum(events[a:b], ()) for a, b in itertools.pairwise(bounds) if b > a]


def _spread(events: list[str], count: int) -> list[int]:
    """How many shots each event gets: ``count`` in all, extras to the longest events."""
    base, extra = divmod(count, len(events))
    longest = set(sorted(range(len(events)), key=lambda i: (-len(events[i]), i))[:extra])
    return [base + (i in longest) for i in range(len(events))]


# --------------------------------------------------------------------------- who it is about


@dataclass(frozen=True)
class _Roles:
    """Who an event is about: whether Aldar Kose is in its shot, its subject, and who does what."""

    hero: bool
    subject: str  # HERO, or the English value of another cast member
    doing: tuple[tuple[str, Verb], ...] = ()  # (subject, verb) per clause, in order
    alone: tuple[str, ...] = ()  # others who are the subject of a clause without Aldar Kose

    def verb_of(self, who: str) -> Verb | None:
        return next((verb for subject, verb in self.doing if subject == who), None)


_STORY_START = _Roles(hero=True, subject=HERO)
_CAST = HUMANS + ANIMALS
_PEOPLE = frozenset(cue.value for cue in HUMANS)


def _clauses(text: str, language: Language) -> list[str]:
    """The text cut at , ; : a dash and the clause words ("and", "while", "а", "ал"), in matching form."""
    breaks = set(CLAUSE_WORDS.stems(language))
    clauses: list[list[str]] = [[]]
    for token in re.findall(r"\w+|[,;:—–]", fold(text)):
        if token in ",;:—–" or token + "$" in breaks:
            clauses.append([])
        else:
            clauses[-1].append(token)
    return [" ".join(words) for words in clauses if words]


def _clause_subject(words: _Words, language: Language, referent: str) -> tuple[str | None, bool, bool]:
    """(the clause's subject or None, whether it has a pronoun, whether it names Aldar Kose): the
    subject is the first of Aldar Kose, another cast member or a pronoun (standing for ``referent``)
    named before the first verb."""
    verb_at = min(
        (where for verb in VERBS if (where := words.at(verb.stems(language))) is not None), default=None
    )
    named: list[tuple[int, str]] = []
    if (where := words.at(HERO_NAMES.stems(language))) is not None:
        named.append((where, HERO))
    named += [(where, cue.value) for cue in _CAST if (where := words.at(cue.stems(language))) is not None]
    pronoun = words.at(PRONOUNS.stems(language))
    if pronoun is not None:
        named.append((pronoun, referent))
    before = sorted(hit for hit in named if verb_at is None or hit[0] < verb_at)
    return (before[0][1] if before else None), pronoun is not None, bool(named) and named[0][1] == HERO


def _read_roles(sentence: str, language: Language, previous: _Roles) -> _Roles:
    """Who one sentence is about (the rule in the module docstring), given the sentence before."""
    referent = HERO if previous.hero else previous.subject
    subject: str | None = None
    running = referent
    pronoun = False
    doing: list[tuple[str, Verb]] = []
    alone: list[str] = []
    for clause in _clauses(_unquoted(sentence), language):
        words = _Words(clause)
        who, has_pronoun, has_hero = _clause_subject(words, language, referent)
        if who not in (None, HERO) and not has_hero and not (has_pronoun and previous.hero):
            alone.append(who)
        pronoun = pronoun or has_pronoun
        running = who or running
        subject = subject or who
        verbs = [v for v in _found(words, VERBS, language, negatable=True) if isinstance(v, Verb)]
        doing += [(running, verb) for verb in verbs]
    subject = subject or referent
    named = _Words(sentence).first(HERO_NAMES.stems(language)) is not None
    hero = named or subject == HERO or (pronoun and previous.hero)
    return _Roles(hero, subject, tuple(doing), tuple(dict.fromkeys(alone)))


def _event_roles(events: list[tuple[str, ...]], language: Language) -> list[_Roles]:
    """Each event's roles: its sentences read in story order, each after the one before."""
    previous = _STORY_START
    result = []
    for event in events:
        roles = []
        for sentence in event:
            previous = _read_roles(sentence, language, previous)
            roles.append(previous)
        hero = any(r.hero for r in roles)
        doing, alone = sum((r.doing for r in roles), ()), tuple(dict.fromkeys(sum((r.alone for r in roles), ())))
        result.append(_Roles(hero, HERO if hero else roles[0].subject, doing, alone))
    return result


# --------------------------------------------------------------------------- beats


@dataclass(frozen=True)
class _Beat:
    """A storyboard beat: framing and angle, plus pose/action/emotion when the story gives none."""

    framing: str
    camera_angle: str
    emotion: str
    fallbacks: tuple[tuple[str, str], ...]  # (pose, action)


# Face bias: apart from the wide establishing/closing beats, shots are medium or close,
# seen from the front or at eye level (the action beat's three-quarter view adds variety).
BEATS = {
    "establishing": _Beat(
        "wide", "high-angle", "calm",
        (("walking", "walks into view"), ("standing", "surveys the scene")),
    ),
    "medium": _Beat(
        "medium", "front", "sly",
        (
            ("talking", "talks with {other}"),
            ("holding", "holds {thing}"),
            ("pointing", "points ahead"),
            ("standing", "listens carefully"),
        ),
    ),
    "close-up": _Beat(
        "close-up", "front", "mischievous",
        (
            ("laughing", "grins slyly"),
            ("talking", "whispers a clever idea"),
            ("standing", "raises an eyebrow"),
        ),
    ),
    "action": _Beat(
        "medium", "three-quarter", "confident",
        (
            ("pointing", "gestures boldly"),
            ("holding", "holds up {thing}"),
            ("running", "hurries along"),
            ("crouching", "kneels down"),
        ),
    ),
    "reaction": _Beat(
        "close-up", "eye-level", "amused",
        (
            ("laughing", "laughs to himself"),
            ("bowing", "bows politely"),
            ("waving", "waves a hand"),
            ("standing", "watches closely"),
        ),
    ),
    "closing": _Beat(
        "wide", "low-angle", "cheerful",
        (("waving", "waves goodbye"), ("walking", "walks away"), ("standing", "looks back with a smile")),
    ),
}
_CYCLE = ("medium", "close-up", "action", "reaction")


def _beat_names(new_place: list[bool]) -> list[str]:
    """Beat per shot: wide first, wide last (6+ shots), a wide for a new place while the budget lasts."""
    count = len(new_place)
    wide_budget = max(1, count // 4)
    names: list[str] = []
    wides = step = 0
    for index in range(count):
        if count >= 3 and index == 0:
            name = "establishing"
        elif count >= 6 and index == count - 1:
            name = "closing"
        elif count >= 3 and new_place[index] and wides < wide_budget and names[-1] != "establishing":
            name = "establishing"
        else:
            name, step = _CYCLE[step % len(_CYCLE)], step + 1
        wides += name == "establishing"
        names.append(name)
    return names


# --------------------------------------------------------------------------- panels


@dataclass(frozen=True)
class _Event:
    """One event of the story: its sentences, what they name, where, and who it is about."""

    text: str
    facts: _Facts
    scene: _Scene
    roles: _Roles


@dataclass(frozen=True)
class _Take:
    """What one panel shows: its caption, who is in it (the subject first) and what they do."""

    caption: str
    hero: bool  # Aldar Kose is in the panel
    characters: tuple[str, ...]  # the others in it, English nouns; the subject first when not ``hero``
    props: tuple[str, ...]
    setting: str
    verb: Verb | None = None  # what the story says the subject does here
    pose: tuple[str, str] | None = None  # (pose, action) the panel's kind implies, when the story says none
    emotion: str | None = None


def _story_take(event: _Event, first: bool) -> _Take:
    """The event's own panel: its sentences as the caption."""
    roles, facts = event.roles, event.facts
    hero, characters = _present(event)
    hero = hero or first
    return _Take(
        caption=event.text,
        hero=hero,
        characters=characters,
        props=facts.props[:MAX_PROPS],
        setting=event.scene.setting,
        verb=roles.verb_of(HERO if hero else roles.subject),
        emotion=facts.emotions[0] if facts.emotions else None,
    )


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _name(value: str, language: Language) -> str:
    if value == HERO:
        return HERO_LIKENESS.name(language)
    likeness = CAST_LIKENESSES.get(value)
    return likeness.name(language) if likeness else value


def _extra_takes(event: _Event, framing: str, language: Language) -> list[_Take]:
    """Every extra panel the event could have, the best for ``framing`` first. An event about
    another cast member alone keeps Aldar Kose out of its extras too: they show that member."""
    facts, scene, roles = event.facts, event.scene, event.roles
    hero = roles.hero
    # a close-up of someone else alone only shows who is the subject of a clause without Aldar Kose
    alone = list(dict.fromkeys([*roles.alone, *([] if hero else [roles.subject])]))
    others = list(dict.fromkeys([*alone, *scene.humans, *facts.animals]))
    lead = () if hero else (roles.subject,)  # who holds the prop, who stands in the place
    faces = [  # doing what their clause says, unless the event's own panel already shows it
        _Take(_capital(_name(who, language)), False, (who,), (), scene.setting,
              None if lead == (who,) else roles.verb_of(who),
              pose=None if who in _PEOPLE else ("standing", "stands still"))
        for who in alone
    ]
    if hero:
        faces.insert(len(alone), _Take(HERO_LIKENESS.name(language), True, (), (), scene.setting))
    props = [
        _Take(_capital(PROP_NAMES[p].text(language)) if p in PROP_NAMES else p, hero, lead, (p,), scene.setting,
              pose=("holding", f"holds up the {p}"))
        for p in facts.props
    ]
    pairs = [
        _Take(
            PAIR.text(language).format(a=HERO_LIKENESS.name(language), b=_name(who, language)), True, (who,), (),
            scene.setting, pose=("talking", f"talks with the {who}") if who in _PEOPLE else None,
        )
        for who in (others if hero else [])
    ]
    places = _place_takes(event, language, last_first=framing == "wide")
    if framing == "wide":
        kinds = (places, pairs, faces, props)
    elif framing == "close-up":
        kinds = (faces, props, pairs, places)
    else:
        kinds = (props, pairs, faces, places)
    takes = [take for kind in kinds for take in kind]
    marker = FRAMING_WORDS[framing].text(language)
    hero_name = HERO_LIKENESS.name(language)
    takes += [
        replace(take, caption=f"{marker}: {c if c.startswith(hero_name) else c[:1].lower() + c[1:]}")
        for take in takes
        if (c := take.caption)
    ]
    return takes


def _present(event: _Event) -> tuple[bool, tuple[str, ...]]:
    """(Aldar Kose is in it, the others) for a panel of the whole scene of ``event``."""
    characters = (event.scene.humans + event.facts.animals)[:MAX_CHARACTERS]
    if event.roles.hero:
        return True, characters
    subject = event.roles.subject
    return False, (subject, *(c for c in characters if c != subject))[:MAX_CHARACTERS]


def _place_takes(event: _Event, language: Language, *, last_first: bool) -> list[_Take]:
    """Establishing panels: the event's place and every other place it names (the last named first,
    for a wide shot: where the story is heading), each with its time if the story gave one."""
    scene = event.scene
    named = [_setting(place, scene.winter) for place in event.facts.places]
    settings = list(dict.fromkeys([*reversed(named), scene.setting] if last_first else [scene.setting, *named]))
    hero, characters = _present(event)
    takes = []
    for setting in settings:
        place = _capital(PLACE_LIKENESSES[setting].name(language))
        if scene.timed:
            line = PLACE_LINE.text(language).format(place=place, time=TIME_PHRASES[scene.time_of_day].text(language))
            takes.append(_Take(_capital(line), hero, characters, (), setting))
        takes.append(_Take(place, hero, characters, (), setting))
    return takes


def _caption_key(caption: str) -> str:
    return " ".join(re.findall(r"\w+", fold(caption)))


# --------------------------------------------------------------------------- shots


_PLACE_PHRASE = {
    "steppe": "on the steppe",
    "bazaar": "at the bazaar",
    "yurt": "by the yurt",
    "village": "in the village",
    "mountains": "in the mountains",
    "river": "by the river",
    "camp": "at the camp",
    "road": "on the road",
    "winter steppe": "on the winter steppe",
}
_TIME_PHRASE = {"dawn": "at dawn", "day": "by day", "sunset": "at sunset", "night": "at night"}


@dataclass(frozen=True)
class _Slot:
    """One shot to fill: what it shows, when, and its beat."""

    take: _Take
    scene: _Scene
    beat: str
    event: int  # which event it belongs to


def _fill(template: str, other: str | None, thing: str | None) -> str | None:
    if "{other}" in template and not other:
        return None
    if "{thing}" in template and not thing:
        return None
    return template.format(other=f"the {other}" if other else "", thing=f"the {thing}" if thing else "")


def _pose_and_action(
    slot: _Slot, used: set[str], previous: str | None, rng: random.Random | None
) -> tuple[str, str]:
    """The story's verb for this panel, else its kind's pose, else the beat's first fallback
    not used yet in the event."""
    take = slot.take
    subject = None if take.hero else take.characters[0]
    people = [c for c in take.characters if c != subject and c in _PEOPLE]
    other = people[0] if people else None
    things = take.props + tuple(c for c in take.characters if c != subject and c not in _PEOPLE)
    thing = things[0] if things else None
    if take.verb is not None:
        return take.verb.pose, _fill(take.verb.value, other, thing) or take.verb.alone
    if take.pose is not None:
        return take.pose
    options = list(BEATS[slot.beat].fallbacks)
    if rng is not None:
        turn = rng.randrange(len(options))
        options = options[turn:] + options[:turn]
    filled = [(pose, text) for pose, template in options if (text := _fill(template, other, thing))]
    fresh = [option for option in filled if option[0] not in used and option[0] != previous]
    return (fresh or [o for o in filled if o[0] != previous] or filled)[0]


_UNCOUNTED = frozenset({"sheep", "salt", "meat", "soup", "kumys", "tea", "bread", "wool", "fire"})


def _noun_list(nouns: tuple[str, ...]) -> str:
    """English list with articles: "a horse, an axe and soup"."""

    def article(noun: str) -> str:
        if noun.endswith("s") or noun in _UNCOUNTED:
            return noun
        return ("an " if noun[0] in "aeiou" else "a ") + noun

    phrases = [article(noun) for noun in nouns]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _describe(pose: str, action: str, take: _Take, time_of_day: str) -> str:
    subject = HERO if take.hero else f"the {take.characters[0]}"
    others = take.characters if take.hero else take.characters[1:]
    line = f"{subject}, {pose}, {action} {_PLACE_PHRASE[take.setting]} {_TIME_PHRASE[time_of_day]}"
    if others or take.props:
        line += ", with " + _noun_list(others + take.props)
    return line


def _shot(index: int, slot: _Slot, pose: str, action: str) -> Shot:
    beat = BEATS[slot.beat]
    take = slot.take
    return Shot(
        index=index,
        description=_describe(pose, action, take, slot.scene.time_of_day),
        caption=take.caption,
        action=action,
        setting=take.setting,
        framing=beat.framing,
        camera_angle=beat.camera_angle,
        pose=pose,
        emotion=take.emotion or beat.emotion,
        time_of_day=slot.scene.time_of_day,
        characters=take.characters,
        props=take.props,
    )


# --------------------------------------------------------------------------- bible


def _first_seen(values: list[str], start: int) -> dict[str, int]:
    """Each distinct value with an id, ``start`` upwards, in order of first appearance."""
    ids: dict[str, int] = {}
    for value in values:
        ids.setdefault(value, start + len(ids))
    return ids


def _likeness(table: dict[str, Likeness], value: str) -> Likeness:
    """The lexicon's likeness of ``value``; a value the lexicon lacks is named and drawn as itself."""
    return table.get(value) or Likeness(value, value, value, value)


def _cast(ids: dict[str, int], language: Language) -> tuple[CastMember, ...]:
    entries = [(HERO_ID, HERO_LIKENESS)] + [(i, _likeness(CAST_LIKENESSES, value)) for value, i in ids.items()]
    return tuple(CastMember(id=i, name=like.name(language), look=like.look) for i, like in entries)


def _places(ids: dict[str, int], language: Language) -> tuple[Place, ...]:
    entries = [(i, _likeness(PLACE_LIKENESSES, value)) for value, i in ids.items()]
    return tuple(Place(id=i, name=like.name(language), look=like.look) for i, like in entries)


def _with_bible(title: str, language: Language, shots: list[tuple[Shot, bool]]) -> ShotList:
    """The plan with its cast and places, every shot naming them by id (Aldar Kose's 0 first, when he is in it)."""
    cast_ids = _first_seen([name for shot, _ in shots for name in shot.characters], start=HERO_ID + 1)
    place_ids = _first_seen([shot.setting for shot, _ in shots], start=0)
    planned = []
    for shot, hero in shots:
        ids = ((HERO_ID,) if hero else ()) + tuple(cast_ids[name] for name in shot.characters)
        planned.append(shot.model_copy(
            update={"cast_ids": ids, "place_id": place_ids[shot.setting], "dialogue": _dialogue(shot.caption, ids)}))
    return ShotList(
        title=title, language=language, cast=_cast(cast_ids, language), places=_places(place_ids, language),
        shots=tuple(planned),
    )


def _dialogue(caption: str, cast_ids: tuple[int, ...]) -> Dialogue | None:
    """The first quotation of a panel's caption, said by whom the panel is about (its first cast
    member: Aldar Kose when he is in it). A rule of thumb: "the bai shouts at Aldar Kose: «…»"
    is given to Aldar Kose; the LLM planner names the speaker itself."""
    spans = _quote_spans(caption)
    if not spans or not cast_ids:
        return None
    start, end = spans[0]
    text = caption[start + 1:end - 1].strip()[:DIALOGUE_CHARS]
    return Dialogue(speaker=cast_ids[0], text=text) if text else None


# --------------------------------------------------------------------------- planner


class OfflinePlanner:
    """Keyword planner: deterministic, offline, English fields from EN/RU/KK stories."""

    name = "offline"

    def __init__(self, settings: PlannerSettings) -> None:
        self.settings = settings

    def make_plan(self, story: str, *, shots: int | None = None, seed: int = 0) -> PlanResult:
        return PlanResult(plan=self.plan(story, shots=shots, seed=seed), planner=self.name)

    def plan(self, story: str, *, shots: int | None = None, seed: int = 0) -> ShotList:
        """Plan ``shots`` shots, or a natural count in [min_shots, max_shots] when None.

        The same story, ``shots`` and ``seed`` always give the same plan. Seed 0 keeps
        each beat's preferred fallback pose; another seed rotates the fallbacks.
        """
        # 1. check inputs
        text = self._check(story, shots)
        language = detect_language(text)
        # 2. events
        sentences = split_sentences(text)
        count = shots if shots is not None else self._natural_count(len(sentences))
        groups = _fit_events(sentences, count)
        texts = [" ".join(group) for group in groups]
        # 3. facts and scenes; 4. who each event is about
        facts = [_read_facts(event, language) for event in texts]
        events = [
            _Event(text, fact, scene, roles)
            for text, fact, scene, roles in zip(texts, facts, _scenes(facts), _event_roles(groups, language))
        ]
        # 5. beats and shots
        slots = self._slots(events, _spread(texts, count), language)
        shots_made = self._shots(slots, seed)
        # 6. the story bible
        plan = _with_bible(_title(sentences[0]), language, shots_made)
        logger.debug(
            "offline plan: %d sentences -> %d events -> %d shots (%s)",
            len(sentences), len(events), count, language,
        )
        return plan

    def _check(self, story: str, shots: int | None) -> str:
        if not isinstance(story, str) or not story.strip():
            raise PlanError("story is empty")
        if not re.search(r"\w", story):
            raise PlanError("story has no words")
        is_count = isinstance(shots, int) and not isinstance(shots, bool)
        if shots is not None and not (is_count and MIN_FRAMES <= shots <= MAX_FRAMES):
            raise PlanError(f"shots must be between {MIN_FRAMES} and {MAX_FRAMES}, got {shots!r}")
        return story

    def _natural_count(self, sentences: int) -> int:
        return min(max(sentences, self.settings.min_shots), self.settings.max_shots)

    @staticmethod
    def _slots(events: list[_Event], spread: list[int], language: Language) -> list[_Slot]:
        """One panel per event with its own words, and the event's extras (after it, or before
        it for the last of several events), each extra with a caption no other panel has."""
        owners: list[tuple[int, bool]] = []  # (event, is its story panel)
        last = len(events) - 1
        for i, n in enumerate(spread):
            extras = [(i, False)] * (n - 1)
            owners += extras + [(i, True)] if i == last and last > 0 else [(i, True)] + extras
        new_place = [
            story and i > 0 and events[i].scene.setting != events[i - 1].scene.setting for i, story in owners
        ]
        beats = _beat_names(new_place)
        used = {_caption_key(event.text) for event in events}
        slots = []
        for index, ((i, story), beat) in enumerate(zip(owners, beats)):
            event = events[i]
            if story:
                take = _story_take(event, first=index == 0)
            else:
                take = OfflinePlanner._extra(event, BEATS[beat].framing, language, used, index + 1)
            used.add(_caption_key(take.caption))
            slots.append(_Slot(take, event.scene, beat, i))
        return slots

    @staticmethod
    def _extra(event: _Event, framing: str, language: Language, used: set[str], number: int) -> _Take:
        fresh = [take for take in _extra_takes(event, framing, language) if _caption_key(take.caption) not in used]
        if fresh:
            return fresh[0]
        hero, characters = _present(event)
        return _Take(PANEL_WORD.text(language).format(n=number), hero, characters, (), event.scene.setting)

    @staticmethod
    def _shots(slots: list[_Slot], seed: int) -> list[tuple[Shot, bool]]:
        rng = random.Random(seed) if seed else None
        shots: list[tuple[Shot, bool]] = []
        used: set[str] = set()
        previous: str | None = None
        event = None
        for index, slot in enumerate(slots, start=1):
            if slot.event != event:
                used, event = set(), slot.event
            pose, action = _pose_and_action(slot, used, previous, rng)
            used.add(pose)
            previous = pose
            shots.append((_shot(index, slot, pose, action), slot.take.hero))
        return shots
