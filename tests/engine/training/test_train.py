"""The character trainer on the tiny SDXL, on the CPU: real diffusers/peft training, checkpoints
the engine loads, exact resume, DreamBooth class pictures, and clear errors for bad datasets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.models import ModelLoader
from engine.settings import RenderSettings, TrainSettings
from engine.training.train import LORA_FILE, RESUME_FILE, STATE_FILE, TrainError, TrainJob, checkpoint_dirs, train_lora
from engine.training.data import DatasetError, caption_for, load_dataset
from engine.training.prior import PROMPT_FILE
from tests.helpers import draw_character


@pytest.fixture(scope="module")
def pictures(character_pictures) -> Path:
    return character_pictures


def tiny(**overrides) -> TrainSettings:
    values = {"resolution": 64, "steps": 3, "checkpoint_every": 1, "rank": 4, "alpha": 4.0, "warmup_steps": 0,
              "learning_rate": 1e-2, "snr_gamma": 5.0, **overrides}
    return TrainSettings(**values)


def lora(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / LORA_FILE)


@pytest.fixture(scope="module")
def three_steps(tiny_sdxl_dir, pictures, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = train_lora(TrainJob(pictures, str(tiny_sdxl_dir), out, tiny()), show_progress=False)
    return result, out


def test_three_steps_learn_with_a_finite_loss(three_steps) -> None:
    result, out = three_steps
    assert result.step == 3 and len(result.losses) == 3
    assert all(math.isfinite(loss) for loss in result.losses)
    assert [p.name for p in checkpoint_dirs(out)] == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    weights = lora(out / "checkpoint-3")
    up = [v for k, v in weights.items() if "lora.up" in k or "lora_B" in k]
    assert up and all(k.startswith("unet.") for k in weights)
    assert any(float(v.abs().max()) > 0 for v in up)  # B starts at zero: non-zero means it learned
    first, last = lora(out / "checkpoint-1"), weights
    assert any(not torch.equal(first[k], last[k]) for k in last)  # and it kept learning


def test_a_checkpoint_records_its_step_loss_and_config(three_steps, tiny_sdxl_dir) -> None:
    result, out = three_steps
    state = json.loads((out / "checkpoint-3" / STATE_FILE).read_text(encoding="utf-8"))
    assert state["step"] == 3 and state["loss"] == pytest.approx(result.losses[-1])
    assert state["base_model"] == str(tiny_sdxl_dir) and state["config"]["rank"] == 4
    assert not list(out.glob(".*partial"))


def render(pipe, seed: int = 7) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(seed)
    image = pipe("a photo of aldar_kose_man", num_inference_steps=2, width=64, height=64, generator=generator)
    return np.asarray(image.images[0], dtype=np.float32)


def test_a_checkpoint_loads_through_the_engine_and_changes_the_picture(three_steps, tiny_sdxl_dir) -> None:
    _, out = three_steps
    common = {"base_model": str(tiny_sdxl_dir), "clip_model": "", "ref_guided": False, "width": 64, "height": 64}
    base = ModelLoader(RenderSettings(**common)).pipeline()
    trained_loader = ModelLoader(RenderSettings(lora=str(out / "checkpoint-3"), **common))
    trained = trained_loader.pipeline()
    assert trained_loader.applied["lora"] == {"character": 1.0}
    difference = np.abs(render(base) - render(trained)).mean()
    assert difference > 1.0, difference  # grey levels, on average


def test_resuming_from_step_two_reaches_the_same_step_three(three_steps, tiny_sdxl_dir, pictures, tmp_path) -> None:
    _, straight = three_steps
    resumed = tmp_path / "resumed"
    result = train_lora(TrainJob(pictures, str(tiny_sdxl_dir), resumed, tiny(),
                                 resume_from=straight / "checkpoint-2"), show_progress=False)
    assert result.step == 3 and len(result.losses) == 1  # one step: 2 -> 3
    want, got = lora(straight / "checkpoint-3"), lora(resumed / "checkpoint-3")
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    want_opt = torch.load(straight / "checkpoint-3" / RESUME_FILE, weights_only=False)["optimizer"]["state"]
    got_opt = torch.load(resumed / "checkpoint-3" / RESUME_FILE, weights_only=False)["optimizer"]["state"]
    assert want_opt.keys() == got_opt.keys()
    for index in want_opt:
        assert int(want_opt[index]["step"]) == 3 == int(got_opt[index]["step"])
        assert torch.equal(want_opt[index]["exp_avg_sq"], got_opt[index]["exp_avg_sq"])


def test_resuming_needs_a_checkpoint(tiny_sdxl_dir, pictures, tmp_path) -> None:
    with pytest.raises(TrainError, match="not a checkpoint"):
        train_lora(TrainJob(pictures, str(tiny_sdxl_dir), tmp_path / "o", tiny(), resume_from=tmp_path),
                   show_progress=False)


def test_each_picture_is_encoded_once_when_cached(tiny_sdxl_dir, pictures, tmp_path) -> None:
    settings = tiny(steps=6, checkpoint_every=6, batch_size=2)
    cached = train_lora(TrainJob(pictures, str(tiny_sdxl_dir), tmp_path / "a", settings), show_progress=False)
    uncached = train_lora(TrainJob(pictures, str(tiny_sdxl_dir), tmp_path / "b",
                                   settings.model_copy(update={"cache_latents": False})), show_progress=False)
    assert cached.encodes == 4  # three epochs of four pictures, encoded once each
    assert uncached.encodes == 12  # every draw encodes again
    assert all(math.isfinite(loss) for loss in uncached.losses)


def test_the_text_encoders_can_train_too(tiny_sdxl_dir, pictures, tmp_path) -> None:
    result = train_lora(TrainJob(pictures, str(tiny_sdxl_dir), tmp_path / "o",
                                 tiny(steps=2, checkpoint_every=2, train_text_encoder=True)), show_progress=False)
    keys = lora(result.checkpoints[-1]).keys()
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("text_encoder_2.") for k in keys)
    common = {"base_model": str(tiny_sdxl_dir), "clip_model": "", "ref_guided": False}
    ModelLoader(RenderSettings(lora=str(result.checkpoints[-1]), **common)).pipeline()  # the engine reads it


def test_prior_preservation_draws_the_class_pictures_once(tiny_sdxl_dir, pictures, tmp_path) -> None:
    classes = tmp_path / "class"
    job = TrainJob(pictures, str(tiny_sdxl_dir), tmp_path / "o", tiny(steps=2, num_class_images=2, class_steps=2),
                   class_prompt="a photo of a kazakh man", class_images=classes)
    first = train_lora(job, show_progress=False)
    drawn = sorted(classes.glob("*.png"))
    assert [p.name for p in drawn] == ["class-00000.png", "class-00001.png"]
    assert (classes / PROMPT_FILE).read_text(encoding="utf-8").strip() == "a photo of a kazakh man"
    stamps = [p.stat().st_mtime_ns for p in drawn]
    second = train_lora(job, show_progress=False)
    assert sorted(classes.glob("*.png")) == drawn and [p.stat().st_mtime_ns for p in drawn] == stamps
    assert all(math.isfinite(loss) for loss in first.losses + second.losses)
    assert first.encodes in (3, 4)  # 2 character pictures drawn, each beside a class picture (1 or 2 distinct)


def test_class_pictures_of_another_prompt_are_refused(tiny_sdxl_dir, pictures, tmp_path) -> None:
    classes = tmp_path / "class"
    classes.mkdir()
    (classes / PROMPT_FILE).write_text("a photo of a horse\n", encoding="utf-8")
    job = TrainJob(pictures, str(tiny_sdxl_dir), tmp_path / "o", tiny(), class_prompt="a photo of a man",
                   class_images=classes)
    with pytest.raises(TrainError, match="holds pictures of 'a photo of a horse'"):
        train_lora(job, show_progress=False)


def test_class_prompt_and_folder_come_together(tiny_sdxl_dir, pictures, tmp_path) -> None:
    with pytest.raises(TrainError, match="both --class-prompt and --class-images"):
        train_lora(TrainJob(pictures, str(tiny_sdxl_dir), tmp_path, tiny(), class_prompt="a man"), show_progress=False)


def test_8bit_adam_without_bitsandbytes_says_so(tiny_sdxl_dir, pictures, tmp_path) -> None:
    pytest.importorskip("torch")
    try:
        import bitsandbytes  # noqa: F401

        pytest.skip("bitsandbytes is installed here")
    except ImportError:
        pass
    with pytest.raises(TrainError, match="adam_8bit needs bitsandbytes"):
        train_lora(TrainJob(pictures, str(tiny_sdxl_dir), tmp_path, tiny(adam_8bit=True)), show_progress=False)


# -- the dataset -----------------------------------------------------------------------------------------
def test_captions_come_from_the_text_file_or_the_template(tmp_path) -> None:
    picture = draw_character(tmp_path / "a.png", 0)
    assert caption_for(picture, trigger="aldar_kose_man", template="a photo of {trigger}") == "a photo of aldar_kose_man"
    (tmp_path / "a.txt").write_text("  riding a horse\n across the steppe ", encoding="utf-8")
    assert caption_for(picture, trigger="aldar_kose_man", template="x {trigger}") == \
        "aldar_kose_man, riding a horse across the steppe"
    (tmp_path / "a.txt").write_text("aldar_kose_man laughing", encoding="utf-8")
    assert caption_for(picture, trigger="aldar_kose_man", template="x {trigger}") == "aldar_kose_man laughing"


def test_pictures_are_cropped_square_with_sdxl_micro_conditioning(tmp_path) -> None:
    for index in range(3):
        draw_character(tmp_path / f"{index}.png", index, size=(160, 128))
    centre = load_dataset(tmp_path, trigger="t", template="{trigger}", resolution=64)
    assert centre[0].image.size == (64, 64)
    assert centre[0].time_ids == (128, 160, 0, 8, 64, 64)  # scaled to 80x64, 8 px cut from each side
    squashed = load_dataset(tmp_path, trigger="t", template="{trigger}", resolution=64, crop="resize")
    assert squashed[0].time_ids == (128, 160, 0, 0, 64, 64)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: None, r"need at least 3 pictures .* found 0: none"),
        (lambda d: [draw_character(d / f"{i}.png", i) for i in range(2)], r"found 2: 0.png, 1.png"),
        (lambda d: ([draw_character(d / f"{i}.png", i) for i in range(3)],
                    (d / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")),
         r"cannot read 1 file\(s\): broken.jpg"),
    ],
    ids=["empty", "two-pictures", "corrupt-file"],
)
def test_bad_datasets_name_the_files(tmp_path, make, message) -> None:
    make(tmp_path)
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path, trigger="t", template="{trigger}", resolution=64)


def test_a_missing_folder_is_named(tmp_path) -> None:
    with pytest.raises(DatasetError, match="folder not found: .*nowhere"):
        load_dataset(tmp_path / "nowhere", trigger="t", template="{trigger}", resolution=64)


def test_half_precision_needs_cuda(tiny_sdxl_dir, pictures, tmp_path) -> None:
    with pytest.raises(TrainError, match="mixed_precision = 'bf16' needs CUDA"):
        train_lora(TrainJob(pictures, str(tiny_sdxl_dir), tmp_path, tiny(mixed_precision="bf16"), device="cpu"),
                   show_progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda_learns_and_saves_float32_loras(tiny_sdxl_dir, pictures, tmp_path, precision) -> None:
    result = train_lora(TrainJob(pictures, str(tiny_sdxl_dir), tmp_path, tiny(mixed_precision=precision),
                                 device="cuda"), show_progress=False)
    assert all(math.isfinite(loss) for loss in result.losses)
    assert {value.dtype for value in lora(result.checkpoints[-1]).values()} == {torch.float32}
