"""Engine settings: the engine's own slice of config.toml.

The bot's config model embeds these sections as they are, so the engine never imports
``bot`` and every range is declared once, here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.limits import MAX_FRAMES, MIN_FRAMES


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlannerSettings(_Section):
    backend: Literal["auto", "offline", "openai"] = "auto"
    min_shots: int = Field(default=6, ge=MIN_FRAMES, le=MAX_FRAMES)
    max_shots: int = Field(default=10, ge=MIN_FRAMES, le=MAX_FRAMES)
    # OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp, gateways)
    model: str = Field(default="gpt-4o", min_length=1)
    base_url: str = ""  # "" = the SDK's default, or $OPENAI_BASE_URL when set
    temperature: float = Field(default=0.4, ge=0.0, le=2.0)
    timeout_s: float = Field(default=30.0, ge=1.0, le=600.0)
    max_retries: int = Field(default=2, ge=0, le=10)  # the SDK's retries: timeouts, 429, 5xx
    output_retries: int = Field(default=1, ge=0, le=5)  # new requests after unusable output
    # the longest reply one request may cost; a 12-shot plan is about 2000 tokens
    max_completion_tokens: int = Field(default=4000, ge=500, le=32_000)
    caption_language: Literal["story", "en"] = "story"

    @model_validator(mode="after")
    def _ordered(self) -> PlannerSettings:
        if self.min_shots > self.max_shots:
            raise ValueError(f"min_shots ({self.min_shots}) must not exceed max_shots ({self.max_shots})")
        return self


class PromptSettings(_Section):
    trigger_token: str = Field(default="aldar_kose_man", min_length=1, pattern=r"^\S+$")
    character: str = Field(
        default=(
            "beardless young Kazakh man with a sly smile, wearing a patched blue chapan robe "
            "and a white felt kalpak hat"
        ),
        min_length=1,
    )
    style_suffix: str = Field(
        default="storybook illustration, clean line art, soft colours, consistent character design",
        min_length=1,
    )
    negative_prompt: str = Field(
        default=(
            "beard, moustache, multiple people with the same face, deformed, extra limbs, "
            "blurry, lowres, text, watermark, photo"
        )
    )
    # Prefer simplified, front-facing, close-up descriptions: they keep the face consistent.
    face_bias: bool = True


class RenderSettings(_Section):
    """The ``[engine]`` section: which renderer, which weights, and how to run them."""

    renderer: Literal["auto", "preview", "sdxl"] = "auto"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"  # auto: fp16 on CUDA, fp32 on CPU
    base_model: str = Field(default="stabilityai/stable-diffusion-xl-base-1.0", min_length=1)
    vae: str = ""  # optional VAE override, e.g. "madebyollin/sdxl-vae-fp16-fix"
    lora: str = ""  # character LoRA: a .safetensors file, a folder or a hub id; "" = none
    lora_weight_name: str = ""  # file inside a LoRA folder or repo
    lora_scale: float = Field(default=1.0, ge=0.0, le=2.0)
    # lets a user draw their own character without the LoRA (/story --no-lora), at the cost of a
    # host-memory copy of the layers the LoRA changes, twice (engine.models.CharacterLora)
    lora_switch: bool = True
    scheduler: Literal["euler", "dpmpp_2m_karras"] = "dpmpp_2m_karras"
    steps: int = Field(default=30, ge=1, le=150)
    guidance: float = Field(default=6.0, ge=0.0, le=20.0)
    width: int = Field(default=1024, ge=64, le=2048, multiple_of=8)
    height: int = Field(default=1024, ge=64, le=2048, multiple_of=8)
    batch_size: int = Field(default=4, ge=1, le=16)
    clip_model: str = "openai/clip-vit-large-patch14"  # "" = no identity check
    reference_images: str = ""  # folder of character pictures for the identity check; "" = frame 1
    # CUDA performance settings; each is recorded in report.json when applied.
    sdpa: bool = True
    channels_last: bool = True
    fuse_qkv: bool = True
    compile_unet: bool = False
    vae_tiling: bool = False  # SDXL's VAE tiles only above 1024 px (128 latents): no help at 1024²
    # decode a batch one frame at a time: "auto" = on CUDA when batch_size > 1 (the fp32-upcast
    # decode of a whole batch is the largest transient, ~10-15 GB for 4 x 1024²)
    vae_slicing: Literal["auto"] | bool = "auto"
    cpu_offload: bool = False
    # Few-step draft mode: a distilled LoRA with its own scheduler, steps and guidance.
    draft: bool = False
    draft_lora: str = "ByteDance/SDXL-Lightning"
    draft_lora_weight_name: str = "sdxl_lightning_4step_lora.safetensors"
    draft_steps: int = Field(default=4, ge=1, le=16)
    draft_guidance: float = Field(default=0.0, ge=0.0, le=20.0)
    # Ref-guided mode: frame 1 is the reference (IP-Adapter), each shot's pose drives ControlNet-OpenPose.
    # with SDXL, load its ControlNet + IP-Adapter at start-up: "auto" when their weights resolve
    # (else ref-guided is off, and says why), true: they must load, false: never
    ref_guided: Literal["auto"] | bool = "auto"
    controlnet: str = "xinsir/controlnet-openpose-sdxl-1.0"
    ip_adapter: str = "h94/IP-Adapter"
    ip_adapter_subfolder: str = "sdxl_models"  # "" = the weights file is at the folder's root
    ip_adapter_weight: str = "ip-adapter_sdxl.safetensors"  # or "ip-adapter-plus-face_sdxl_vit-h.safetensors"
    image_encoder: str = "image_encoder"  # folder under the subfolder, or a path with "/" from the repo root
    ip_adapter_scale: float = Field(default=0.5, ge=0.0, le=1.0)
    # what IP-Adapter sees: frame 1, the pictures in reference_images, or both
    ip_adapter_reference: Literal["frame1", "images", "both"] = "frame1"
    controlnet_scale: float = Field(default=0.8, ge=0.0, le=2.0)
    control_guidance_start: float = Field(default=0.0, ge=0.0, le=1.0)
    control_guidance_end: float = Field(default=1.0, ge=0.0, le=1.0)
    # where each shot's pose skeleton comes from: the built-in templates, or OpenPose run on pictures
    pose_source: Literal["templates", "detect"] = "templates"
    pose_images: str = ""  # detect: a folder with a picture per pose, named after it (riding.png, arms_crossed.jpg)
    pose_detector: str = "lllyasviel/Annotators"  # OpenPose body weights (body_pose_model.pth): hub id, folder or file
    # Test/demo knob: sleep this long per frame in the preview renderer to imitate GPU time.
    preview_delay_s: float = Field(default=0.0, ge=0.0, le=60.0)

    @model_validator(mode="after")
    def _offload_or_compile(self) -> RenderSettings:
        if self.cpu_offload and self.compile_unet:
            # accelerate's offload hooks move the UNet between devices under a compiled graph, which
            # breaks it (diffusers#4399, pytorch#150711)
            raise ValueError("cpu_offload and compile_unet cannot both be on: a compiled UNet does not survive being "
                             "offloaded; choose one (cpu_offload for small GPUs, compile_unet for speed)")
        return self


class ValidateSettings(_Section):
    threshold: float = Field(default=0.70, ge=0.0, le=1.0)
    max_retries: int = Field(default=2, ge=0, le=5)
    copy_ceiling: float = Field(default=0.95, ge=0.0, le=1.0)  # above this a frame copies its reference
    face_check: bool = True  # with SDXL: detect faces (dlib), score CLIP on the face crop, compare face embeddings
    face_threshold: float = Field(default=0.6, ge=0.0, le=2.0)  # largest face distance that is the same person


class GridSettings(_Section):
    columns: int = Field(default=0, ge=0, le=10)  # 0 = pick from the frame count
    gutter: int = Field(default=16, ge=0, le=128)
    caption_lines: int = Field(default=3, ge=0, le=8)
    dialogue_lines: int = Field(default=2, ge=0, le=8)
    max_bytes: int = Field(default=10_000_000, ge=100_000, le=50_000_000)
    max_dimension_sum: int = Field(default=10_000, ge=256, le=20_000)
    max_aspect_ratio: float = Field(default=20.0, ge=1.0, le=20.0)


class ExportSettings(_Section):
    """``[export]``: the files a finished board is taken away in, the PDF shot sheet and the MP4 animatic.

    ``max_bytes`` holds for each file: Discord's 10 MiB attachment limit (Telegram allows 50 MB)."""

    paper: Literal["A4", "Letter"] = "A4"
    pdf_dpi: int = Field(default=150, ge=72, le=600)  # frames are embedded at this resolution on the page
    pdf_jpeg_quality: int = Field(default=85, ge=30, le=95)
    max_bytes: int = Field(default=10 * 2**20, ge=1_000_000, le=50_000_000)
    animatic_fps: int = Field(default=24, ge=12, le=60)
    animatic_long_side: int = Field(default=1280, ge=128, le=3840)  # the video's longer side, before any fitting
    animatic_min_seconds: float = Field(default=2.0, gt=0.0, le=30.0)  # a panel's time on screen
    animatic_max_seconds: float = Field(default=6.0, gt=0.0, le=60.0)
    animatic_seconds_per_word: float = Field(default=0.4, ge=0.0, le=5.0)  # of the caption (and its line)
    animatic_crossfade_seconds: float = Field(default=0.5, ge=0.0, le=3.0)

    @model_validator(mode="after")
    def _durations_in_order(self) -> ExportSettings:
        if self.animatic_min_seconds > self.animatic_max_seconds:
            raise ValueError(f"animatic_min_seconds ({self.animatic_min_seconds}) is above "
                             f"animatic_max_seconds ({self.animatic_max_seconds})")
        if 2 * self.animatic_crossfade_seconds > self.animatic_min_seconds:
            raise ValueError("animatic_crossfade_seconds must be at most half of animatic_min_seconds")
        return self


class EngineSettings(_Section):
    planner: PlannerSettings = PlannerSettings()
    prompt: PromptSettings = PromptSettings()
    render: RenderSettings = RenderSettings()
    validation: ValidateSettings = ValidateSettings()
    grid: GridSettings = GridSettings()
    export: ExportSettings = ExportSettings()


class TrainSettings(_Section):
    """``[train]``: the character trainer (``python -m bot train-lora``); flags override each key."""

    trigger: str = Field(default="aldar_kose_man", min_length=1)
    caption_template: str = "a photo of {trigger}"  # for pictures without a .txt caption beside them
    resolution: int = Field(default=1024, ge=32, le=2048)  # square side, a multiple of 8
    crop: Literal["center", "resize"] = "center"  # center-crop to a square, or squash the whole picture
    steps: int = Field(default=800, ge=1, le=100_000)
    checkpoint_every: int = Field(default=100, ge=1, le=100_000)
    batch_size: int = Field(default=1, ge=1, le=64)
    gradient_accumulation: int = Field(default=1, ge=1, le=128)
    learning_rate: float = Field(default=1e-4, gt=0.0, le=1.0)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant_with_warmup"
    warmup_steps: int = Field(default=50, ge=0, le=100_000)
    rank: int = Field(default=16, ge=1, le=256)
    alpha: float = Field(default=16.0, gt=0.0, le=1024.0)
    dropout: float = Field(default=0.0, ge=0.0, le=0.9)
    train_text_encoder: bool = False  # LoRAs on both text encoders too (their embeddings are then not cached)
    snr_gamma: float = Field(default=5.0, ge=0.0, le=100.0)  # min-SNR loss weighting; 0 = plain MSE
    adam_8bit: bool = False  # bitsandbytes' 8-bit AdamW (needs bitsandbytes and CUDA)
    gradient_checkpointing: bool = True
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: bf16 on CUDA, fp32 on the CPU
    cache_latents: bool = True  # encode each picture (and caption) once, not every epoch
    seed: int = Field(default=0, ge=0)
    # DreamBooth prior preservation (with --class-prompt)
    prior_loss_weight: float = Field(default=1.0, ge=0.0, le=10.0)
    num_class_images: int = Field(default=100, ge=1, le=10_000)
    class_steps: int = Field(default=30, ge=1, le=150)  # steps for each generated class picture

    @model_validator(mode="after")
    def _resolution_fits_the_vae(self) -> TrainSettings:
        if self.resolution % 8:
            raise ValueError(f"train.resolution must be a multiple of 8, got {self.resolution}")
        if "{trigger}" not in self.caption_template:
            raise ValueError("train.caption_template must contain {trigger}")
        return self


class PickSettings(_Section):
    """``[pick]``: how ``python -m bot pick-checkpoint`` compares checkpoints."""

    prompts: list[str] = Field(
        default=[
            "a photo of {trigger} standing in the steppe",
            "{trigger} riding a horse at sunset",
            "a close-up portrait of {trigger} laughing",
            "{trigger} sitting in a yurt by the fire",
        ],
        min_length=4,
        max_length=8,
    )
    seeds: list[int] = Field(default=[11, 22], min_length=1, max_length=8)  # each prompt is drawn once per seed
    steps: int = Field(default=25, ge=1, le=150)
    guidance: float = Field(default=6.0, ge=0.0, le=20.0)
    resolution: int = Field(default=1024, ge=32, le=2048)
    copy_ceiling: float = Field(default=0.95, ge=0.0, le=1.0)  # identity above this is a copy of a training picture
    clip_t_weight: float = Field(default=1.0, ge=0.0, le=10.0)  # how much prompt fidelity counts against identity

    @model_validator(mode="after")
    def _prompts_name_the_character(self) -> PickSettings:
        missing = [prompt for prompt in self.prompts if "{trigger}" not in prompt]
        if missing:
            raise ValueError(f"pick.prompts must each contain {{trigger}}: {missing}")
        return self
