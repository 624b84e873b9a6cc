"""The eval's files: eval.json, eval.md's table, and the contact sheet of every board."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from engine.evaluation import outputs
from engine.evaluation.outputs import (
    METRIC_LEGEND,
    PAPER,
    SheetRow,
    contact_sheet,
    markdown_table,
    write_eval_json,
    write_eval_md,
)
from engine.evaluation.stats import METRICS, summarise_boards

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 180, 60)


def board(system: str, mode: str, story_id: str, **metrics: float | None) -> dict:
    return {"system": system, "mode": mode, "story_id": story_id, "seed": 0, "metrics": metrics}


@pytest.fixture
def summary() -> dict:
    return summarise_boards([
        board("ours", "simple", "en_01", clip_i=0.91, clip_t=0.30),
        board("ours", "simple", "en_02", clip_i=0.93, clip_t=0.32),
        board("StoryDiffusion", "default", "en_01", clip_i=0.85),
    ])


def picture(tmp_path, name: str, size: tuple[int, int], colour: tuple[int, int, int]):
    path = tmp_path / name
    Image.new("RGB", size, colour).save(path)
    return path


def open_sheet(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


def has_ink(region: np.ndarray) -> bool:
    """Anything drawn in the region: a pixel clearly off the paper colour."""
    return bool((np.abs(region - np.array(PAPER)).sum(axis=-1) > 60).any())


# --- eval.json ---

def test_eval_json_round_trips_and_keeps_cyrillic_readable(tmp_path):
    path = tmp_path / "out" / "eval.json"
    data = {"story": "Алдар Көсе және сараң бай", "summary": {"ours/simple": {"clip_i": {"mean": 0.9, "n": 2}}}}
    write_eval_json(path, data)
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == data
    assert "Алдар Көсе" in text and '\n  "summary"' in text  # not \u-escaped; indented by 2


def test_eval_json_refuses_nan_naming_where_it_is_and_leaves_the_old_file(tmp_path):
    path = tmp_path / "eval.json"
    write_eval_json(path, {"ok": 1})
    with pytest.raises(ValueError, match=r"summary\.ours/simple\.clip_i\.mean"):
        write_eval_json(path, {"summary": {"ours/simple": {"clip_i": {"mean": float("nan")}}}})
    with pytest.raises(ValueError, match=r"ci95\[1\]"):
        write_eval_json(path, {"ci95": [0.1, float("inf")]})
    assert json.loads(path.read_text(encoding="utf-8")) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]  # no temporary file left behind


# --- eval.md ---

def table_rows(text: str) -> list[list[str]]:
    """The first markdown table in ``text``, as cells (header first, the --- line left out)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return [rows[0], *rows[2:]]


def test_the_table_has_one_row_per_group_and_a_column_per_metric(summary):
    rows = table_rows(markdown_table(summary))
    assert rows[0] == ["system/mode", *METRICS]
    assert [row[0] for row in rows[1:]] == ["ours/simple", "StoryDiffusion/default"]
    assert all(len(row) == 1 + len(METRICS) for row in rows)


def test_a_cell_is_mean_plus_minus_std_and_an_empty_metric_a_dash(summary):
    header, ours, theirs = table_rows(markdown_table(summary))
    assert ours[header.index("clip_i")] == "0.920 ± 0.014"
    assert theirs[header.index("clip_i")] == "0.850 ± 0.000"
    assert theirs[header.index("clip_t")] == "–"
    assert ours[header.index("face_similarity")] == "–"


def test_the_intervals_follow_in_a_second_table(summary):
    text = markdown_table(summary)
    second = text[text.index("95% bootstrap"):]
    header, ours, theirs = table_rows(second)
    assert header == ["system/mode", *METRICS]
    assert ours[header.index("clip_i")].startswith("[0.91") and ours[header.index("clip_i")].endswith("n=2")
    assert theirs[header.index("clip_i")] == "[0.850, 0.850] n=1"
    assert theirs[header.index("clip_t")] == "–"


def test_the_legend_explains_every_metric_in_one_line_each(summary):
    text = markdown_table(summary)
    assert set(METRIC_LEGEND) == set(METRICS)
    for metric in METRICS:
        assert f"- `{metric}`: {METRIC_LEGEND[metric]}" in text.splitlines()
    assert "copy ceiling" in METRIC_LEGEND["copy_paste_rate"]


def test_a_pipe_in_a_system_name_does_not_split_the_row():
    rows = table_rows(markdown_table(summarise_boards([board("a|b", "x", "en_01", clip_i=0.5)])))
    assert rows[1][0] == "a\\|b/x" and len(rows[1]) == 1 + len(METRICS)


def test_eval_md_has_the_title_the_notes_and_the_table(tmp_path, summary):
    path = tmp_path / "eval.md"
    write_eval_md(path, summary, title="Eval: ours vs StoryDiffusion",
                  notes=["tiny models: these numbers only prove the plumbing", "3 seeds per story"])
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "# Eval: ours vs StoryDiffusion"
    assert "- tiny models: these numbers only prove the plumbing" in lines and "- 3 seeds per story" in lines
    assert len(table_rows(text)) == 3


# --- contact sheet ---

def sheet_of(tmp_path, rows, name="sheet.png", **kwargs) -> np.ndarray:
    return open_sheet(contact_sheet(rows, tmp_path / name, **kwargs))


@pytest.fixture
def frames(tmp_path) -> dict:
    return {"wide": picture(tmp_path, "wide.png", (300, 100), RED),
            "tall": picture(tmp_path, "tall.png", (100, 300), BLUE),
            "square": picture(tmp_path, "square.png", (64, 64), GREEN)}


def test_the_sheet_is_a_row_per_board_and_a_cell_per_frame_plus_the_label(tmp_path, frames):
    one = SheetRow("ours/simple · story en_01 · seed 0", [frames["wide"]], ["I .91"])
    three = SheetRow("ours/simple · story en_02 · seed 0", [frames["wide"], frames["tall"], frames["square"]])
    single = sheet_of(tmp_path, [one], "one.png", thumb=160)
    height, width = single.shape[:2]
    assert height > 160 and height - 160 < 60  # a thumbnail plus a line of scores
    stacked = sheet_of(tmp_path, [one, three, one], "stacked.png", thumb=160)
    assert stacked.shape[:2] == (3 * height, 2 * width)  # as wide as the widest row: label + 3 frames
    assert sheet_of(tmp_path, [SheetRow("x", [frames["wide"]])], "short_label.png").shape == single.shape


def test_thumbnails_keep_their_aspect_inside_the_box(tmp_path, frames):
    sheet = sheet_of(tmp_path, [SheetRow("aspects", [frames["wide"], frames["tall"], frames["square"]])], thumb=160)
    cell = sheet.shape[1] // 4
    wide, tall, square = (sheet[: cell, i * cell:(i + 1) * cell] for i in (1, 2, 3))
    middle = cell // 2
    assert tuple(wide[middle, middle]) == RED and not has_ink(wide[:20, :])  # letterboxed: paper above
    assert tuple(tall[middle, middle]) == BLUE and not has_ink(tall[:, :20])  # pillarboxed: paper beside
    assert tuple(square[10, middle]) == GREEN and tuple(square[middle, 10]) == GREEN  # small frames are enlarged


def test_a_shorter_row_leaves_its_missing_cells_blank(tmp_path, frames):
    rows = [SheetRow("one frame", [frames["square"]]), SheetRow("three", [frames["square"]] * 3)]
    sheet = sheet_of(tmp_path, rows)
    row_h, cell = sheet.shape[0] // 2, sheet.shape[1] // 4
    assert not has_ink(sheet[:row_h, 2 * cell:])
    assert has_ink(sheet[row_h:, 3 * cell:])


def test_the_label_is_drawn_including_kazakh_letters(tmp_path, frames):
    def label_cell(label: str, name: str) -> np.ndarray:
        sheet = sheet_of(tmp_path, [SheetRow(label, [frames["square"]])], name)
        return sheet[:, : sheet.shape[1] // 2]

    latin = label_cell("ours/simple · story en_01 · seed 3", "latin.png")
    assert has_ink(latin)
    # a font without these glyphs draws the same box for each: different letters must differ
    first, second = label_cell("әәә қққ", "kazakh1.png"), label_cell("ғғғ өөө", "kazakh2.png")
    assert has_ink(first) and has_ink(second) and not np.array_equal(first, second)


def test_scores_are_drawn_under_their_frame(tmp_path, frames):
    sheet = sheet_of(tmp_path, [SheetRow("scored", [frames["square"]] * 2, ["I .91 C .88 F .72", ""])], thumb=160)
    cell = sheet.shape[1] // 3
    strip = sheet[160 + 6:, :]  # below the thumbnails
    assert has_ink(strip[:, cell:2 * cell])
    assert not has_ink(strip[:, 2 * cell:])  # an empty score draws nothing


def test_an_empty_sheet_and_mismatched_scores_are_refused(tmp_path, frames):
    with pytest.raises(ValueError, match="at least one board"):
        contact_sheet([], tmp_path / "sheet.png")
    with pytest.raises(ValueError, match="2 score texts for 1 frames"):
        SheetRow("bad", [frames["square"]], ["I .9", "I .8"])


def test_the_sheet_is_capped_in_frames_and_rows(tmp_path, frames, monkeypatch, caplog):
    many = SheetRow("many", [frames["square"]] * (outputs.MAX_SHEET_FRAMES + 3))
    capped = sheet_of(tmp_path, [many], "frames.png")
    full = sheet_of(tmp_path, [SheetRow("full", [frames["square"]] * outputs.MAX_SHEET_FRAMES)], "full.png")
    assert capped.shape == full.shape
    monkeypatch.setattr(outputs, "MAX_SHEET_ROWS", 2)
    single = sheet_of(tmp_path, [SheetRow("r", [frames["square"]])], "single.png")
    with caplog.at_level(logging.WARNING):
        rows = sheet_of(tmp_path, [SheetRow(f"r{i}", [frames["square"]]) for i in range(5)], "rows.png")
    assert rows.shape[0] == 2 * single.shape[0]
    assert "only the first 2" in caplog.text


def test_an_unreadable_frame_is_a_grey_box_not_a_lost_sheet(tmp_path, frames, caplog):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    with caplog.at_level(logging.WARNING):
        sheet = sheet_of(tmp_path, [SheetRow("lost", [broken, tmp_path / "gone.png", frames["square"]])])
    cell = sheet.shape[1] // 4
    assert tuple(sheet[cell // 2, cell + cell // 2]) == outputs.MISSING
    assert "broken.png" in caplog.text and "gone.png" in caplog.text


def test_the_sheet_is_written_where_asked_and_its_path_returned(tmp_path, frames):
    target = tmp_path / "deep" / "er" / "sheet.png"
    assert contact_sheet([SheetRow("x", [frames["square"]])], target) == target
    assert target.is_file() and [p.name for p in target.parent.iterdir()] == ["sheet.png"]
