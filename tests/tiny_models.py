"""Tiny random-weight models, built from configs and saved like real weights.

The shapes follow diffusers' own ``get_dummy_components`` for its SDXL pipeline tests. Each
builder writes a folder (or a file) with ``save_pretrained`` / safetensors, so a test loads it
through the production loading code exactly as it would load real weights. Nothing here
touches the network: the tokenizer is a byte-level CLIP BPE with no merges, written locally.

Every model is built right after ``torch.manual_seed(0)`` (or the given seed), so the same call
gives the same bytes.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# The text side, shared by the two SDXL text encoders and the tiny CLIP.
TEXT_HIDDEN = 32
PROJECTION_DIM = 32
MAX_LENGTH = 77
# Byte-level vocabulary: 256 byte chars (0-255), the same + "</w>" (256-511), then the specials.
BOS_ID = 512
EOS_ID = 513
PAD_ID = EOS_ID  # as in SDXL's first tokenizer: pad with <|endoftext|>
TOKENIZER_VOCAB = 514
TEXT_VOCAB = 1000  # the embedding table is larger than the vocabulary, as allowed

# The LoRA targets: every attention projection of the UNet, as the DreamBooth-LoRA scripts do.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# A LoRA's effect on a 2-step 64x64 render is measured, so its up-weights are drawn large
# enough to matter (std of lora_B; lora_A is unit-variance scaled by 1/sqrt(fan_in)).
LORA_UP_STD = 0.5


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte -> printable unicode char mapping (256 entries)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def write_byte_level_tokenizer(folder: Path) -> None:
    """A CLIP tokenizer that needs no download: byte-level vocab, no merges, 77 tokens.

    Every byte is a token, so any text (Cyrillic included) encodes; words end in "<b></w>".
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = BOS_ID
    vocab["<|endoftext|>"] = EOS_ID
    assert len(vocab) == TOKENIZER_VOCAB
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, indent=2),
        encoding="utf-8",
    )


def _load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    write_byte_level_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(folder)


def tiny_text_config(**overrides):
    from transformers import CLIPTextConfig

    values = dict(
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        projection_dim=PROJECTION_DIM,
        vocab_size=TEXT_VOCAB,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,  # CLIP pools the hidden state at the first eos token
        pad_token_id=PAD_ID,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        max_position_embeddings=MAX_LENGTH,
    )
    values.update(overrides)
    return CLIPTextConfig(**values)


def tiny_sdxl_components(tokenizer_dir: Path) -> dict:
    """The components of a tiny SDXL pipeline (diffusers' ``get_dummy_components`` shapes)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + PROJECTION_DIM,  # 6 time ids x 8 + pooled text
        cross_attention_dim=2 * TEXT_HIDDEN,  # both encoders' hidden states, concatenated
        norm_num_groups=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=128,
        norm_num_groups=32,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(tiny_text_config())
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(tiny_text_config())
    tokenizer = _load_tokenizer(Path(tokenizer_dir))
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer,
        "image_encoder": None,
        "feature_extractor": None,
    }


def build_tiny_sdxl(folder: Path) -> Path:
    """Save a tiny random ``StableDiffusionXLPipeline`` to ``folder`` (safetensors); return it.

    Loads with ``StableDiffusionXLPipeline.from_pretrained(folder)``; renders 64x64 by default
    (UNet sample_size 32 x VAE scale factor 2).
    """
    from diffusers import StableDiffusionXLPipeline

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(Path(tokenizer_dir)))
        pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_clip(folder: Path) -> Path:
    """Save a tiny random ``CLIPModel`` + ``CLIPProcessor`` (32x32 images, 32-d embeddings)."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPVisionConfig,
    )

    folder = Path(folder)
    text_config = tiny_text_config(num_hidden_layers=2)
    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=32,
        patch_size=4,
        projection_dim=PROJECTION_DIM,
        hidden_act="gelu",
    )
    config = CLIPConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        projection_dim=PROJECTION_DIM,
    )
    torch.manual_seed(0)
    model = CLIPModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        tokenizer = _load_tokenizer(Path(tokenizer_dir))
        CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


# --- LoRAs -----------------------------------------------------------------------------------


def tiny_lora_config(rank: int = 4):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, target_modules=list(LORA_TARGETS), init_lora_weights=False)


def _random_unet_lora(sdxl_folder: Path, rank: int, seed: int) -> tuple[dict[str, torch.Tensor], object]:
    """A random LoRA on the tiny UNet: (PEFT-format state dict without the "unet." prefix, config).

    Keys look like ``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight``.
    The values depend only on ``(rank, seed)`` and the UNet's shapes.
    """
    from diffusers import UNet2DConditionModel
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(Path(sdxl_folder), subfolder="unet")
    config = tiny_lora_config(rank)
    unet.add_adapter(config)
    state = get_peft_model_state_dict(unet)
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(state):
        shape = state[key].shape
        if ".lora_A." in key:
            value = torch.randn(shape, generator=generator) / shape[1] ** 0.5
        elif ".lora_B." in key:
            value = torch.randn(shape, generator=generator) * LORA_UP_STD
        else:  # pragma: no cover - only A/B matrices are expected for a plain LoRA
            raise ValueError(f"unexpected LoRA key {key}")
        out[key] = value.contiguous()
    return out, config


def build_tiny_lora(sdxl_folder: Path, out_folder: Path, *, rank: int = 4, seed: int = 0) -> Path:
    """A UNet LoRA in diffusers/PEFT format (``pytorch_lora_weights.safetensors``); return the file.

    Written the way diffusers' DreamBooth-LoRA SDXL script writes one:
    ``save_lora_weights(unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)))``.
    """
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    out_folder = Path(out_folder)
    out_folder.mkdir(parents=True, exist_ok=True)
    state, _config = _random_unet_lora(sdxl_folder, rank, seed)
    StableDiffusionXLPipeline.save_lora_weights(
        out_folder,
        unet_lora_layers=convert_state_dict_to_diffusers(state),
        safe_serialization=True,
    )
    path = out_folder / "pytorch_lora_weights.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"save_lora_weights did not write {path}")
    return path


def _sgm_block(path: str, layers_per_block: int) -> str:
    """diffusers UNet block path -> the original SGM (kohya SDXL) block path.

    down_blocks.B.attentions.J -> input_blocks.(1 + B*(L+1) + J).1
    mid_block.attentions.0     -> middle_block.1
    up_blocks.B.attentions.J   -> output_blocks.(B*(L+1) + J).1
    """
    per = layers_per_block + 1
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", path):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + b * per + j}.1.{rest}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", path):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", path):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{b * per + j}.1.{rest}"
    raise ValueError(f"no SGM name for UNet module {path}")


def kohya_unet_state_dict(
    peft_state: dict[str, torch.Tensor], *, alpha: float, layers_per_block: int, naming: str = "sgm"
) -> dict[str, torch.Tensor]:
    """PEFT UNet LoRA keys -> kohya keys ``lora_unet_<module_path_with_underscores>.lora_down.weight`` etc.

    ``naming="sgm"`` writes what kohya sd-scripts writes for SDXL (its UNet keeps the original
    ``input_blocks/middle_block/output_blocks`` names); ``naming="diffusers"`` keeps the
    diffusers module path (what ``convert_state_dict_to_kohya`` writes).
    """
    if naming not in ("sgm", "diffusers"):
        raise ValueError(f"naming must be 'sgm' or 'diffusers', not {naming!r}")
    out: dict[str, torch.Tensor] = {}
    for key, value in peft_state.items():
        module, kind = re.fullmatch(r"(.*)\.lora_([AB])\.weight", key).groups()
        if naming == "sgm":
            module = _sgm_block(module, layers_per_block)
        name = "lora_unet_" + module.replace(".", "_")
        out[f"{name}.{'lora_down' if kind == 'A' else 'lora_up'}.weight"] = value
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def build_tiny_kohya_lora(
    sdxl_folder: Path, out_file: Path, *, rank: int = 4, seed: int = 0, naming: str = "sgm"
) -> Path:
    """The same LoRA as ``build_tiny_lora(rank, seed)``, written as a kohya-ss safetensors file.

    Keys: ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight`` /
    ``.lora_up.weight`` / ``.alpha`` (alpha = rank, so the scale is 1 as in the PEFT file).
    Load with ``pipe.load_lora_weights(str(out_file.parent), weight_name=out_file.name)``.
    """
    from safetensors.torch import save_file

    sdxl_folder = Path(sdxl_folder)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    unet_config = json.loads((sdxl_folder / "unet" / "config.json").read_text(encoding="utf-8"))
    state, _config = _random_unet_lora(sdxl_folder, rank, seed)
    kohya = kohya_unet_state_dict(
        state, alpha=float(rank), layers_per_block=int(unet_config["layers_per_block"]), naming=naming
    )
    save_file(
        kohya,
        str(out_file),
        metadata={
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(rank),
            "ss_network_alpha": str(rank),
            "ss_base_model_version": "sdxl_base_v1-0",
        },
    )
    return out_file


def real_clip_tokenizer(folder: Path):
    """OpenAI's CLIP tokenizer, built offline from the BPE file that clip-anytorch ships."""
    from transformers import CLIPTokenizer

    spec = importlib.util.find_spec("clip")
    bpe = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                         pad_token="<|endoftext|>")


def build_tiny_controlnet(sdxl_folder: Path, out_folder: Path) -> Path:
    """An SDXL OpenPose-style ControlNet made from the tiny UNet, saved like a real one."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(sdxl_folder, subfolder="unet")
    # the tiny VAE downsamples by 2, so the pose image is embedded with one downsampling
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    controlnet.save_pretrained(out_folder)
    return out_folder


def build_tiny_ip_adapter(sdxl_folder: Path, out_folder: Path, *, subfolder: str = "sdxl_models",
                          weight_name: str = "ip-adapter_sdxl.safetensors") -> Path:
    """The h94/IP-Adapter layout, tiny: ``<subfolder>/<weight_name>`` with the ``image_proj.*`` and
    ``ip_adapter.N.to_k_ip/to_v_ip`` keys diffusers' loader reads, and ``<subfolder>/image_encoder``."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(sdxl_folder, subfolder="unet")
    cross = unet.config.cross_attention_dim
    image_dim = 32
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
        patch_size=4, projection_dim=image_dim,
    ))
    target = out_folder / subfolder
    encoder.save_pretrained(target / "image_encoder")
    weights = {
        "image_proj.proj.weight": torch.randn(cross * 4, image_dim) * 0.1,
        "image_proj.proj.bias": torch.zeros(cross * 4),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        block = name.split(".")[0]
        if block == "mid_block":
            hidden = unet.config.block_out_channels[-1]
        elif block == "up_blocks":
            hidden = list(reversed(unet.config.block_out_channels))[int(name.split(".")[1])]
        else:
            hidden = unet.config.block_out_channels[int(name.split(".")[1])]
        weights[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.1
        weights[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.1
        key_id += 2
    save_file({k: v.contiguous() for k, v in weights.items()}, str(target / weight_name))
    return out_folder
