"""Where the bot's models are loaded: the SDXL pipeline (+ VAE, LoRAs, scheduler), the
ref-guided parts, CLIP, the face models and the pose detector. (The trainer loads the parts it
trains, in training precision, itself: engine/training/train.py.)

``ModelLoader`` loads each component once per process, at start-up, counts every load (a
board reports how many it caused: 0 when warm), and records which settings it applied so
report.json can say so. A missing path or an offline hub id fails here, at start-up, with
the config key and the path in the message, never at the first job.

torch, diffusers and transformers are imported inside the functions that need them, so the
planner and preview paths stay free of the ML stack.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from engine.errors import EngineError
from engine.images import describe_suffixes, pictures_in
from engine.rendering.poses import PoseLibrary
from engine.settings import RenderSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
CHARACTER_ADAPTER = "character"
DRAFT_ADAPTER = "draft"


class ModelLoadError(EngineError):
    """A model could not be loaded; the message names the config key and the path or id."""

    def __init__(self, message: str, *, key: str = "", value: str = "") -> None:
        super().__init__(message)
        self.key = key  # the config key whose weights did not load, e.g. "engine.controlnet"
        self.value = value

    @property
    def weights(self) -> str:
        """The weights that did not load, short enough for a chat reply: key and the path's last part."""
        if not self.key:
            return ""
        name = Path(self.value).name if self.value else ""
        return f"{self.key} = {name}" if name else self.key


@dataclass(frozen=True)
class Runtime:
    device: Any  # torch.device
    dtype: Any  # torch.dtype

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def resolve_runtime(settings: RenderSettings) -> Runtime:
    """Device and dtype from config: fp16 on CUDA and fp32 on CPU unless configured otherwise."""
    import torch

    has_cuda = torch.cuda.is_available()
    if settings.device == "cuda" and not has_cuda:
        raise ModelLoadError("engine.device = 'cuda', but no CUDA device is available")
    device = torch.device("cuda" if settings.device == "cuda" or (settings.device == "auto" and has_cuda) else "cpu")
    names = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if settings.dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = names[settings.dtype]
    if device.type == "cpu" and dtype == torch.float16:
        raise ModelLoadError("engine.dtype = 'float16' needs CUDA; use 'auto', 'float32' or 'bfloat16' on the CPU")
    return Runtime(device=device, dtype=dtype)


NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")
_DRIVER_VERSION = re.compile(r"Kernel Module\s+(?:for \S+\s+)?(\d+(?:\.\d+)+)")


def nvidia_driver_version(text: str | None = None) -> str:
    """The host's NVIDIA driver (e.g. "580.65.06"), from the kernel module's version file; "unknown"
    where it cannot be read. The cu130 torch wheels need R580 or newer."""
    if text is None:
        try:
            text = NVIDIA_DRIVER_FILE.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "unknown"
    match = _DRIVER_VERSION.search(text)
    return match.group(1) if match else "unknown"


def gpu_summary() -> str:
    """What the start-up line says about the GPU: its name, the driver, and torch's CUDA."""
    import torch

    name = torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    return (f"{name} (compute {major}.{minor}), NVIDIA driver {nvidia_driver_version()}, "
            f"torch {torch.__version__} with CUDA {torch.version.cuda}")


def local_or_hub(key: str, value: str) -> str:
    """A local path if one exists there; else the value as a hub id. Paths that are clearly
    paths (absolute, ./, ~, or a .safetensors file) must exist."""
    path = Path(value).expanduser()
    if path.exists():
        return str(path)
    if value.startswith(("/", "./", "../", "~")) or value.endswith(".safetensors"):
        raise ModelLoadError(f"{key}: path not found: {value}", key=key, value=value)
    return value


@dataclass
class CharacterLora:
    """The character LoRA, fused for speed, and a way to draw one board without it (``--no-lora``).

    A fused LoRA cannot be unfused exactly in half precision (w + d - d is not w), and a bot
    switching on and off for every such board would drift its weights. So both versions of
    each layer the LoRA changes are kept on the CPU, and a switch copies one back: exact, every
    time. Costs host memory of twice those layers' weights (``engine.lora_switch``)."""

    layers: list[Any]  # the nn.Modules whose ``weight`` the character LoRA changed
    with_lora: list[Any]  # their fused weights, on the CPU
    without_lora: list[Any]  # the same weights without the character LoRA (other LoRAs fused), on the CPU
    on: bool = True

    @classmethod
    def after_fusing(cls, without: list[tuple[Any, Any]]) -> CharacterLora:
        """From (layer, weight without the character LoRA) pairs, once the LoRAs are fused."""
        return cls(layers=[layer for layer, _ in without],
                   with_lora=[layer.weight.detach().to("cpu", copy=True) for layer, _ in without],
                   without_lora=[weight for _, weight in without])

    def follow_fused_projections(self, unet: Any) -> None:
        """After ``fuse_qkv_projections``: attention reads ``to_qkv`` (self-attention) or
        ``to_kv`` (cross-attention), concatenations of the q/k/v weights, so they switch too."""
        import torch

        without = {id(layer): weight for layer, weight in zip(self.layers, self.without_lora, strict=True)}
        for module in unet.modules():
            for fused, parts in (("to_qkv", ("to_q", "to_k", "to_v")), ("to_kv", ("to_k", "to_v"))):
                layer = getattr(module, fused, None)
                sources = [getattr(module, name, None) for name in parts]
                if layer is None or None in sources or not any(id(src) in without for src in sources):
                    continue
                self.layers.append(layer)
                self.with_lora.append(layer.weight.detach().to("cpu", copy=True))
                self.without_lora.append(
                    torch.cat([without.get(id(src), src.weight.detach().to("cpu")) for src in sources]))

    def use(self, on: bool) -> None:
        if on == self.on:
            return
        import torch

        with torch.no_grad():
            for layer, weight in zip(self.layers, self.with_lora if on else self.without_lora, strict=True):
                layer.weight.copy_(weight)
        self.on = on
        log.info("character LoRA %s", "back on" if on else "off for this board (--no-lora)")


def _weights_without(pipe: Any, adapter: str) -> list[tuple[Any, Any]]:
    """For each layer ``adapter`` changes: (its base layer, what its weight will be once the
    other loaded adapters are fused but not this one), on the CPU. Read before fusing."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    pairs = []
    for component in (getattr(pipe, name, None) for name in ("unet", "text_encoder", "text_encoder_2")):
        if component is None:
            continue
        for module in component.modules():
            if not isinstance(module, BaseTunerLayer) or adapter not in getattr(module, "lora_A", {}):
                continue
            base = module.get_base_layer()
            weight = base.weight.detach().float()
            for other in module.active_adapters:
                if other != adapter and other in module.lora_A:
                    weight = weight + module.get_delta_weight(other).float()
            with torch.no_grad():
                # a copy: on a float32 CPU model .float() and .to() return the very tensor fusing changes
                pairs.append((base, weight.to("cpu", dtype=base.weight.dtype, copy=True)))
    return pairs


@dataclass
class ModelLoader:
    """Loads and caches components for one process. Not thread-safe: call it at start-up."""

    settings: RenderSettings
    loads: int = 0
    applied: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    runtime: Runtime | None = None
    _pipeline: Any = None
    _ref_guided: RefGuided | None = None
    _clip: tuple[Any, Any] | None = None
    _references: list[Image.Image] | None = None
    _faces: Any = None
    _poses: PoseLibrary | None = None
    character_lora: CharacterLora | None = None  # None: no character LoRA, or engine.lora_switch = false

    def report(self) -> dict:
        runtime = self.runtime
        return {
            "device": str(runtime.device) if runtime else None,
            "dtype": str(runtime.dtype).removeprefix("torch.") if runtime else None,
            "sources": dict(self.sources),
            "applied": dict(self.applied),
            "loads_total": self.loads,
        }

    # -- generic -----------------------------------------------------------------------------
    def _load(self, key: str, value: str, loader: Callable[[str], T]) -> T:
        source = local_or_hub(key, value)
        started = time.perf_counter()
        try:
            loaded = loader(source)
        except ModelLoadError:
            raise
        except Exception as exc:  # re-raised with the key and path a person can act on
            raise ModelLoadError(_load_failure(key, value, source, exc), key=key, value=value) from exc
        self.loads += 1
        self.sources[key] = source
        log.info("loaded %s from %s in %.2fs", key, source, time.perf_counter() - started)
        return loaded

    # -- SDXL ----------------------------------------------------------------------------------
    def pipeline(self) -> Any:
        """The SDXL pipeline with the LoRA(s) fused and the performance settings applied."""
        if self._pipeline is None:
            self._pipeline = self._build_pipeline()
        return self._pipeline

    def _build_pipeline(self) -> Any:
        from diffusers import AutoencoderKL, StableDiffusionXLPipeline

        s = self.settings
        self.runtime = runtime = resolve_runtime(s)
        extra: dict[str, Any] = {}
        if s.vae:
            extra["vae"] = self._load(
                "engine.vae", s.vae, lambda src: AutoencoderKL.from_pretrained(src, dtype=runtime.dtype)
            )
        pipe = self._load(
            "engine.base_model",
            s.base_model,
            lambda src: _from_pretrained(StableDiffusionXLPipeline, src, runtime, add_watermarker=False, **extra),
        )
        pipe.set_progress_bar_config(disable=True)
        self._set_scheduler(pipe)
        self._fuse_loras(pipe)
        self._apply_performance(pipe, runtime)
        return pipe

    def _set_scheduler(self, pipe: Any) -> None:
        from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

        s = self.settings
        if s.draft:  # distilled few-step LoRAs want Euler with trailing timesteps
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
            self.applied["scheduler"] = "euler (trailing, draft)"
        elif s.scheduler == "dpmpp_2m_karras":
            pipe.scheduler = DPMSolverMultistepScheduler.from_config(
                pipe.scheduler.config, algorithm_type="dpmsolver++", use_karras_sigmas=True
            )
            self.applied["scheduler"] = "dpmpp_2m_karras"
        else:
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
            self.applied["scheduler"] = "euler"

    def _fuse_loras(self, pipe: Any) -> None:
        s = self.settings
        adapters: list[tuple[str, float]] = []
        if s.lora:
            self._load_lora(pipe, "engine.lora", s.lora, s.lora_weight_name, CHARACTER_ADAPTER)
            adapters.append((CHARACTER_ADAPTER, s.lora_scale))
        if s.draft:
            self._load_lora(pipe, "engine.draft_lora", s.draft_lora, s.draft_lora_weight_name, DRAFT_ADAPTER)
            adapters.append((DRAFT_ADAPTER, 1.0))
        if not adapters:
            self.applied["lora"] = "none"
            return
        names = [name for name, _ in adapters]
        pipe.set_adapters(names, adapter_weights=[weight for _, weight in adapters])
        without = _weights_without(pipe, CHARACTER_ADAPTER) if s.lora and s.lora_switch else None
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        if without is not None:
            self.character_lora = CharacterLora.after_fusing(without)
        pipe.unload_lora_weights()  # the fused weights stay; the adapter layers go
        self.applied["lora"] = {name: weight for name, weight in adapters}

    def _load_lora(self, pipe: Any, key: str, value: str, weight_name: str, adapter: str) -> None:
        def load(source: str) -> None:
            path = Path(source)
            if path.is_file():
                pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
            else:
                pipe.load_lora_weights(source, weight_name=weight_name or None, adapter_name=adapter)

        self._load(key, value, load)

    def _apply_performance(self, pipe: Any, runtime: Runtime) -> None:
        import torch
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        s, applied = self.settings, self.applied
        # diffusers picks SDPA by default on torch 2; "off" means the classic processor for real.
        pipe.unet.set_attn_processor(AttnProcessor2_0() if s.sdpa else AttnProcessor())
        applied["sdpa"] = s.sdpa
        if s.fuse_qkv:
            # fusing sets new attention processors: done after load_ip_adapter it would silently drop
            # the IP-Adapter's, so it must stay here, before ref-guided mode loads
            if _has_ip_adapter(pipe.unet):
                raise RuntimeError("fuse_qkv must run before the IP-Adapter loads: it would replace its processors")
            pipe.fuse_qkv_projections()
            applied["fuse_qkv"] = True
            if self.character_lora is not None:  # the fused projections were built from LoRA'd weights
                self.character_lora.follow_fused_projections(pipe.unet)
        if s.vae_tiling:
            pipe.vae.enable_tiling()
            applied["vae_tiling"] = True
        if s.vae_slicing is True or (s.vae_slicing == "auto" and runtime.is_cuda and s.batch_size > 1):
            pipe.vae.enable_slicing()
            applied["vae_slicing"] = True
        applied["vae"] = _vae_precision(pipe, runtime, s.vae)
        if runtime.is_cuda and s.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
            applied["channels_last"] = True
        if runtime.is_cuda and s.cpu_offload:
            pipe.enable_model_cpu_offload()
            applied["cpu_offload"] = True
        else:
            pipe.to(runtime.device)
        if runtime.is_cuda and s.compile_unet:
            pipe.unet = torch.compile(pipe.unet, mode="max-autotune", fullgraph=True)
            applied["compile_unet"] = True  # the renderer warms it up once at start-up
        for flag in ("channels_last", "cpu_offload", "compile_unet"):
            if getattr(s, flag) and flag not in applied:
                applied[flag] = "skipped: needs CUDA"

    def uncompile_unet(self, reason: str) -> None:
        """Put the plain UNet back in both pipelines (the compiled one failed its warm-up)."""
        compiled = self.pipeline().unet
        plain = getattr(compiled, "_orig_mod", compiled)
        self._pipeline.unet = plain
        if self._ref_guided is not None:
            self._ref_guided.pipe.unet = plain
            self._ref_guided.unet = plain
        self.applied["compile_unet"] = f"off: the warm-up failed ({reason})"

    # -- ref-guided: ControlNet + IP-Adapter on the same UNet, VAE and text encoders ----------------
    def ref_guided(self) -> RefGuided:
        """The ControlNet pipeline sharing every base component, and the IP-Adapter, loaded once."""
        if self._ref_guided is None:
            self._ref_guided = self._build_ref_guided(self.pipeline())
        return self._ref_guided

    def _build_ref_guided(self, base: Any) -> RefGuided:
        from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

        s, runtime = self.settings, self.runtime
        controlnet = self._load(
            "engine.controlnet", s.controlnet, lambda src: _from_pretrained(ControlNetModel, src, runtime)
        ).to(runtime.device)
        simple = _UnetState.capture(base.unet)
        extras = {name: getattr(base, name, None) for name in ("image_encoder", "feature_extractor")}

        def load_ip_adapter(source: str) -> None:
            if Path(source).is_dir():
                _check_ip_adapter_folder(Path(source), s.ip_adapter_subfolder, s.ip_adapter_weight, s.image_encoder)
            base.load_ip_adapter(source, subfolder=s.ip_adapter_subfolder, weight_name=s.ip_adapter_weight,
                                 image_encoder_folder=s.image_encoder)

        try:
            self._load("engine.ip_adapter", s.ip_adapter, load_ip_adapter)
        except ModelLoadError:
            # diffusers registers the image encoder before it patches the UNet: undo whatever got
            # done, so simple mode is left exactly as it was (engine.ref_guided = "auto" goes on without it)
            simple.apply(base.unet)
            base.register_modules(**extras)
            raise
        base.image_encoder.to(device=runtime.device, dtype=runtime.dtype)
        base.set_ip_adapter_scale(s.ip_adapter_scale)
        guided = _UnetState.capture(base.unet)
        simple.apply(base.unet)  # simple mode stays exactly as it was
        # from_pipe moves every shared module to float32 unless told otherwise (diffusers#12754): an
        # fp16 UNet would become fp32 for simple mode too, and the IP-Adapter layers, left in fp16,
        # would make every ref-guided render fail with mismatched query/key dtypes
        pipe = StableDiffusionXLControlNetPipeline.from_pipe(base, controlnet=controlnet, dtype=runtime.dtype)
        pipe.set_progress_bar_config(disable=True)
        self.applied["ref_guided"] = {"ip_adapter_scale": s.ip_adapter_scale, "controlnet_scale": s.controlnet_scale}
        return RefGuided(pipe=pipe, unet=base.unet, simple=simple, guided=guided)

    # -- CLIP -----------------------------------------------------------------------------------
    def clip(self) -> tuple[Any, Any]:
        """(CLIPModel, CLIPProcessor) on the render device, loaded once."""
        if self._clip is None:
            from transformers import CLIPModel, CLIPProcessor

            runtime = self.runtime or resolve_runtime(self.settings)
            self.runtime = runtime
            model = self._load(
                "engine.clip_model",
                self.settings.clip_model,
                lambda src: CLIPModel.from_pretrained(src, dtype=runtime.dtype).to(runtime.device).eval(),
            )
            processor = self._load("engine.clip_model (processor)", self.settings.clip_model, CLIPProcessor.from_pretrained)
            self._clip = (model, processor)
        return self._clip

    def faces(self) -> Any:
        """dlib's face detector and encoder (engine.identity.faces), loaded once in their own process
        (engine.identity.face_process: the checks then run beside the render thread, not in its way)."""
        if self._faces is None:
            from engine.identity.face_process import FaceProcess
            from engine.identity.faces import FaceModelError

            try:
                self._faces = FaceProcess()
            except FaceModelError as exc:
                raise ModelLoadError(f"validation.face_check: {exc}") from exc
            self.loads += 1
            self.sources["validation.face_check"] = str(self._faces.models_dir)
        return self._faces

    # -- poses ----------------------------------------------------------------------------------
    def pose_library(self) -> PoseLibrary:
        """Each pose's template: built in, or (pose_source = "detect") found in engine.pose_images, once."""
        if self._poses is None:
            self._poses = self._build_pose_library()
        return self._poses

    def _build_pose_library(self) -> PoseLibrary:
        s = self.settings
        if s.pose_source == "templates":
            return PoseLibrary()
        from engine.rendering.pose_detect import PoseImagesError, build_pose_library, pose_pictures

        try:
            pictures = pose_pictures(s.pose_images)
            library = build_pose_library(pictures, self.pose_detector())
        except PoseImagesError as exc:
            raise ModelLoadError(str(exc)) from exc
        self.applied["pose_source"] = {"detect": library.describe()}
        return library  # the detector is dropped: every pose it will ever give is in the library

    def pose_detector(self) -> Any:
        """controlnet_aux's OpenPose body detector from engine.pose_detector (not cached: used at start-up)."""
        from engine.rendering.pose_detect import load_body_detector

        runtime = self.runtime or resolve_runtime(self.settings)
        self.runtime = runtime
        return self._load("engine.pose_detector", self.settings.pose_detector,
                          lambda src: load_body_detector(src, runtime.device))

    def reference_images(self) -> list[Image.Image]:
        """The configured character pictures (``engine.reference_images``), read once."""
        if self._references is None:
            self._references = _read_reference_images(self.settings.reference_images)
        return self._references


@dataclass(frozen=True)
class _UnetState:
    """The parts of a UNet that IP-Adapter changes: attention processors and the image projection."""

    processors: dict[str, Any]
    encoder_hid_proj: Any
    encoder_hid_dim_type: str | None

    @classmethod
    def capture(cls, unet: Any) -> _UnetState:
        return cls(dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type)

    def apply(self, unet: Any) -> None:
        unet.set_attn_processor(dict(self.processors))
        unet.encoder_hid_proj = self.encoder_hid_proj
        unet.config.encoder_hid_dim_type = self.encoder_hid_dim_type


@dataclass
class RefGuided:
    """Ref-guided mode's pipeline, and a switch that puts the shared UNet in one mode or the other."""

    pipe: Any
    unet: Any
    simple: _UnetState
    guided: _UnetState
    mode: str = "simple"

    def use(self, mode: str) -> None:
        if mode != self.mode:
            (self.guided if mode == "ref-guided" else self.simple).apply(self.unet)
            self.mode = mode


def _from_pretrained(cls: Any, source: str, runtime: Runtime, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` in the runtime's dtype. In half precision the repo's fp16 copy comes
    first where it has one: half the download (SDXL's full copy is about 14 GB) in the health
    check's start period."""
    import torch

    if runtime.dtype in (torch.float16, torch.bfloat16):
        try:
            return cls.from_pretrained(source, dtype=runtime.dtype, variant="fp16", **kwargs)
        # diffusers says so with a ValueError for a pipeline, an OSError ("no file named
        # diffusion_pytorch_model.fp16.bin") for a single model
        except (ValueError, OSError) as exc:
            if "fp16" not in str(exc):
                raise
            log.info("%s has no fp16 copy; loading its full-precision weights", source)
    return cls.from_pretrained(source, dtype=runtime.dtype, **kwargs)


def _has_ip_adapter(unet: Any) -> bool:
    return any("IPAdapter" in type(proc).__name__ for proc in unet.attn_processors.values())


def _check_ip_adapter_folder(root: Path, subfolder: str, weight_name: str, image_encoder: str) -> None:
    """A local IP-Adapter folder holds the weights file and the image encoder where the settings
    say; otherwise name the file, the folder looked in and the setting that points there."""
    folder = root / subfolder if subfolder else root
    weights = folder / weight_name
    if not weights.is_file():
        if subfolder and (root / weight_name).is_file():
            hint = "; it is at the folder's root: set engine.ip_adapter_subfolder = \"\" (--ip-adapter-subfolder '')"
        elif folder.is_dir():
            files = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
            hint = f"; weights files there: {', '.join(files)}" if files else "; it holds no .safetensors or .bin file"
        else:
            hint = f"; {root} has no folder {subfolder!r}"
        raise ModelLoadError(
            f"engine.ip_adapter: no weights file {weight_name} (engine.ip_adapter_weight) in {folder} "
            f"(engine.ip_adapter_subfolder = {subfolder!r}){hint}", key="engine.ip_adapter", value=str(root))
    # diffusers' rule: an image_encoder without "/" is under the subfolder, one with "/" is from the root
    encoder = root / image_encoder if "/" in image_encoder else folder / image_encoder
    if not (encoder / "config.json").is_file():
        raise ModelLoadError(
            f"engine.image_encoder: no image encoder (config.json) in {encoder} "
            f"(engine.image_encoder = {image_encoder!r}, engine.ip_adapter_subfolder = {subfolder!r})",
            key="engine.image_encoder", value=str(encoder))


def _read_reference_images(folder_value: str) -> list[Image.Image]:
    if not folder_value:
        return []
    folder = Path(folder_value).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"engine.reference_images: folder not found: {folder_value}")
    files = pictures_in(folder)
    if not files:
        raise ModelLoadError(f"engine.reference_images: no {describe_suffixes()} pictures in {folder}")
    images, bad = [], []
    for path in files:
        try:
            with Image.open(path) as img:
                images.append(img.convert("RGB"))
        except OSError:
            bad.append(path.name)
    if bad:
        raise ModelLoadError(f"engine.reference_images: unreadable pictures in {folder}: {', '.join(bad)}")
    return images


def _vae_precision(pipe: Any, runtime: Runtime, vae_override: str) -> str:
    import torch

    if runtime.dtype != torch.float16:
        return f"{str(runtime.dtype).removeprefix('torch.')}"
    if getattr(pipe.vae.config, "force_upcast", False):
        return "float16, upcast to float32 while decoding"
    return "float16" + (" (VAE override)" if vae_override else "")


def _load_failure(key: str, value: str, source: str, exc: Exception) -> str:
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    reason = f"{type(exc).__name__}: {first_line[:200]}"
    if Path(source).exists():
        return f"{key}: could not load {source}: {reason}"
    offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
    hint = "; HF_HUB_OFFLINE is set, so nothing is downloaded" if offline else ""
    return f"{key} = {value!r}: weights not found locally; set HF_HOME or a local path{hint} ({reason})"
