"""pick-checkpoint's judgement: identity without copy-paste winning, checkpoints that learned
nothing or are broken never picked, and the CSV and contact sheet a person reads."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from engine.training.pick import BASE_ROW, PickError, Row, combine, contact_sheet, pick_checkpoint, table
from engine.settings import PickSettings, TrainSettings
from engine.training.train import LORA_FILE, TrainJob, train_lora
from tests.helpers import draw_character

SMALL = PickSettings(resolution=64, steps=2, seeds=[1])


def test_a_copy_counts_no_identity() -> None:
    settings = PickSettings(copy_ceiling=0.95, clip_t_weight=1.0)
    honest = combine([0.80, 0.82], nearest=[0.85, 0.86], clip_ts=[0.30, 0.30], settings=settings)
    copier = combine([0.97, 0.99], nearest=[0.98, 0.99], clip_ts=[0.30, 0.30], settings=settings)
    assert honest[2] == 0 and copier[2] == 2
    assert honest[3] > copier[3]  # memorising the training pictures loses
    assert copier[0] == 0.0


def test_prompt_fidelity_counts_by_its_weight() -> None:
    weighted = combine([0.8], [0.8], [0.3], PickSettings(clip_t_weight=2.0))
    assert weighted[3] == pytest.approx(0.8 + 2.0 * 0.3)


def test_the_table_and_sheet_mark_the_best() -> None:
    render = Image.new("RGB", (64, 64), "red")
    rows = [Row(BASE_ROW, None, 0.5, 0.2, 0, combined=0.7, renders=[render] * 4),
            Row("checkpoint-2", 2, 0.6, 0.2, 0, 12.0, 0.8, renders=[render] * 4),
            Row("checkpoint-4", 4, note="non-finite weights in 3 tensor(s)")]
    text = table(rows, rows[1])
    assert text.splitlines()[2].startswith("*  checkpoint-2") and "non-finite" in text.splitlines()[3]
    sheet = contact_sheet(rows, rows[1], ["a", "b", "c", "d"], cell=32)
    assert sheet.size == (220 + 4 * 36, 3 * 36)
    assert sheet.getpixel((220 + 5, 36 + 5)) == (255, 0, 0)  # checkpoint-2's first render


@pytest.fixture(scope="module")
def trained(tiny_sdxl_dir, tmp_path_factory) -> Path:
    """checkpoint-3 trained; checkpoint-2 is checkpoint-3 with every weight zeroed (it learned nothing)."""
    root = tmp_path_factory.mktemp("pick")
    for index in range(4):
        draw_character(root / "pictures" / f"aldar_{index}.png", index)
    settings = TrainSettings(resolution=64, steps=3, checkpoint_every=3, rank=4, alpha=4.0, warmup_steps=0,
                             learning_rate=1e-2)
    train_lora(TrainJob(root / "pictures", str(tiny_sdxl_dir), root / "out", settings), show_progress=False)
    damaged = root / "out" / "checkpoint-2"
    shutil.copytree(root / "out" / "checkpoint-3", damaged)
    weights = load_file(damaged / LORA_FILE)
    save_file({key: torch.zeros_like(value) for key, value in weights.items()}, damaged / LORA_FILE)
    return root / "out"


def test_the_undamaged_checkpoint_wins_and_is_written_down(trained, tiny_sdxl_dir, tiny_clip_dir) -> None:
    result = pick_checkpoint(trained, base_model=str(tiny_sdxl_dir), clip_model=str(tiny_clip_dir), settings=SMALL)
    by_name = {row.name: row for row in result.rows}
    assert list(by_name) == [BASE_ROW, "checkpoint-2", "checkpoint-3"]
    assert result.best is by_name["checkpoint-3"]
    assert by_name["checkpoint-2"].effect == 0.0 and by_name["checkpoint-2"].note.startswith("no effect")
    assert by_name["checkpoint-3"].effect > 1.0
    with result.csv_path.open(encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))
    assert [(line["checkpoint"], line["best"]) for line in lines] == [
        (BASE_ROW, ""), ("checkpoint-2", ""), ("checkpoint-3", "yes")]
    assert float(lines[2]["combined"]) == pytest.approx(by_name["checkpoint-3"].combined, abs=1e-4)
    with Image.open(result.sheet_path) as sheet:
        assert sheet.size[1] == 3 * (160 + 4)  # a row per checkpoint and one for the base model


def test_broken_weights_are_reported_not_picked(trained, tiny_sdxl_dir, tiny_clip_dir, tmp_path) -> None:
    out = tmp_path / "out"
    shutil.copytree(trained / "checkpoint-3", out / "checkpoint-3")
    shutil.copytree(trained / "checkpoint-3", out / "checkpoint-5")
    weights = load_file(out / "checkpoint-5" / LORA_FILE)
    save_file({key: torch.full_like(value, float("nan")) for key, value in weights.items()},
              out / "checkpoint-5" / LORA_FILE)
    result = pick_checkpoint(out, base_model=str(tiny_sdxl_dir), clip_model=str(tiny_clip_dir), settings=SMALL)
    assert result.best.name == "checkpoint-3"
    assert result.rows[-1].note.startswith("non-finite weights")


def test_no_checkpoints_is_a_clear_error(tmp_path, tiny_sdxl_dir, tiny_clip_dir) -> None:
    with pytest.raises(PickError, match="no checkpoint-N folders in"):
        pick_checkpoint(tmp_path, base_model=str(tiny_sdxl_dir), clip_model=str(tiny_clip_dir), settings=SMALL)


def test_identity_can_use_the_engines_face_check(trained, tiny_sdxl_dir, tiny_clip_dir) -> None:
    from engine.training.pick import Judge

    picture = Image.new("RGB", (64, 64), "white")
    judge = Judge(str(tiny_sdxl_dir), str(tiny_clip_dir), SMALL, "aldar_kose_man", [picture], device="cpu",
                  face_check=True)
    assert judge.scorer.name == "clip+face"
    assert judge.loader.sources["validation.face_check"]  # dlib's models, loaded through the engine loader
