"""Offline planner: the story bible (cast and places) as a user sees it in the plan JSON."""

from __future__ import annotations

import re

import pytest

from engine.planning.offline.lexicon import ANIMALS, CAST_LIKENESSES, HUMANS, PLACE_LIKENESSES, PLACES
from engine.planning.offline.planner import OfflinePlanner
from engine.settings import PlannerSettings
from engine.shots import NAME_CHARS, SETTINGS, ShotList
from tests.engine.planning.test_plan import story, story_names

CYRILLIC = re.compile(r"[\u0400-\u052f]")
COUNTS = range(6, 11)


@pytest.fixture
def planner() -> OfflinePlanner:
    return OfflinePlanner(PlannerSettings())


def plan_json(planner: OfflinePlanner, text: str, shots: int | None = None) -> dict:
    return planner.plan(text, shots=shots).model_dump(mode="json")


def all_plans(planner: OfflinePlanner) -> list[tuple[str, int | None, dict]]:
    """Every sample story at its natural count and at every count from 6 to 10."""
    return [
        (name, count, plan_json(planner, story(name), count))
        for name in story_names()
        for count in (None, *COUNTS)
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("en_merchant.txt", "merchant"),
        ("en_fur_coat.txt", "bai"),
        ("en_fur_coat.txt", "merchant"),
        ("ru_bai.txt", "bai"),
        ("kk_kozha.txt", "bai"),
    ],
)
def test_the_bai_or_the_merchant_is_cast_and_referred_to_by_id(
    planner: OfflinePlanner, name: str, value: str
) -> None:
    plan = plan_json(planner, story(name))
    likeness = CAST_LIKENESSES[value]
    members = [m for m in plan["cast"] if m["look"] == likeness.look]
    assert len(members) == 1, plan["cast"]
    member = members[0]
    assert member["id"] != 0
    assert value in member["look"].split(", ")[0], "the look says who it is"
    assert member["name"] == likeness.name(plan["language"])
    if plan["language"] == "en":
        assert member["name"].isascii()
    else:
        assert CYRILLIC.search(member["name"]), member
    with_them = [shot for shot in plan["shots"] if value in shot["characters"]]
    assert with_them, "the story's shots show them"
    for shot in with_them:
        assert member["id"] in shot["cast_ids"], shot


@pytest.mark.parametrize("name", story_names())
def test_the_hero_is_cast_member_zero_in_the_storys_language(planner: OfflinePlanner, name: str) -> None:
    plan = plan_json(planner, story(name))
    hero = plan["cast"][0]
    assert hero["id"] == 0
    assert {"en": "Aldar Kose", "ru": "Алдар Косе", "kk": "Алдар Көсе"}[plan["language"]] == hero["name"]
    assert plan["shots"][0]["cast_ids"][:1] == [0], "shot 1, the identity reference, has him"
    assert all(shot["cast_ids"][:1] == [0] for shot in plan["shots"] if 0 in shot["cast_ids"]), "he is listed first"


def test_every_count_from_six_to_ten_gives_a_valid_plan(planner: OfflinePlanner) -> None:
    for name, count, plan in all_plans(planner):
        if count is not None:
            assert len(plan["shots"]) == count, name
        ShotList.model_validate(plan)  # the bible validator: ids unique, every id in the bible
        assert plan["cast"][0]["id"] == 0, (name, count)
        assert plan["places"], (name, count)


def test_every_shot_is_set_in_a_place_of_the_plan_that_looks_like_its_setting(planner: OfflinePlanner) -> None:
    for name, count, plan in all_plans(planner):
        places = {place["id"]: place for place in plan["places"]}
        assert sorted(places) == list(range(len(places))), (name, count)
        for shot in plan["shots"]:
            assert shot["place_id"] in places, (name, count, shot["index"])
            assert places[shot["place_id"]]["look"] == PLACE_LIKENESSES[shot["setting"]].look
        used = {shot["place_id"] for shot in plan["shots"]}
        assert used == set(places), "every place is shown"


def test_the_winter_steppe_is_drawn_under_snow(planner: OfflinePlanner) -> None:
    plan = plan_json(planner, story("kk_kozha.txt"))
    first = next(p for p in plan["places"] if p["id"] == plan["shots"][0]["place_id"])
    assert plan["shots"][0]["setting"] == "winter steppe"
    assert "snow" in first["look"]


def test_the_same_character_gets_one_id_across_the_board(planner: OfflinePlanner) -> None:
    for name, count, plan in all_plans(planner):
        looks = [member["look"] for member in plan["cast"]]
        assert len(set(looks)) == len(looks), (name, count, looks)
        ids_of: dict[str, set[int]] = {}
        for shot in plan["shots"]:
            others = [cast_id for cast_id in shot["cast_ids"] if cast_id != 0]  # Aldar Kose, when in it, and the others
            assert len(others) == len(shot["characters"]) and len(shot["cast_ids"]) - len(others) <= 1, shot
            for character, cast_id in zip(shot["characters"], others):
                ids_of.setdefault(character, set()).add(cast_id)
        assert all(len(ids) == 1 for ids in ids_of.values()), (name, count, ids_of)
        looks_by_id = {member["id"]: member["look"] for member in plan["cast"]}
        for character, (cast_id,) in ids_of.items():
            assert looks_by_id[cast_id] == CAST_LIKENESSES[character].look
        assert len(plan["cast"]) == 1 + len(ids_of), "one entry per character on the board, plus the hero"


def test_cast_ids_follow_the_order_of_first_appearance(planner: OfflinePlanner) -> None:
    for name, count, plan in all_plans(planner):
        seen: list[int] = []
        for shot in plan["shots"]:
            seen += [cast_id for cast_id in shot["cast_ids"] if cast_id not in seen]
        assert seen == [member["id"] for member in plan["cast"]] == list(range(len(plan["cast"]))), (name, count)


def test_a_character_who_comes_in_late_gets_a_new_id(planner: OfflinePlanner) -> None:
    plan = plan_json(planner, story("en_fur_coat.txt"))
    by_look = {member["look"]: member["id"] for member in plan["cast"]}
    assert by_look[CAST_LIKENESSES["bai"].look] < by_look[CAST_LIKENESSES["merchant"].look]
    last = plan["shots"][-1]
    assert "merchant" in last["characters"]
    assert by_look[CAST_LIKENESSES["merchant"].look] in last["cast_ids"]


@pytest.mark.parametrize(
    ("text", "language", "name"),
    [
        ("Aldar Kose met a greedy merchant. He laughed and told him a tale.", "en", "the steppe"),
        ("Алдар Косе встретил купца. Он рассмеялся и рассказал ему сказку.", "ru", "степь"),
    ],
)
def test_a_story_with_no_place_word_still_has_one_place(
    planner: OfflinePlanner, text: str, language: str, name: str
) -> None:
    plan = plan_json(planner, text, 6)
    assert plan["language"] == language
    assert len(plan["places"]) == 1
    (place,) = plan["places"]
    assert place["name"] == name and place["look"]
    assert all(shot["place_id"] == place["id"] for shot in plan["shots"])
    assert any(member["look"] == CAST_LIKENESSES["merchant"].look for member in plan["cast"])


def test_the_lexicon_names_and_draws_every_character_and_place() -> None:
    """A translator who adds a person, an animal or a place must give it a likeness too."""
    assert {cue.value for cue in HUMANS + ANIMALS} <= set(CAST_LIKENESSES)
    assert {cue.value for cue in PLACES} | set(SETTINGS) <= set(PLACE_LIKENESSES)
    for value, likeness in {**CAST_LIKENESSES, **PLACE_LIKENESSES}.items():
        assert likeness.look.isascii() and 0 < len(likeness.look) <= 100, value
        assert likeness.en.isascii(), value
        for language in ("en", "ru", "kk"):
            assert 0 < len(likeness.name(language)) <= NAME_CHARS, (value, language)
        assert CYRILLIC.search(likeness.ru) and CYRILLIC.search(likeness.kk), value
