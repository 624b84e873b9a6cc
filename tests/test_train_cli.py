"""``python -m bot train-lora`` and ``pick-checkpoint`` as a person runs them: fresh processes,
the tiny SDXL and CLIP on disk, and the config file that ``--link`` edits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bot.config import load_config
from bot.train_cli import set_engine_lora
from tests.helpers import draw_character
from tests.test_cli import bot


@pytest.fixture(scope="module")
def pictures(character_pictures) -> Path:
    return character_pictures


def train(pictures: Path, base: Path, out: Path, *extra: str):
    return bot("train-lora", "--images", str(pictures), "--base-model", str(base), "--out", str(out),
               "--steps", "3", "--checkpoint-every", "2", "--rank", "4", "--resolution", "64",
               "--learning-rate", "0.01", "--quiet", *extra, timeout=300)


def test_train_lora_writes_checkpoints_and_says_where(pictures, tiny_sdxl_dir, tmp_path) -> None:
    result = train(pictures, tiny_sdxl_dir, tmp_path / "out", "--trigger", "hero_tok")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("trained 3 steps in ")
    assert result.stdout.splitlines()[1:] == [str(tmp_path / "out" / "checkpoint-2"),
                                              str(tmp_path / "out" / "checkpoint-3")]
    assert '"trigger": "hero_tok"' in (tmp_path / "out" / "checkpoint-3" / "training_state.json").read_text()


def test_a_bad_dataset_is_one_clear_line(tiny_sdxl_dir, tmp_path) -> None:
    for index in range(2):
        draw_character(tmp_path / "few" / f"{index}.png", index)
    result = train(tmp_path / "few", tiny_sdxl_dir, tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: training pictures in ")
    assert "need at least 3 pictures" in result.stderr and "found 2: 0.png, 1.png" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_train_setting_out_of_range_names_the_key(pictures, tiny_sdxl_dir, tmp_path) -> None:
    result = train(pictures, tiny_sdxl_dir, tmp_path / "out", "--resolution", "60")
    assert result.returncode == 2 and "multiple of 8" in result.stderr


def test_pick_checkpoint_links_the_best_into_the_config(pictures, tiny_sdxl_dir, tiny_clip_dir, tmp_path) -> None:
    out = tmp_path / "out"
    assert train(pictures, tiny_sdxl_dir, out).returncode == 0
    weights = load_file(out / "checkpoint-2" / "pytorch_lora_weights.safetensors")  # damage checkpoint-2
    save_file({k: torch.zeros_like(v) for k, v in weights.items()}, out / "checkpoint-2" / "pytorch_lora_weights.safetensors")
    config = tmp_path / "config.toml"
    config.write_text('[engine]\nlora = ""  # the character\nwidth = 64\n\n[pick]\nresolution = 64\nsteps = 2\n'
                      'seeds = [1]  # one each\n', encoding="utf-8")
    result = bot("pick-checkpoint", str(out), "--base-model", str(tiny_sdxl_dir), "--clip-model", str(tiny_clip_dir),
                 "--link", config=config, timeout=300)
    assert result.returncode == 0, result.stderr
    best = (out / "checkpoint-3").resolve()
    assert f"best: {best}" in result.stdout
    assert "*  checkpoint-3" in result.stdout and "no effect" in result.stdout
    assert (out / "checkpoints.csv").is_file() and (out / "checkpoints.png").is_file()
    assert load_config(config, {}).engine.lora == str(best)
    assert "  # the character" in config.read_text(encoding="utf-8")


def test_pick_checkpoint_without_clip_says_how(tiny_sdxl_dir, tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[engine]\nclip_model = ""\n', encoding="utf-8")
    result = bot("pick-checkpoint", str(tmp_path), "--base-model", str(tiny_sdxl_dir), config=config)
    assert result.returncode == 2 and "--clip-model" in result.stderr


# -- --link's config edit -----------------------------------------------------------------------------
def test_link_replaces_the_engine_lora_only(tmp_path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[train]\nlora = "not this one"\n\n[engine]\nsteps = 30  # s\nlora = ""   # keep me\n', "utf-8")
    set_engine_lora(path, '/x/checkpoint-4 "q"')
    assert path.read_text("utf-8") == ('[train]\nlora = "not this one"\n\n[engine]\nsteps = 30  # s\n'
                                       'lora = "/x/checkpoint-4 \\"q\\""   # keep me\n')


def test_link_adds_the_key_or_the_section(tmp_path) -> None:
    with_section = tmp_path / "a.toml"
    with_section.write_text("[engine]\nsteps = 20\n", "utf-8")
    set_engine_lora(with_section, "/x/c")
    assert load_config(with_section, {}).engine.lora == "/x/c"
    assert load_config(with_section, {}).engine.steps == 20
    empty = tmp_path / "b.toml"
    set_engine_lora(empty, "/x/c")
    assert load_config(empty, {}).engine.lora == "/x/c"


def test_help_lists_the_trainer_commands() -> None:
    result = bot("--help")
    assert "train-lora" in result.stdout and "pick-checkpoint" in result.stdout
    flags = bot("train-lora", "--help").stdout
    for flag in ("--images", "--base-model", "--out", "--trigger", "--steps", "--checkpoint-every", "--rank",
                 "--resolution", "--class-prompt", "--class-images", "--resume-from"):
        assert flag in flags, flag
