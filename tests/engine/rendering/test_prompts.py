"""Shot -> SDXL prompts from the whole shot and the plan's bible, and the 77-token budget."""

from __future__ import annotations

import pytest

from engine.planning.offline.planner import OfflinePlanner
from engine.rendering.prompts import (
    CLIP_TOKEN_BUDGET,
    CUT_ORDER,
    Part,
    Prompt,
    build_prompt,
    estimate_clip_tokens,
    fit_parts,
    fit_prompt,
    fit_to_budget,
)
from engine.settings import PlannerSettings, PromptSettings
from engine.shots import HERO_ID, CastMember, Place, Shot, ShotList
from tests.tiny_models import real_clip_tokenizer


def shot(**fields) -> Shot:
    values = {"index": 1, "description": "Aldar Kose at the bazaar", "caption": "Алдар Көсе базарда.",
              "action": "haggles with the merchant", "setting": "bazaar", "framing": "close-up",
              "camera_angle": "eye-level", "pose": "talking", "emotion": "sly", "time_of_day": "day",
              "characters": ("merchant",), "props": ("pot",), **fields}
    return Shot(**values)


def test_the_subject_prompt_leads_with_the_trigger_and_the_scene_goes_to_prompt_2():
    prompt = build_prompt(shot(), PromptSettings())
    assert prompt.positive.startswith("aldar_kose_man, beardless young Kazakh man")
    assert "talking, haggles with the merchant" in prompt.positive
    assert "close-up portrait" in prompt.positive and "front view" in prompt.positive  # face bias
    assert prompt.positive_2.startswith("aldar_kose_man, in the bazaar, with merchant, in bright daylight")
    assert PromptSettings().style_suffix in prompt.positive_2 and prompt.positive_2.endswith("props: pot")
    assert prompt.negative == PromptSettings().negative_prompt
    assert "Алдар" not in prompt.positive + prompt.positive_2  # captions never reach SDXL


def test_face_bias_can_be_switched_off_and_wide_shots_keep_their_angle():
    assert "eye-level view" in build_prompt(shot(), PromptSettings(face_bias=False)).positive
    assert "eye-level view" in build_prompt(shot(framing="wide"), PromptSettings()).positive


def test_fit_to_budget_drops_trailing_parts_and_keeps_the_first():
    words = {"a": 10, "a, b": 20, "a, b, c": 30}
    assert fit_to_budget("a, b, c", lambda t: words[t], budget=25) == "a, b"
    assert fit_to_budget("a, b, c", lambda t: words[t], budget=5) == "a"
    assert fit_to_budget("a, b, c", lambda t: words[t], budget=30) == "a, b, c"


def test_fit_prompt_uses_each_encoders_counter():
    prompt = Prompt(positive="p1, p2", negative="n1", positive_2="s1, s2, s3")
    fitted = fit_prompt(prompt, lambda t: len(t.split(",")) * 10, lambda t: len(t.split(",")) * 40, budget=80)
    assert (fitted.positive, fitted.negative, fitted.positive_2) == ("p1, p2", "n1", "s1, s2")


def test_the_estimate_is_conservative_against_the_real_clip_tokenizer(tmp_path, stories):
    tokenizer = real_clip_tokenizer(tmp_path / "tok")

    def real(text: str) -> int:
        return len(tokenizer(text, verbose=False).input_ids)

    for story in stories.values():
        for planned in OfflinePlanner(PlannerSettings()).plan(story).shots:
            prompt = build_prompt(planned, PromptSettings())
            for text in (prompt.positive, prompt.positive_2, prompt.negative):
                assert estimate_clip_tokens(text) >= real(text), text
            fitted = fit_prompt(prompt)
            assert real(fitted.positive) <= CLIP_TOKEN_BUDGET


HERO_LOOK = PromptSettings().character
BAI = CastMember(id=1, name="бай", look="stout old bai, fox-fur coat, tall black hat, grey beard")
WIFE = CastMember(id=2, name="жена бая", look="bai's young wife, red velvet dress, silver earrings")
HORSE = CastMember(id=3, name="конь", look="shaggy bay steppe horse")
PALACE = Place(id=0, name="дворец", look="khan's palace courtyard, blue-tiled arches, fountains")
LAKE = Place(id=1, name="озеро", look="frozen lake, pale blue ice, snowy reeds")


def bible_plan() -> ShotList:
    shots = (
        shot(index=1, cast_ids=(0, 1), place_id=0, characters=("bai",)),
        shot(index=2, cast_ids=(0, 1, 2), place_id=0, characters=("bai", "old woman")),
        shot(index=3, cast_ids=(0, 3), place_id=1, setting="river", characters=("horse",), framing="wide"),
        shot(index=4, cast_ids=(2,), place_id=1, setting="river", characters=("old woman",)),
    )
    hero = CastMember(id=0, name="Алдар Косе", look=HERO_LOOK)
    return ShotList(title="Бай и конь", language="ru", cast=(hero, BAI, WIFE, HORSE), places=(PALACE, LAKE),
                    shots=shots)


def test_each_cast_look_and_place_look_is_written_word_for_word_in_every_frame_they_are_in():
    plan = bible_plan()
    prompts = {s.index: build_prompt(s, PromptSettings(), plan) for s in plan.shots}
    for s in plan.shots:
        prompt = prompts[s.index]
        assert plan.place(s.place_id).look in prompt.positive_2
        for member in plan.cast:
            text = prompt.positive + " | " + prompt.positive_2
            assert (member.look in text) == (member.id in s.cast_ids), (s.index, member.name)
    assert "with merchant" not in prompts[1].positive_2  # the bible's look, not the shot's bare noun


def test_a_panel_without_aldar_kose_leaves_out_the_trigger_and_leads_with_who_it_is_about():
    plan = bible_plan()
    prompt = build_prompt(plan.shots[3], PromptSettings(), plan)
    assert "aldar_kose_man" not in prompt.positive + prompt.positive_2
    assert prompt.positive.startswith(WIFE.look) and HERO_LOOK not in prompt.positive


def test_parts_are_cut_in_the_stated_order_and_the_subject_never():
    parts = tuple(Part(name, name) for name in ("subject", *reversed(CUT_ORDER)))
    for budget in range(len(parts), 0, -1):
        kept, cut = fit_parts(parts, lambda text: len(text.split(", ")), budget=budget)
        assert [p.name for p in cut] == list(CUT_ORDER[:len(parts) - max(budget, 1)])
        assert kept[0].name == "subject"


def test_what_is_cut_is_recorded_and_the_trigger_and_main_look_never_are(tmp_path, stories):
    """Every shot of every sample story, with the real CLIP tokenizer: each prompt fits its 77
    tokens, each part is either in the fitted text or listed as dropped (never both, never
    neither), and the trigger token and the hero's look are always kept."""
    tokenizer = real_clip_tokenizer(tmp_path / "tok")

    def real(text: str) -> int:
        return len(tokenizer(text, verbose=False).input_ids)

    cut_any = False
    wordy = PromptSettings(style_suffix="storybook illustration in the manner of old Kazakh lacquer boxes, "
                                        "gold leaf borders, hand-ground mineral pigments, visible brush texture, "
                                        "soft morning haze, delicate ink outlines, muted turquoise and ochre palette, "
                                        "intricate felt carpet ornaments in the margins")
    for story, settings in [(story, settings) for story in stories.values() for settings in (PromptSettings(), wordy)]:
        plan = OfflinePlanner(PlannerSettings()).plan(story)
        for planned in plan.shots:
            full = build_prompt(planned, settings, plan)
            fitted = fit_prompt(full, real, real)
            assert real(fitted.positive) <= CLIP_TOKEN_BUDGET and real(fitted.positive_2) <= CLIP_TOKEN_BUDGET
            for number, parts, text in ((1, full.parts, fitted.positive), (2, full.parts_2, fitted.positive_2)):
                dropped = {d.part for d in fitted.dropped if d.prompt == number}
                kept = {p.name for p in parts} - dropped
                assert text == ", ".join(p.text for p in parts if p.name in kept)
            if HERO_ID in planned.cast_ids:
                assert fitted.positive.startswith(f"aldar_kose_man, {settings.character}")
            else:  # a panel about somebody else leads with their look, never the trigger
                assert fitted.positive.startswith(plan.member(planned.cast_ids[0]).look)
            assert "subject" not in {d.part for d in fitted.dropped}
            cut_any = cut_any or bool(fitted.dropped)
    assert cut_any  # the wordy style pushes prompts over their budget: the cuts were exercised


@pytest.mark.parametrize("text", ["", "aldar_kose_man", "a, b, c"])
def test_estimate_counts_start_and_end(text):
    assert estimate_clip_tokens(text) >= 2 + len(text.replace(",", "").split())
