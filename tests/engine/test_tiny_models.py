"""The tiny models load through the real loaders and behave like models: seeds, LoRAs, embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from PIL import Image
from safetensors import safe_open
from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer

from tests.reproducibility import assert_same_picture, to_levels
from tests.tiny_models import (
    BOS_ID,
    EOS_ID,
    PROJECTION_DIM,
    build_tiny_clip,
    build_tiny_kohya_lora,
)

# A LoRA must move the 2-step 64x64 render by clearly more than float noise (measured: ~0.065).
MIN_LORA_EFFECT = 0.02
SEEDS = (1, 2)


def load_pipe(folder: Path) -> StableDiffusionXLPipeline:
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe: StableDiffusionXLPipeline, seeds=SEEDS, prompts=("aldar_kose_man at the bazaar",) * 2, **kwargs):
    """Frames as float arrays in [0, 1] (output_type="np": no 8-bit rounding), one generator per frame."""
    result = pipe(
        prompt=list(prompts),
        num_inference_steps=2,
        height=64,
        width=64,
        guidance_scale=5.0,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        **{"output_type": "np", **kwargs},
    )
    return result.images


@pytest.fixture(scope="module")
def base_frames(tiny_sdxl_dir: Path) -> np.ndarray:
    return render(load_pipe(tiny_sdxl_dir))


# --- tokenizer -------------------------------------------------------------------------------


@pytest.mark.parametrize("subfolder", ["tokenizer", "tokenizer_2"])
def test_tokenizer_pads_and_truncates_to_77_with_bos_and_eos(tiny_sdxl_dir: Path, subfolder: str) -> None:
    tok = CLIPTokenizer.from_pretrained(tiny_sdxl_dir, subfolder=subfolder)
    assert tok.model_max_length == 77
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS_ID, EOS_ID, EOS_ID)

    ids = tok("a photo", padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    # "a</w>" + "p h o t o</w>": one token per byte, the last byte of a word carries </w>
    assert ids[:8] == [
        BOS_ID,
        tok.convert_tokens_to_ids("a</w>"),
        *tok.convert_tokens_to_ids(list("phot")),
        tok.convert_tokens_to_ids("o</w>"),
        EOS_ID,
    ]
    assert len(ids) == 77 and set(ids[8:]) == {EOS_ID}

    long_ids = tok("word " * 200, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(long_ids) == 77 and long_ids[0] == BOS_ID and long_ids[-1] == EOS_ID

    kazakh = tok("Алдар Көсе базарда қулық жасады").input_ids
    assert kazakh.count(EOS_ID) == 1, "every byte has a token, so nothing maps to unk (= eos)"


def test_text_encoders_pool_at_the_tokenizers_eos(tiny_sdxl_dir: Path) -> None:
    pipe = load_pipe(tiny_sdxl_dir)
    for encoder in (pipe.text_encoder, pipe.text_encoder_2):
        assert encoder.config.eos_token_id == pipe.tokenizer.eos_token_id == EOS_ID
        assert encoder.config.bos_token_id == pipe.tokenizer.bos_token_id == BOS_ID
    prompt_embeds, _neg, pooled, _neg_pooled = pipe.encode_prompt(
        ["a", "b"], device="cpu", do_classifier_free_guidance=False
    )
    assert prompt_embeds.shape == (2, 77, 64)  # both encoders' hidden states, concatenated
    assert pooled.shape == (2, PROJECTION_DIM)
    assert not torch.allclose(pooled[0], pooled[1]), "different prompts must pool differently"


# --- SDXL ------------------------------------------------------------------------------------


def test_sdxl_renders_64px_deterministic_per_seed(tiny_sdxl_dir: Path, base_frames: np.ndarray) -> None:
    pipe = load_pipe(tiny_sdxl_dir)
    assert base_frames.shape == (2, 64, 64, 3)
    again = render(pipe)
    np.testing.assert_array_equal(again, base_frames)

    pil = render(pipe, output_type="pil")
    assert [(im.mode, im.size) for im in pil] == [("RGB", (64, 64))] * 2
    np.testing.assert_allclose(np.asarray(pil[0], dtype=np.float32) / 255.0, base_frames[0], atol=1 / 255 + 1e-6)

    # the seed, not the batch slot, decides; another slot is another batch, so within rounding
    swapped = render(pipe, seeds=SEEDS[::-1])
    assert_same_picture(to_levels(swapped[1]), to_levels(base_frames[0]), "frame in the other slot")

    assert np.abs(base_frames[0] - base_frames[1]).mean() > 0.05, "different seeds must give different frames"
    assert base_frames.std() > 0.05, "a render must not be flat"


# --- LoRAs -----------------------------------------------------------------------------------


def test_peft_lora_file_is_diffusers_format(tiny_lora_file: Path) -> None:
    assert tiny_lora_file.name == "pytorch_lora_weights.safetensors"
    with safe_open(tiny_lora_file, "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("unet.") for k in keys)
    assert any(k.endswith("attn1.to_q.lora.down.weight") for k in keys)
    assert any(k.endswith("attn2.to_out.0.lora.up.weight") for k in keys)


def test_kohya_lora_file_uses_kohya_sgm_keys(tiny_kohya_lora_file: Path) -> None:
    with safe_open(tiny_kohya_lora_file, "pt") as f:
        keys = set(f.keys())
    name = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= keys
    assert "lora_unet_middle_block_1_transformer_blocks_1_attn2_to_out_0.lora_up.weight" in keys
    assert "lora_unet_output_blocks_2_1_transformer_blocks_0_attn1_to_v.lora_down.weight" in keys
    assert all(k.startswith("lora_unet_") for k in keys)


def _load_lora(pipe: StableDiffusionXLPipeline, lora_file: Path, how: str) -> None:
    if how == "folder+weight_name":
        pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name, adapter_name="aldar")
    else:
        pipe.load_lora_weights(str(lora_file), adapter_name="aldar")


@pytest.mark.parametrize(
    ("fixture", "how"),
    [
        ("tiny_lora_file", "folder+weight_name"),
        ("tiny_kohya_lora_file", "folder+weight_name"),
        ("tiny_kohya_lora_file", "file"),
    ],
)
def test_lora_loads_fuses_and_changes_the_frame(
    request: pytest.FixtureRequest, tiny_sdxl_dir: Path, base_frames: np.ndarray, fixture: str, how: str
) -> None:
    lora_file: Path = request.getfixturevalue(fixture)
    pipe = load_pipe(tiny_sdxl_dir)
    _load_lora(pipe, lora_file, how)
    assert pipe.get_list_adapters() == {"unet": ["aldar"]}
    lora_layers = [m for m in pipe.unet.modules() if "aldar" in getattr(m, "lora_A", {})]
    assert len(lora_layers) == 96  # 12 transformer blocks x 2 attentions x (q, k, v, out)

    with_lora = render(pipe)
    effect = np.abs(with_lora - base_frames).mean()
    assert effect > MIN_LORA_EFFECT, f"the LoRA barely changes the frame ({effect:.4f})"

    pipe.fuse_lora(lora_scale=1.0)
    np.testing.assert_allclose(render(pipe), with_lora, atol=1e-4)

    pipe.unfuse_lora()
    pipe.unload_lora_weights()
    np.testing.assert_allclose(render(pipe), base_frames, atol=1e-4)


def test_both_lora_formats_hold_the_same_weights(
    tiny_sdxl_dir: Path, tiny_lora_file: Path, tiny_kohya_lora_file: Path, tmp_path: Path
) -> None:
    """Same (rank, seed) -> the same LoRA in either format; diffusers-named kohya keys load too."""
    diffusers_named = build_tiny_kohya_lora(tiny_sdxl_dir, tmp_path / "diffusers_named.safetensors", naming="diffusers")
    frames = []
    for lora_file in (tiny_lora_file, tiny_kohya_lora_file, diffusers_named):
        pipe = load_pipe(tiny_sdxl_dir)
        _load_lora(pipe, lora_file, "file")
        frames.append(render(pipe, seeds=(3,), prompts=("a",)))
    np.testing.assert_allclose(frames[1], frames[0], atol=1e-4)
    np.testing.assert_allclose(frames[2], frames[0], atol=1e-4)


def test_lora_seed_decides_the_weights(tiny_sdxl_dir: Path, tiny_kohya_lora_file: Path, tmp_path: Path) -> None:
    same = build_tiny_kohya_lora(tiny_sdxl_dir, tmp_path / "same.safetensors", seed=0)
    other = build_tiny_kohya_lora(tiny_sdxl_dir, tmp_path / "other.safetensors", seed=1)
    key = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight"
    with safe_open(tiny_kohya_lora_file, "pt") as f0, safe_open(same, "pt") as f1, safe_open(other, "pt") as f2:
        assert torch.equal(f0.get_tensor(key), f1.get_tensor(key))
        assert not torch.equal(f0.get_tensor(key), f2.get_tensor(key))


# --- CLIP ------------------------------------------------------------------------------------


def test_clip_gives_projected_embeddings(tiny_clip_dir: Path) -> None:
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    rng = np.random.default_rng(0)
    images = [
        Image.new("RGB", (64, 48), (200, 30, 30)),
        Image.fromarray(rng.integers(0, 255, (100, 80, 3), dtype=np.uint8)),
        Image.new("RGB", (40, 40), (20, 30, 200)),
    ]
    inputs = processor(images=images, return_tensors="pt")
    assert inputs["pixel_values"].shape == (3, 3, 32, 32)
    text = processor(text=["aldar_kose_man", "a bazaar"], padding="max_length", return_tensors="pt")
    assert text["input_ids"].shape == (2, 77)

    with torch.no_grad():
        # transformers 5: a BaseModelOutputWithPooling; the projected embedding is .pooler_output
        image_out = model.get_image_features(pixel_values=inputs["pixel_values"])
        text_out = model.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
    image_embeds, text_embeds = image_out.pooler_output, text_out.pooler_output
    assert image_embeds.shape == (3, PROJECTION_DIM)
    assert text_embeds.shape == (2, PROJECTION_DIM)
    assert torch.isfinite(image_embeds).all() and torch.isfinite(text_embeds).all()
    assert not torch.allclose(image_embeds[0], image_embeds[2]), "different images must embed differently"
    assert not torch.allclose(text_embeds[0], text_embeds[1])


def test_tiny_clip_build_is_deterministic(tiny_clip_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_clip(tmp_path / "clip")
    assert (again / "model.safetensors").read_bytes() == (tiny_clip_dir / "model.safetensors").read_bytes()
