"""The eval's statistics: summaries of the board metrics, and paired comparisons of two runs."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from engine.evaluation.stats import METRICS, format_compare, paired_deltas, summarise, summarise_boards


def board(system: str, mode: str, story_id: str, seed: int | None, **metrics: float | None) -> dict:
    return {"system": system, "mode": mode, "story_id": story_id, "seed": seed, "metrics": metrics}


def run(values_of_story: dict[str, dict[str, float | None]], *, system: str = "ours", mode: str = "simple",
        seeds: tuple[int, ...] = (0, 1, 2)) -> list[dict]:
    return [board(system, mode, story, seed, **metrics) for story, metrics in values_of_story.items() for seed in seeds]


def noisy_run(count: int, *, shift: dict[str, float] | None = None, seed: int = 7) -> list[dict]:
    """``count`` boards with every metric drawn at random; the same seed gives the same boards."""
    rng = random.Random(seed)
    shift = shift or {}
    return [board("ours", "simple", f"en_{i:02d}", 0,
                  **{metric: rng.uniform(0.2, 0.9) + shift.get(metric, 0.0) for metric in METRICS})
            for i in range(count)]


# --- summarise ---

def test_summarise_gives_the_mean_the_sample_std_and_the_count():
    values = [0.8, 0.9, 1.0, 0.7]
    result = summarise(values)
    assert result["mean"] == pytest.approx(statistics.mean(values), abs=1e-4)
    assert result["std"] == pytest.approx(statistics.stdev(values), abs=1e-4)  # ddof=1
    assert result["n"] == 4


def test_the_interval_contains_the_mean_and_narrows_as_boards_are_added():
    rng = random.Random(3)
    few = [rng.gauss(0.8, 0.05) for _ in range(8)]
    many = few + [rng.gauss(0.8, 0.05) for _ in range(192)]
    narrow, wide = summarise(many), summarise(few)
    for result in (narrow, wide):
        lo, hi = result["ci95"]
        assert lo <= result["mean"] <= hi
    assert narrow["ci95"][1] - narrow["ci95"][0] < wide["ci95"][1] - wide["ci95"][0]


def test_none_values_are_skipped_and_not_counted():
    assert summarise([0.5, None, 0.7, None]) == summarise([0.5, 0.7])
    assert summarise([0.5, None, 0.7])["n"] == 2


def test_no_values_give_no_numbers():
    assert summarise([]) == {"mean": None, "std": None, "ci95": None, "n": 0}
    assert summarise([None, None]) == {"mean": None, "std": None, "ci95": None, "n": 0}


def test_one_value_has_std_zero_and_an_interval_of_itself():
    assert summarise([0.42]) == {"mean": 0.42, "std": 0.0, "ci95": [0.42, 0.42], "n": 1}


def test_equal_values_have_an_interval_of_exactly_that_value():
    assert summarise([0.1] * 7)["ci95"] == [0.1, 0.1]


def test_numbers_are_rounded_to_four_decimals_and_plain_json():
    result = summarise([0.123456789, 0.987654321, 0.5555555])
    for number in (result["mean"], result["std"], *result["ci95"]):
        assert type(number) is float
        assert number == round(number, 4)
    assert type(result["n"]) is int
    json.dumps(result, allow_nan=False)


def test_the_same_seed_gives_the_same_interval():
    rng = random.Random(5)
    values = [rng.random() for _ in range(30)]
    assert summarise(values, seed=1) == summarise(values, seed=1)
    assert summarise(values, seed=1)["mean"] == summarise(values, seed=2)["mean"]  # only the interval is resampled


def test_a_nan_is_refused_as_a_bug_not_skipped():
    with pytest.raises(ValueError, match="NaN"):
        summarise([0.5, float("nan")])


def test_resamples_must_be_positive():
    with pytest.raises(ValueError, match="resamples"):
        summarise([0.5, 0.6], resamples=0)


# --- summarise_boards ---

def test_boards_are_summarised_per_system_and_mode_in_the_order_they_first_appear():
    boards = [
        board("ours", "simple", "en_01", 0, clip_i=0.9),
        board("StoryDiffusion", "default", "en_01", 0, clip_i=0.7),
        board("ours", "simple", "en_02", 0, clip_i=0.8),
        board("ours", "rich", "en_01", 0, clip_i=0.6),
    ]
    summary = summarise_boards(boards)
    assert list(summary) == ["ours/simple", "StoryDiffusion/default", "ours/rich"]
    assert summary["ours/simple"]["clip_i"]["mean"] == pytest.approx(0.85)
    assert summary["ours/simple"]["clip_i"]["n"] == 2


def test_every_metric_is_in_the_summary_and_a_missing_one_counts_zero():
    summary = summarise_boards([board("ours", "simple", "en_01", 0, clip_i=0.9, copy_gap=None)])
    assert tuple(summary["ours/simple"]) == METRICS
    assert summary["ours/simple"]["copy_gap"]["n"] == 0
    assert summary["ours/simple"]["face_similarity"]["n"] == 0


def test_an_unknown_metric_name_is_warned_about(caplog):
    summarise_boards([board("ours", "simple", "en_01", 0, clip_eye=0.9)])
    assert "clip_eye" in caplog.text


# --- paired_deltas ---

def test_identical_runs_differ_significantly_in_nothing():
    a = noisy_run(20)
    deltas = paired_deltas(a, noisy_run(20))
    group = deltas["ours/simple"]
    assert set(group) == set(METRICS)
    for metric in METRICS:
        assert group[metric] == {"delta": 0.0, "ci95": [0.0, 0.0], "n": 20, "significant": False}
    assert deltas["unpaired"] == []


def test_a_metric_shifted_on_every_pair_is_significant_with_its_sign_and_size():
    a = noisy_run(15)
    b = noisy_run(15, shift={"clip_i": 0.05, "seconds_per_board": -0.2})
    group = paired_deltas(a, b)["ours/simple"]
    assert group["clip_i"]["significant"] and group["clip_i"]["delta"] == pytest.approx(0.05, abs=1e-4)
    assert group["seconds_per_board"]["significant"] and group["seconds_per_board"]["delta"] == pytest.approx(-0.2)
    assert group["clip_i"]["ci95"][0] > 0 and group["seconds_per_board"]["ci95"][1] < 0
    others = [m for m in METRICS if m not in ("clip_i", "seconds_per_board")]
    assert not any(group[m]["significant"] for m in others)


def test_independent_noise_between_runs_is_not_called_significant():
    a, b = noisy_run(30, seed=1), noisy_run(30, seed=1)
    rng = random.Random(9)
    for board_b in b:  # symmetric noise around the same values: no true difference
        board_b["metrics"]["clip_t"] += rng.choice((-0.01, 0.01))
    assert not paired_deltas(a, b)["ours/simple"]["clip_t"]["significant"]


def test_one_pair_is_never_significant():
    a = [board("ours", "simple", "en_01", 0, clip_i=0.5)]
    b = [board("ours", "simple", "en_01", 0, clip_i=0.9)]
    result = paired_deltas(a, b)["ours/simple"]["clip_i"]
    assert result["n"] == 1 and result["delta"] == pytest.approx(0.4) and not result["significant"]


def test_pairs_count_only_where_both_boards_have_the_metric():
    a = run({"en_01": {"face_similarity": 0.5}, "en_02": {"face_similarity": None}})
    b = run({"en_01": {"face_similarity": 0.6}, "en_02": {"face_similarity": 0.7}})
    result = paired_deltas(a, b)["ours/simple"]
    assert result["face_similarity"]["n"] == 3
    assert result["clip_i"] == {"delta": None, "ci95": None, "n": 0, "significant": False}


def test_boards_only_one_run_has_are_listed_as_unpaired_with_their_side():
    a = run({"en_01": {"clip_i": 0.5}, "en_02": {"clip_i": 0.5}}, seeds=(0,))
    b = run({"en_01": {"clip_i": 0.6}, "en_03": {"clip_i": 0.6}}, seeds=(0,))
    deltas = paired_deltas(a, b)
    assert deltas["unpaired"] == [
        {"system": "ours", "mode": "simple", "story_id": "en_02", "seed": 0, "side": "a"},
        {"system": "ours", "mode": "simple", "story_id": "en_03", "seed": 0, "side": "b"},
    ]
    assert deltas["ours/simple"]["clip_i"]["n"] == 1
    json.dumps(deltas, allow_nan=False)


def test_a_seed_differing_leaves_the_boards_unpaired():
    a = run({"en_01": {"clip_i": 0.5}}, seeds=(0,))
    b = run({"en_01": {"clip_i": 0.5}}, seeds=(1,))
    assert len(paired_deltas(a, b)["unpaired"]) == 2


def test_only_groups_in_both_runs_are_compared():
    a = run({"en_01": {"clip_i": 0.5}}) + run({"en_01": {"clip_i": 0.5}}, mode="rich")
    b = run({"en_01": {"clip_i": 0.6}})
    deltas = paired_deltas(a, b)
    assert [key for key in deltas if key != "unpaired"] == ["ours/simple"]
    assert {entry["mode"] for entry in deltas["unpaired"]} == {"rich"}


def test_a_board_given_twice_in_one_run_is_refused():
    twice = [board("ours", "simple", "en_01", 0, clip_i=0.5)] * 2
    with pytest.raises(ValueError, match="ambiguous"):
        paired_deltas(twice, twice)


# --- format_compare ---

def test_the_compare_lines_name_group_metric_delta_interval_count_and_verdict():
    a = noisy_run(12)
    b = noisy_run(12, shift={"clip_i": 0.0123})
    lines = format_compare(paired_deltas(a, b)).splitlines()
    clip_i = next(line for line in lines if line.split()[1] == "clip_i")
    assert clip_i.startswith("ours/simple")
    assert "delta +0.0123" in clip_i and "95% CI [+0.0123, +0.0123]" in clip_i and "n=12" in clip_i
    assert clip_i.endswith("  significant")
    clip_t = next(line for line in lines if line.split()[1] == "clip_t")
    assert clip_t.endswith("not significant") and "delta +0.0000" in clip_t
    assert len([line for line in lines if line.startswith("ours/simple")]) == len(METRICS)


def test_the_compare_columns_line_up():
    a = noisy_run(5) + run({"en_01": {"clip_i": 0.5}}, system="StoryDiffusion", mode="default")
    b = noisy_run(5, shift={"seconds_per_board": -12.5}) + run({"en_01": {"clip_i": 0.4}},
                                                                system="StoryDiffusion", mode="default")
    rows = [line for line in format_compare(paired_deltas(a, b)).splitlines() if "delta" in line]
    for word in ("delta", "95% CI", "n="):
        assert len({line.index(word) for line in rows}) == 1, word


def test_the_last_line_lists_the_significant_ones():
    lines = format_compare(paired_deltas(noisy_run(10), noisy_run(10, shift={"clip_t": -0.03}))).splitlines()
    assert lines[-1] == "significant: ours/simple clip_t (-0.0300)"


def test_the_last_line_says_when_none_is_significant():
    lines = format_compare(paired_deltas(noisy_run(10), noisy_run(10))).splitlines()
    assert lines[-1].startswith("significant: none")


def test_a_metric_without_pairs_shows_dashes():
    a = run({"en_01": {"clip_i": 0.5}})
    lines = format_compare(paired_deltas(a, a)).splitlines()
    face = next(line for line in lines if line.split()[1] == "face_similarity")
    assert "delta –" in face and "n=0" in face and face.endswith("not significant")


def test_unpaired_boards_are_mentioned():
    a = run({"en_01": {"clip_i": 0.5}, "en_02": {"clip_i": 0.5}})
    b = run({"en_01": {"clip_i": 0.5}})
    assert "3 boards without a partner" in format_compare(paired_deltas(a, b))
    assert "1 board without a partner" in format_compare(paired_deltas(a[:4], b))


def test_nothing_in_common_says_so():
    a = run({"en_01": {"clip_i": 0.5}})
    b = run({"en_01": {"clip_i": 0.5}}, system="other")
    assert "nothing to compare" in format_compare(paired_deltas(a, b))
