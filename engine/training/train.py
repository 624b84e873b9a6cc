"""The character trainer: a PEFT LoRA on SDXL's UNet (optionally its text encoders), with
DreamBooth prior preservation, checkpoints the engine loads, and exact resume.

``train_lora(job)`` runs, in order:

1. load the dataset (``engine.training.data``) and, with a class prompt, the class pictures
   (``engine.training.prior`` generates the missing ones with the base model, once);
2. load the base model's parts and put LoRA adapters on the attention projections;
3. encode every picture with the VAE and every caption with both text encoders once
   (``train.cache_latents``), instead of once per epoch;
4. train: noise-prediction MSE (min-SNR weighted when ``snr_gamma`` > 0), plus the prior loss,
   AdamW (8-bit with bitsandbytes), warm-up scheduler, gradient accumulation and checkpointing,
   bf16/fp16 autocast on CUDA and fp32 on the CPU;
5. every ``checkpoint_every`` steps, write ``OUT/checkpoint-N/``: the LoRA as
   ``pytorch_lora_weights.safetensors`` (what ``pipe.load_lora_weights`` and ``engine.lora``
   read), ``training_state.json`` and the optimizer/scheduler/RNG state that ``resume_from``
   continues from, bit for bit.

torch, diffusers and peft are imported inside the functions.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import TrainError
from engine.models import ModelLoadError, local_or_hub
from engine.settings import TrainSettings
from engine.training.data import Example, load_dataset
from engine.training.prior import class_examples_for

log = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"
STATE_FILE = "training_state.json"
RESUME_FILE = "optimizer.pt"
CHECKPOINT_PREFIX = "checkpoint-"
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass(frozen=True)
class TrainJob:
    images: Path
    base_model: str
    out: Path
    settings: TrainSettings = TrainSettings()
    class_prompt: str = ""
    class_images: Path | None = None
    resume_from: Path | None = None
    device: str = "auto"  # auto | cpu | cuda

    def check(self) -> None:
        if bool(self.class_prompt) != (self.class_images is not None):
            raise TrainError("prior preservation needs both --class-prompt and --class-images")
        if self.resume_from is not None and not (self.resume_from / RESUME_FILE).is_file():
            raise TrainError(f"--resume-from {self.resume_from}: not a checkpoint (no {RESUME_FILE})")


@dataclass
class TrainResult:
    step: int
    loss: float
    checkpoints: list[Path]
    seconds: float
    encodes: int  # VAE encodes done: pictures once each when cached, every step otherwise
    losses: list[float] = field(default_factory=list)


# -- the base model's parts ------------------------------------------------------------------------
@dataclass
class Parts:
    unet: Any
    vae: Any
    text_encoders: tuple[Any, Any]
    tokenizers: tuple[Any, Any]
    noise_scheduler: Any
    device: Any
    weight_dtype: Any  # frozen weights; trainable LoRA weights stay float32
    autocast_dtype: Any  # None on the CPU


def load_parts(base_model: str, settings: TrainSettings, device: str = "auto") -> Parts:
    """UNet, VAE, both text encoders and tokenizers, and a DDPM noise scheduler, frozen."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    source = local_or_hub("--base-model", base_model)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda, but no CUDA device is available")
    torch_device = torch.device("cuda" if use_cuda else "cpu")
    precision = settings.mixed_precision
    if precision == "auto":
        precision = "bf16" if use_cuda else "no"
    if precision != "no" and not use_cuda:
        raise TrainError(f"train.mixed_precision = {precision!r} needs CUDA; use 'auto' or 'no' on the CPU")
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    weight_dtype = half or torch.float32
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", dtype=weight_dtype)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae")  # float32: SDXL's VAE overflows in fp16
        te1 = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=weight_dtype)
        te2 = CLIPTextModelWithProjection.from_pretrained(source, subfolder="text_encoder_2", dtype=weight_dtype)
        tok1 = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
        tok2 = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2")
        noise_scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"--base-model {base_model}: cannot load the SDXL parts ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
    for module in (unet, vae, te1, te2):
        module.requires_grad_(False)
    for module in (unet, vae, te1, te2):
        module.to(torch_device)
    return Parts(unet, vae, (te1, te2), (tok1, tok2), noise_scheduler, torch_device, weight_dtype, half)


def add_lora(parts: Parts, settings: TrainSettings) -> list[Any]:
    """LoRA adapters on the UNet attention projections (and the text encoders'); the trainable parameters."""
    import torch
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    def config(targets: tuple[str, ...]) -> LoraConfig:
        return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                          init_lora_weights="gaussian", target_modules=list(targets))

    modules = [parts.unet]
    parts.unet.add_adapter(config(UNET_TARGETS))
    if settings.train_text_encoder:
        from peft import inject_adapter_in_model

        for encoder in parts.text_encoders:
            # peft's own injection: transformers 5's add_adapter wants a newer peft than the pinned 0.21
            inject_adapter_in_model(config(TEXT_TARGETS), encoder, adapter_name="default")
            encoder.lora_config = config(TEXT_TARGETS)
            modules.append(encoder)
    cast_training_params(modules, dtype=torch.float32)
    if settings.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
        if settings.train_text_encoder:
            for encoder in parts.text_encoders:
                encoder.gradient_checkpointing_enable()
    for module in modules:
        module.train()
    return [p for module in modules for p in module.parameters() if p.requires_grad]


# -- encoding ----------------------------------------------------------------------------------------
def encode_text(parts: Parts, captions: list[str]) -> tuple[Any, Any]:
    """SDXL's prompt embeddings (both encoders' penultimate hidden states) and pooled embedding."""
    hidden, pooled = [], None
    for tokenizer, encoder in zip(parts.tokenizers, parts.text_encoders, strict=True):
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(parts.device)
        output = encoder(ids, output_hidden_states=True)
        pooled = output[0]  # the second encoder's projected text embedding is the one that stays
        hidden.append(output.hidden_states[-2])
    import torch

    return torch.cat(hidden, dim=-1), pooled


def encode_latent_dist(parts: Parts, example: Example) -> tuple[Any, Any]:
    """(mean, std) of the VAE's latent distribution for a picture; sampled afresh every step."""
    import numpy as np
    import torch

    pixels = torch.from_numpy(np.asarray(example.image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    with torch.no_grad():
        dist = parts.vae.encode(pixels[None].to(parts.device)).latent_dist
    return dist.mean[0], dist.std[0]


@dataclass
class Encoded:
    """What each example turns into before the UNet; built once when cached."""

    mean: Any
    std: Any
    prompt_embeds: Any | None  # None when the text encoders train: encoded every step
    pooled: Any | None


class Encoder:
    """Encodes examples, once each when caching, and counts the VAE encodes it does."""

    def __init__(self, parts: Parts, settings: TrainSettings) -> None:
        self.parts, self.settings = parts, settings
        self.cache: dict[int, Encoded] = {}
        self.encodes = 0

    def __call__(self, index: int, example: Example) -> Encoded:
        if index in self.cache:
            return self.cache[index]
        import torch

        mean, std = encode_latent_dist(self.parts, example)
        self.encodes += 1
        prompt_embeds = pooled = None
        if not self.settings.train_text_encoder:
            with torch.no_grad():
                prompt_embeds, pooled = encode_text(self.parts, [example.caption])
            prompt_embeds, pooled = prompt_embeds[0], pooled[0]
        encoded = Encoded(mean, std, prompt_embeds, pooled)
        if self.settings.cache_latents:
            self.cache[index] = encoded
        return encoded


# -- the order examples are drawn in ------------------------------------------------------------------
@dataclass
class Sampler:
    """Epochs of shuffled example indices from the trainer's generator; its state resumes exactly."""

    size: int
    order: list[int] = field(default_factory=list)
    position: int = 0

    def take(self, count: int, generator: Any) -> list[int]:
        import torch

        picked = []
        for _ in range(count):
            if self.position >= len(self.order):
                self.order = torch.randperm(self.size, generator=generator).tolist()
                self.position = 0
            picked.append(self.order[self.position])
            self.position += 1
        return picked

    def state(self) -> dict:
        return {"size": self.size, "order": list(self.order), "position": self.position}


# -- the loss -------------------------------------------------------------------------------------------
def diffusion_loss(parts: Parts, settings: TrainSettings, batch: list[Encoded], examples: list[Example],
                   generator: Any) -> Any:
    """Per-example noise-prediction MSE, min-SNR weighted when ``snr_gamma`` > 0."""
    import torch
    import torch.nn.functional as F
    from diffusers.training_utils import compute_snr

    device, scheduler = parts.device, parts.noise_scheduler
    mean = torch.stack([e.mean for e in batch])
    std = torch.stack([e.std for e in batch])
    latents = (mean + std * torch.randn(mean.shape, generator=generator).to(device)) * parts.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator).to(device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),), generator=generator).to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if batch[0].prompt_embeds is not None:
        prompt_embeds = torch.stack([e.prompt_embeds for e in batch])
        pooled = torch.stack([e.pooled for e in batch])
    else:
        prompt_embeds, pooled = encode_text(parts, [example.caption for example in examples])
    time_ids = torch.tensor([example.time_ids for example in examples], device=device)
    with torch.autocast(device.type, dtype=parts.autocast_dtype, enabled=parts.autocast_dtype is not None):
        prediction = parts.unet(noisy.to(parts.weight_dtype), timesteps, encoder_hidden_states=prompt_embeds,
                                added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    prediction_type = scheduler.config.prediction_type
    target = noise if prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
    loss = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if settings.snr_gamma > 0:
        snr = compute_snr(scheduler, timesteps)
        clipped = torch.clamp(snr, max=settings.snr_gamma)
        loss = loss * (clipped / (snr + 1 if prediction_type == "v_prediction" else snr))
    return loss


# -- checkpoints -------------------------------------------------------------------------------------------
def checkpoint_dirs(out: Path) -> list[Path]:
    """``OUT/checkpoint-N`` folders in step order."""
    found = [p for p in out.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def lora_layers(module: Any) -> dict:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(module))


def save_lora(folder: Path, parts: Parts, settings: TrainSettings) -> None:
    from diffusers import StableDiffusionXLPipeline

    extra: dict[str, Any] = {}
    if settings.train_text_encoder:
        te1, te2 = parts.text_encoders
        extra = {"text_encoder_lora_layers": lora_layers(te1), "text_encoder_2_lora_layers": lora_layers(te2),
                 "text_encoder_lora_adapter_metadata": te1.lora_config.to_dict(),
                 "text_encoder_2_lora_adapter_metadata": te2.lora_config.to_dict()}
    StableDiffusionXLPipeline.save_lora_weights(
        folder, unet_lora_layers=lora_layers(parts.unet), safe_serialization=True,
        unet_lora_adapter_metadata=parts.unet.peft_config["default"].to_dict(), **extra,
    )


def load_lora_into(parts: Parts, folder: Path) -> None:
    """Put a checkpoint's LoRA weights into the adapters ``add_lora`` made (for resuming)."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.training_utils import _set_state_dict_into_text_encoder
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft import set_peft_model_state_dict

    state, _alphas = StableDiffusionXLPipeline.lora_state_dict(str(folder))
    unet_state = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in state.items()
                                                  if k.startswith("unet.")})
    result = set_peft_model_state_dict(parts.unet, unet_state, adapter_name="default")
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise TrainError(f"--resume-from {folder}: its LoRA does not fit this model ({len(unexpected)} unknown keys)")
    if any(k.startswith("text_encoder.") for k in state):
        te1, te2 = parts.text_encoders
        _set_state_dict_into_text_encoder(state, prefix="text_encoder.", text_encoder=te1)
        _set_state_dict_into_text_encoder(state, prefix="text_encoder_2.", text_encoder=te2)


@dataclass
class Loop:
    """Everything that moves while training; saved whole in each checkpoint."""

    parts: Parts
    optimizer: Any
    lr_scheduler: Any
    generator: Any
    sampler: Sampler
    scaler: Any
    step: int = 0

    def save(self, out: Path, job: TrainJob, loss: float, seconds: float) -> Path:
        """``OUT/checkpoint-N``, written beside and renamed into place: never half a checkpoint."""
        import torch

        final = out / f"{CHECKPOINT_PREFIX}{self.step}"
        partial = out / f".{final.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        save_lora(partial, self.parts, job.settings)
        torch.save({
            "optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "sampler": self.sampler.state(), "scaler": self.scaler.state_dict() if self.scaler else None,
        }, partial / RESUME_FILE)
        state = {"step": self.step, "loss": loss, "seconds": round(seconds, 3), "base_model": job.base_model,
                 "images": str(job.images), "class_prompt": job.class_prompt, "lora_file": LORA_FILE,
                 "config": job.settings.model_dump(mode="json")}
        (partial / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        log.info("checkpoint %s (loss %.4f)", final, loss)
        return final

    def restore(self, folder: Path) -> None:
        import torch

        load_lora_into(self.parts, folder)
        saved = torch.load(folder / RESUME_FILE, weights_only=False)  # our own file: optimizer state and RNG
        self.optimizer.load_state_dict(saved["optimizer"])
        self.lr_scheduler.load_state_dict(saved["lr_scheduler"])
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        sampler = saved["sampler"]
        self.sampler = Sampler(sampler["size"], list(sampler["order"]), sampler["position"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.step = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))["step"]


def make_optimizer(params: list[Any], settings: TrainSettings) -> Any:
    import torch

    if settings.adam_8bit:
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise TrainError("train.adam_8bit needs bitsandbytes (pip install bitsandbytes; CUDA only)") from exc
        return bnb.optim.AdamW8bit(params, lr=settings.learning_rate, weight_decay=1e-2)
    return torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=1e-2)


# -- the run ------------------------------------------------------------------------------------------------
ProgressHook = Callable[[int, float], None]


def train_lora(job: TrainJob, *, show_progress: bool = True, on_step: ProgressHook | None = None) -> TrainResult:
    """Train (or resume) and write checkpoints under ``job.out``; the result says where it stopped."""
    import torch
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    # 1. check inputs and read the pictures
    job.check()
    s = job.settings
    examples = load_dataset(job.images, trigger=s.trigger, template=s.caption_template, resolution=s.resolution,
                            crop=s.crop)
    class_examples: list[Example] = []
    if job.class_prompt and job.class_images is not None:
        class_examples = class_examples_for(job, examples)
    job.out.mkdir(parents=True, exist_ok=True)
    # 2. models and adapters
    torch.manual_seed(s.seed)
    parts = load_parts(job.base_model, s, job.device)
    params = add_lora(parts, s)
    optimizer = make_optimizer(params, s)
    lr_scheduler = get_scheduler(s.lr_scheduler, optimizer=optimizer, num_warmup_steps=s.warmup_steps,
                                 num_training_steps=s.steps)
    scaler = torch.amp.GradScaler("cuda") if parts.autocast_dtype == torch.float16 else None
    generator = torch.Generator().manual_seed(s.seed)
    loop = Loop(parts, optimizer, lr_scheduler, generator, Sampler(len(examples)), scaler)
    if job.resume_from is not None:
        loop.restore(job.resume_from)
        log.info("resumed from %s at step %d", job.resume_from, loop.step)
    # 3. train
    encoder = Encoder(parts, s)
    everything = examples + class_examples
    started, losses, checkpoints, loss_value = time.perf_counter(), [], [], math.nan
    bar = tqdm(total=s.steps, initial=loop.step, desc="train-lora", unit="step", disable=not show_progress)
    while loop.step < s.steps:
        loss_value = _optimizer_step(loop, s, encoder, everything, len(examples), params)
        loop.step += 1
        losses.append(loss_value)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        bar.update(1)
        if on_step:
            on_step(loop.step, loss_value)
        if not math.isfinite(loss_value):
            bar.close()
            raise TrainError(f"the loss became {loss_value} at step {loop.step}; lower train.learning_rate")
        if loop.step % s.checkpoint_every == 0 or loop.step == s.steps:
            checkpoints.append(loop.save(job.out, job, loss_value, time.perf_counter() - started))
    bar.close()
    return TrainResult(loop.step, loss_value, checkpoints, time.perf_counter() - started, encoder.encodes, losses)


def _optimizer_step(loop: Loop, s: TrainSettings, encoder: Encoder, everything: list[Example], instances: int,
                    params: list[Any]) -> float:
    """One optimizer step over ``gradient_accumulation`` micro-batches; the mean loss."""
    import torch

    total = 0.0
    class_count = len(everything) - instances
    for _ in range(s.gradient_accumulation):
        picked = loop.sampler.take(s.batch_size, loop.generator)
        if class_count:  # DreamBooth: each instance picture is paired with a class picture
            picked += [instances + int(torch.randint(class_count, (1,), generator=loop.generator)) for _ in picked]
        chosen = [everything[i] for i in picked]
        per_example = diffusion_loss(loop.parts, s, [encoder(i, everything[i]) for i in picked], chosen,
                                     loop.generator)
        if class_count:
            half = len(picked) // 2
            loss = per_example[:half].mean() + s.prior_loss_weight * per_example[half:].mean()
        else:
            loss = per_example.mean()
        scaled = loss / s.gradient_accumulation
        (loop.scaler.scale(scaled) if loop.scaler else scaled).backward()
        total += float(loss.detach())
    if loop.scaler:
        loop.scaler.unscale_(loop.optimizer)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    if loop.scaler:
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
    else:
        loop.optimizer.step()
    loop.lr_scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    return total / s.gradient_accumulation
