"""Full-size SDXL, an OpenPose ControlNet and an IP-Adapter with random weights, built from the
published configs in bench/sdxl_configs/ and saved in the layouts the bot loads.

A GPU host for a speed check gets the working tree and no network: the 7 GB of real weights
never arrive, and speed and memory do not depend on the weights' values. The configs give the
published parameter counts exactly (tests/test_gpu_probe.py checks them on the meta device):
UNet 2,567,463,684; VAE 83,653,863; text encoders 123,060,480 and 694,659,840; the ViT-bigG
image encoder 1,844,907,264; the ControlNet 1,251,014,160.

Models are made directly on ``device`` in ``dtype`` (random init of 6.5 B parameters on a CPU
takes minutes), then saved as safetensors for ``engine.models`` to load like any weights.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.tiny_models import write_byte_level_tokenizer  # noqa: E402  (a tokenizer needs no download)

CONFIGS = Path(__file__).resolve().parent / "sdxl_configs"
IP_ADAPTER_SUBFOLDER, IP_ADAPTER_WEIGHT = "sdxl_models", "ip-adapter_sdxl.safetensors"
IP_TOKENS = 4  # ip-adapter_sdxl projects the image embedding into 4 context tokens


@dataclass(frozen=True)
class RandomWeights:
    base: Path
    controlnet: Path
    ip_adapter: Path


def config(name: str) -> dict[str, Any]:
    return json.loads((CONFIGS / f"{name}.json").read_text(encoding="utf-8"))


def build_models(*, device: torch.device | str, dtype: torch.dtype) -> dict[str, Any]:
    """Every model at full size on ``device``: the parts of an SDXL pipeline, the ControlNet and
    the IP-Adapter's image encoder."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionConfig
    from transformers import CLIPVisionModelWithProjection

    with torch.device(device):
        return {
            "unet": UNet2DConditionModel.from_config(config("unet")).to(dtype),
            "vae": AutoencoderKL.from_config(config("vae")).to(dtype),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**config("text_encoder"))).to(dtype),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2"))).to(dtype),
            "controlnet": ControlNetModel.from_config(config("controlnet")).to(dtype),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**config("image_encoder"))).to(dtype),
        }


def save_random_sdxl(out: Path, *, device: torch.device | str, dtype: torch.dtype) -> RandomWeights:
    """Build and save: ``out/base`` (a diffusers SDXL folder), ``out/controlnet``, ``out/ip_adapter``
    (the h94/IP-Adapter layout: ``sdxl_models/ip-adapter_sdxl.safetensors`` + ``image_encoder``)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    models = build_models(device=device, dtype=dtype)
    tokenizer_dir = out / "tokenizer"
    write_byte_level_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    pipe = StableDiffusionXLPipeline(
        vae=models["vae"], text_encoder=models["text_encoder"], text_encoder_2=models["text_encoder_2"],
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=models["unet"],
        scheduler=EulerDiscreteScheduler.from_config(config("scheduler")),
    )
    weights = RandomWeights(base=out / "base", controlnet=out / "controlnet", ip_adapter=out / "ip_adapter")
    pipe.save_pretrained(weights.base, safe_serialization=True)
    models["controlnet"].save_pretrained(weights.controlnet, safe_serialization=True)
    target = weights.ip_adapter / IP_ADAPTER_SUBFOLDER
    models["image_encoder"].save_pretrained(target / "image_encoder", safe_serialization=True)
    _save_ip_adapter(models["unet"], models["image_encoder"].config.projection_dim, target / IP_ADAPTER_WEIGHT)
    return weights


def _save_ip_adapter(unet: Any, image_dim: int, path: Path) -> None:
    """The keys diffusers' ``load_ip_adapter`` reads: the image projection, and a to_k_ip / to_v_ip
    pair for every cross-attention layer (numbered as h94 numbers them: odd ids, attn2 only)."""
    from safetensors.torch import save_file

    cross = unet.config.cross_attention_dim
    like = {"dtype": unet.dtype, "device": unet.device}
    weights = {
        "image_proj.proj.weight": torch.randn(cross * IP_TOKENS, image_dim, **like) * 0.02,
        "image_proj.proj.bias": torch.zeros(cross * IP_TOKENS, **like),
        "image_proj.norm.weight": torch.ones(cross, **like),
        "image_proj.norm.bias": torch.zeros(cross, **like),
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = _hidden_size(unet.config.block_out_channels, name)
        weights[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross, **like) * 0.02
        weights[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross, **like) * 0.02
        key_id += 2
    save_file({key: value.contiguous().cpu() for key, value in weights.items()}, str(path))


def _hidden_size(block_out_channels: list[int], processor: str) -> int:
    block, _, rest = processor.partition(".")
    if block == "mid_block":
        return block_out_channels[-1]
    index = int(rest.split(".")[0])
    return list(reversed(block_out_channels))[index] if block == "up_blocks" else block_out_channels[index]
