"""Shot -> SDXL prompt, and the 77-token budget, as pure functions."""

from __future__ import annotations

import pytest

from engine.planning.offline.planner import OfflinePlanner
from engine.rendering.prompts import CLIP_TOKEN_BUDGET, Prompt, build_prompt, estimate_clip_tokens, fit_prompt, fit_to_budget
from engine.settings import PlannerSettings, PromptSettings
from engine.shots import Shot
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
    assert prompt.positive_2.startswith("aldar_kose_man, in the bazaar in bright daylight")
    assert "with merchant" in prompt.positive_2 and PromptSettings().style_suffix in prompt.positive_2
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
            assert fitted.positive.startswith("aldar_kose_man")


@pytest.mark.parametrize("text", ["", "aldar_kose_man", "a, b, c"])
def test_estimate_counts_start_and_end(text):
    assert estimate_clip_tokens(text) >= 2 + len(text.replace(",", "").split())
