"""The offline planner: a story in, a ``ShotList`` out, with no network and no model.

``OfflinePlanner`` implements ``engine.planning.base.Planner`` with nothing beyond the
standard library and pydantic:

1. split the story into sentences (". ! ? …", quotes and line breaks);
2. fit them to the shot count: merge neighbouring sentences of a long story, split a
   short one at its commas, and let one event span several beats when it is still short;
3. read each event's English structured fields (place, time of day, verbs, emotions,
   characters, props) from keyword tables in English, Russian and Kazakh (engine/planning/offline/lexicon.py);
4. carry the place, time of day and cast over from the previous event when a sentence
   names none (a story stays in one place until it moves);
5. give every shot a beat (establishing, medium, close-up, action, reaction, closing)
   that decides framing and camera angle and, when the story gives no verb, the pose.

Captions are the story's own words with whitespace collapsed, never translated.
Animals are listed in ``characters`` (they share the frame with Aldar Kose); objects
go to ``props``. Keyword stems match at the start of a word after NFKC, casefolding and
"ё"→"е", so inflected Russian and Kazakh forms match; a stem ending in "$" matches a
whole word only.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass

from engine.limits import MAX_FRAMES, MIN_FRAMES
from engine.planning.base import PlanError, PlanResult
from engine.planning.language import detect_language
from engine.planning.offline.lexicon import (
    ANIMALS,
    EMOTIONS,
    HUMANS,
    NEGATIONS,
    PLACES,
    PROPS,
    TIMES,
    VERBS,
    WINTER,
    Cue,
    Verb,
    fold,
)
from engine.settings import PlannerSettings
from engine.shots import Language, Shot, ShotList

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


def _scenes(facts: list[_Facts]) -> list[_Scene]:
    """Resolve place, time and cast per event, carrying each over until the story changes it."""
    place = next((f.place for f in facts if f.place), "steppe")
    time_of_day, winter, humans = "day", False, ()
    scenes = []
    for fact in facts:
        moved = fact.place is not None and fact.place != place
        place = fact.place or place
        time_of_day = fact.time_of_day or time_of_day
        winter = winter or fact.winter
        humans = fact.humans or (() if moved else humans)
        setting = "winter steppe" if winter and place == "steppe" else place
        scenes.append(_Scene(setting, time_of_day, humans))
    return scenes


# --------------------------------------------------------------------------- text


_TERMINAL = re.compile(r"[.!?…]+[\"'»”’)\]]*(?=\s)")
_CLAUSE = re.compile(r"[,;:](?=\s)| (?=[—–] )")
_OPENERS = "\"'«“„‘([—–-•* "
_BULLET = re.compile(r"^[-*•]\s+")


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _starts_sentence(text: str) -> bool:
    head = text.lstrip(_OPENERS)
    return bool(head) and (head[0].isupper() or head[0].isdigit())


def split_sentences(story: str) -> list[str]:
    """The story's sentences with whitespace collapsed, in order."""
    sentences: list[str] = []
    for block in _blocks(story):
        sentences.extend(_split_block(block))
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
    sentences, start = [], 0
    for match in _TERMINAL.finditer(block):
        if _starts_sentence(block[match.end() :]):
            sentences.append(block[start : match.end()].strip())
            start = match.end()
    tail = block[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def _split_clause(sentence: str) -> tuple[str, str] | None:
    """Split a sentence at the clause break nearest its middle, or None if none is long enough."""
    middle = len(sentence) / 2
    best: tuple[float, str, str] | None = None
    for match in _CLAUSE.finditer(sentence):
        left, right = sentence[: match.end()].strip(), sentence[match.end() :].strip()
        if min(_word_count(left), _word_count(right)) < 3:
            continue
        distance = abs(match.end() - middle)
        if best is None or distance < best[0]:
            best = (distance, left, right)
    return (best[1], best[2]) if best else None


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


def _fit_events(sentences: list[str], count: int) -> list[str]:
    """Merge or split sentences so that there are at most ``count`` events (fewer only if unsplittable)."""
    events = list(sentences)
    if len(events) > count:
        return _merge_events(events, count)
    while len(events) < count:
        order = sorted(range(len(events)), key=lambda i: (-len(events[i]), i))
        for index in order:
            parts = _split_clause(events[index])
            if parts:
                events[index : index + 1] = list(parts)
                break
        else:
            break
    return events


def _merge_events(events: list[str], count: int) -> list[str]:
    """Merge neighbours, shortest pair first, until ``count`` remain; first and last survive."""
    if len(events) > 4 * count:
        events = _chunk_evenly(events, 4 * count)
    while len(events) > count:
        index = min(range(len(events) - 1), key=lambda i: (len(events[i]) + len(events[i + 1]), i))
        events[index : index + 2] = [events[index] + " " + events[index + 1]]
    return events


def _chunk_evenly(events: list[str], count: int) -> list[str]:
    bounds = [round(i * len(events) / count) for i in range(count + 1)]
    return [" ".join(events[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]


def _spread(events: list[str], count: int) -> list[int]:
    """How many shots each event gets: ``count`` in all, extras to the longest events."""
    base, extra = divmod(count, len(events))
    longest = set(sorted(range(len(events)), key=lambda i: (-len(events[i]), i))[:extra])
    return [base + (i in longest) for i in range(len(events))]


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
    """One shot to fill: its event, its place within the event, and its beat."""

    caption: str
    facts: _Facts
    scene: _Scene
    nth: int  # 0-based position among the event's shots
    beat: str


def _fill(template: str, other: str | None, thing: str | None) -> str | None:
    if "{other}" in template and not other:
        return None
    if "{thing}" in template and not thing:
        return None
    return template.format(other=f"the {other}" if other else "", thing=f"the {thing}" if thing else "")


def _pose_and_action(
    slot: _Slot, used: set[str], previous: str | None, rng: random.Random | None
) -> tuple[str, str]:
    """The event's own verb for this shot, else the beat's first fallback not used yet in the event."""
    other = slot.scene.humans[0] if slot.scene.humans else None
    things = slot.facts.props + slot.facts.animals
    thing = things[0] if things else None
    if slot.nth < len(slot.facts.verbs):
        verb = slot.facts.verbs[slot.nth]
        return verb.pose, _fill(verb.value, other, thing) or verb.alone
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


def _describe(
    pose: str, action: str, scene: _Scene, characters: tuple[str, ...], props: tuple[str, ...]
) -> str:
    line = f"{HERO}, {pose}, {action} {_PLACE_PHRASE[scene.setting]} {_TIME_PHRASE[scene.time_of_day]}"
    if characters or props:
        line += ", with " + _noun_list(characters + props)
    return line


def _shot(index: int, slot: _Slot, pose: str, action: str) -> Shot:
    beat = BEATS[slot.beat]
    facts = slot.facts
    characters = (slot.scene.humans + facts.animals)[:MAX_CHARACTERS]
    props = facts.props[:MAX_PROPS]
    emotion = facts.emotions[slot.nth] if slot.nth < len(facts.emotions) else beat.emotion
    return Shot(
        index=index,
        description=_describe(pose, action, slot.scene, characters, props),
        caption=slot.caption,
        action=action,
        setting=slot.scene.setting,
        framing=beat.framing,
        camera_angle=beat.camera_angle,
        pose=pose,
        emotion=emotion,
        time_of_day=slot.scene.time_of_day,
        characters=characters,
        props=props,
    )


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
        events = _fit_events(sentences, count)
        # 3. facts and scenes
        facts = [_read_facts(event, language) for event in events]
        scenes = _scenes(facts)
        # 4. beats and shots
        slots = self._slots(events, facts, scenes, _spread(events, count))
        plan = ShotList(title=_title(sentences[0]), language=language, shots=self._shots(slots, seed))
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
    def _slots(
        events: list[str], facts: list[_Facts], scenes: list[_Scene], spread: list[int]
    ) -> list[_Slot]:
        owners = [(i, nth) for i, n in enumerate(spread) for nth in range(n)]
        new_place = [
            nth == 0 and i > 0 and scenes[i].setting != scenes[i - 1].setting for i, nth in owners
        ]
        beats = _beat_names(new_place)
        return [
            _Slot(events[i], facts[i], scenes[i], nth, beat) for (i, nth), beat in zip(owners, beats)
        ]

    @staticmethod
    def _shots(slots: list[_Slot], seed: int) -> tuple[Shot, ...]:
        rng = random.Random(seed) if seed else None
        shots: list[Shot] = []
        used: set[str] = set()
        previous: str | None = None
        for index, slot in enumerate(slots, start=1):
            if slot.nth == 0:
                used = set()
            pose, action = _pose_and_action(slot, used, previous, rng)
            used.add(pose)
            previous = pose
            shots.append(_shot(index, slot, pose, action))
        return tuple(shots)
