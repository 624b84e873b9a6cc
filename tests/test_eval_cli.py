"""``python -m bot eval`` end to end on the tiny models: render and score, score again, compare.

The tiny SDXL and CLIP have random weights, so the numbers prove only the plumbing (README)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bot.__main__ import main
from bot.eval_cli import EVAL_STORIES
from engine.evaluation.stats import METRICS

TINY_CLIP_COPY_CEILING = 0.999  # the tiny CLIP puts any two frames within 0.995; a copy is 1.0
MEASURED_ON_EVERY_BOARD = ("clip_i", "clip_i_pairwise", "clip_t", "copy_paste_rate", "copy_gap", "crop_found_rate",
                           "face_found_rate", "rerolls_per_frame", "accepted_rate", "seconds_per_board")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, tiny_sdxl_dir, tiny_clip_dir) -> Path:
    """Two eval stories, two seeds, drawn by the tiny SDXL and scored once."""
    root = tmp_path_factory.mktemp("eval")
    stories = root / "stories"
    stories.mkdir()
    for path in sorted(EVAL_STORIES.glob("*.txt"))[:2]:
        shutil.copy(path, stories / path.name)
    assert main(["eval", "--stories", str(stories), "--seeds", "2", "--frames", "2", "--out", str(root / "run"),
                 "--renderer", "sdxl", "--base-model", str(tiny_sdxl_dir), "--size", "64x64", "--steps", "2",
                 "--check-clip-model", str(tiny_clip_dir), "--clip-model", str(tiny_clip_dir), "--copy-ceiling", str(TINY_CLIP_COPY_CEILING)]) == 0
    return root / "run"


def read(folder: Path) -> dict:
    return json.loads((folder / "eval.json").read_text(encoding="utf-8"))


def test_render_and_score_writes_the_table_the_json_and_the_contact_sheet(rendered, capsys):
    data = read(rendered)
    assert [(b["system"], b["mode"], b["seed"]) for b in data["boards"]] == [("ours", "simple", s) for s in (0, 1)] * 2
    summary = data["summary"]["ours/simple"]
    assert set(summary) == set(METRICS)
    for metric, stats in summary.items():
        assert stats["mean"] is None or math.isfinite(stats["mean"]), metric
    for metric in MEASURED_ON_EVERY_BOARD:
        assert summary[metric]["n"] == 4 and math.isfinite(summary[metric]["mean"]), metric
    table = (rendered / "eval.md").read_text(encoding="utf-8")
    assert "| ours/simple |" in table and all(metric in table for metric in METRICS)
    sheet = Image.open(rendered / "contact_sheet.png")
    assert sheet.height > 4 * 64  # one row per board
    assert all(Path(b["source"], "report.json").is_file() for b in data["boards"])


def test_boards_scored_again_give_the_same_numbers_and_compare_finds_no_difference(rendered, tiny_clip_dir, capsys):
    again = rendered.parent / "again"
    assert main(["eval", "--boards", str(rendered / "boards"), "--out", str(again), "--clip-model", str(tiny_clip_dir),
                 "--copy-ceiling", str(TINY_CLIP_COPY_CEILING)]) == 0
    assert read(again)["summary"] == read(rendered)["summary"]
    frames = [frame for board in read(again)["boards"] for frame in board["frames"] if frame["hero"]]
    assert frames and {frame["face_from"] for frame in frames} == {"check"}  # the boards' own face records
    capsys.readouterr()
    assert main(["eval", "--compare", str(rendered / "eval.json"), str(again / "eval.json")]) == 0
    assert "significant: none" in capsys.readouterr().out


def test_compare_finds_the_copy_paste_of_a_doctored_run(rendered, tiny_clip_dir, capsys):
    doctored = rendered.parent / "doctored"
    shutil.copytree(rendered / "boards", doctored / "boards")
    for report in (doctored / "boards").rglob("report.json"):
        frames = json.loads(report.read_text(encoding="utf-8"))["frames"]
        for frame in frames[1:]:  # every later frame replaced by frame 1, the reference: a copy
            shutil.copy(report.parent / frames[0]["file"], report.parent / frame["file"])
    assert main(["eval", "--boards", str(doctored / "boards"), "--out", str(doctored), "--clip-model",
                 str(tiny_clip_dir), "--copy-ceiling", str(TINY_CLIP_COPY_CEILING)]) == 0
    assert read(doctored)["summary"]["ours/simple"]["copy_paste_rate"]["mean"] == 1.0
    replaced = [board["frames"][1] for board in read(doctored)["boards"]]
    assert {frame["face_from"] for frame in replaced} == {"eval"}  # a record of the old pixels is not trusted
    capsys.readouterr()
    assert main(["eval", "--compare", str(rendered / "eval.json"), str(doctored / "eval.json")]) == 0
    out = capsys.readouterr().out
    significant = out.splitlines()[-1]
    assert "copy_paste_rate" in significant and "ours/simple" in significant


def test_without_a_metric_clip_it_says_which_flag_to_give(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALDAR__ENGINE__CLIP_MODEL", "")  # no identity-check model to fall back on either
    assert main(["eval", "--boards", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--clip-model" in capsys.readouterr().err
