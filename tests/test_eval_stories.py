"""bench/eval_stories: the eval set that ``python -m bot eval`` scores boards of.

Twelve stories, four per language, each of which the offline planner (what a bot without an
LLM uses) must plan at 8 shots into a board with Aldar Kose and another person who recurs, a
close-up and a wide shot, and at least two places (bench/eval_stories/README.md).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

from engine.planning.offline.lexicon import CAST_LIKENESSES, HUMANS
from engine.planning.offline.planner import OfflinePlanner, split_sentences
from engine.settings import PlannerSettings
from engine.shots import HERO_ID, ShotList

REPO = Path(__file__).resolve().parents[1]
EVAL_DIR = REPO / "bench" / "eval_stories"
NAME = re.compile(r"^(en|ru|kk)_(0[1-4])_[a-z0-9_]+\.txt$")
HERO_NAME = {"en": "Aldar Kose", "ru": "Алдар Косе", "kk": "Алдар Көсе"}
KAZAKH_LETTERS = set("әғқңөұүһі")
SHOTS = 8


def story_paths() -> list[Path]:
    return sorted(EVAL_DIR.glob("*.txt"))


def people(language: str) -> set[str]:
    """The names the offline plan gives people (not animals) in ``language``."""
    return {CAST_LIKENESSES[cue.value].name(language) for cue in HUMANS}


@pytest.fixture(scope="module")
def planner() -> OfflinePlanner:
    return OfflinePlanner(PlannerSettings())


def plan_of(planner: OfflinePlanner, path: Path) -> ShotList:
    return planner.make_plan(path.read_text(encoding="utf-8"), shots=SHOTS, seed=0).plan


def test_twelve_stories_four_per_language() -> None:
    names = [path.name for path in story_paths()]
    assert len(names) == 12, names
    assert all(NAME.match(name) for name in names), [n for n in names if not NAME.match(n)]
    assert Counter(name[:2] for name in names) == {"en": 4, "ru": 4, "kk": 4}
    for language in ("en", "ru", "kk"):
        numbers = sorted(NAME.match(n).group(2) for n in names if n.startswith(language + "_"))
        assert numbers == ["01", "02", "03", "04"], (language, numbers)
    assert (EVAL_DIR / "README.md").is_file()


def test_the_set_is_kept_apart_from_the_sample_stories() -> None:
    """No eval story is one of ../shared/stories (checked where that folder is checked out)."""
    folders = [REPO.parent / "shared" / "stories"]
    if os.environ.get("STORIES_DIR"):
        folders.append(Path(os.environ["STORIES_DIR"]))
    samples = {" ".join(p.read_text(encoding="utf-8").split()) for f in folders if f.is_dir() for p in f.glob("*.txt")}
    for path in story_paths():
        assert " ".join(path.read_text(encoding="utf-8").split()) not in samples, path.name


@pytest.mark.parametrize("path", story_paths(), ids=lambda path: path.name)
def test_story_text(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    language = path.name[:2]
    assert HERO_NAME[language] in text, f"{path.name} does not name {HERO_NAME[language]}"
    if language == "kk":
        assert KAZAKH_LETTERS & set(text.lower()), path.name
    if language == "ru":
        assert not KAZAKH_LETTERS & set(text.lower()), path.name
    assert 4 <= len(split_sentences(text)) <= SHOTS, "a few sentences, one beat each"
    assert re.search(r"«[^»]+»|“[^”]+”|\"[^\"]+\"", text), f"{path.name} has no quoted line"


@pytest.mark.parametrize("path", story_paths(), ids=lambda path: path.name)
def test_offline_plan_of_the_story(planner: OfflinePlanner, path: Path) -> None:
    plan = plan_of(planner, path)
    language = path.name[:2]
    assert plan.language == language
    assert len(plan.shots) == SHOTS

    # the cast: Aldar Kose and at least one other person, in at least two shots
    assert len(plan.cast) >= 2, [m.name for m in plan.cast]
    assert plan.member(HERO_ID).name == HERO_NAME[language]
    shots_with = Counter(i for shot in plan.shots for i in set(shot.cast_ids))
    recurring = [m.name for m in plan.cast
                 if m.id != HERO_ID and m.name in people(language) and shots_with[m.id] >= 2]
    assert recurring, f"no person besides Aldar Kose in two shots: {[(m.name, shots_with[m.id]) for m in plan.cast]}"
    assert shots_with[HERO_ID] >= SHOTS // 2

    # framing: a close-up and a wide shot
    framings = {shot.framing for shot in plan.shots}
    assert {"close-up", "wide"} <= framings, framings

    # a change of place
    places = {shot.place_id for shot in plan.shots}
    assert None not in places
    assert len(places) >= 2, [p.name for p in plan.places]

    # the quoted line reaches the board
    assert any(shot.dialogue is not None for shot in plan.shots)
