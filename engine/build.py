"""Pick the planner, renderer and validator for this machine, build them once, and say why.

``auto`` means: the best backend this machine can run. The reasons end up in the start-up
log line and in every report.json, so nobody has to guess what drew a board. Weights load
here, at start-up: a bad path stops the bot now, not at the first job.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

from engine.identity.validate import ClipScorer, NullValidator, Validator
from engine.models import ModelLoader, ModelLoadError, RefGuided, gpu_summary
from engine.moderation import TermFilter
from engine.planning.base import PlanError, Planner
from engine.planning.offline.planner import OfflinePlanner
from engine.rendering.base import ModeOff, Renderer
from engine.rendering.preview import PreviewRenderer
from engine.settings import EngineSettings, PlannerSettings, RenderSettings
from engine.storyboard import StoryEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str


def choose_planner(settings: PlannerSettings, *, openai_key_set: bool) -> Choice:
    if settings.backend == "offline":
        return Choice("offline", "configured: planner.backend = offline")
    if settings.backend == "openai":
        if not openai_key_set:
            raise PlanError("planner.backend = 'openai' needs OPENAI_API_KEY in the environment")
        return Choice("openai", "configured: planner.backend = openai (offline planner as fallback)")
    if openai_key_set:
        return Choice("openai", "auto: OPENAI_API_KEY is set (offline planner as fallback)")
    return Choice("offline", "auto: OPENAI_API_KEY is not set")


def build_planner(settings: EngineSettings, *, openai_api_key: str | None,
                  banned: TermFilter | None = None) -> tuple[Planner, Choice]:
    """The planner ``planner.backend`` asks for, with the offline planner behind the LLM. ``banned``
    (the bot's ``[story] banned_terms``) is checked in the LLM's plan; the offline planner's words
    come from the story, which was checked already."""
    choice = choose_planner(settings.planner, openai_key_set=bool(openai_api_key))
    offline = OfflinePlanner(settings.planner)
    if choice.name == "offline":
        return offline, choice
    from engine.planning.llm import OpenAIPlanner

    planner = OpenAIPlanner(settings.planner, settings.prompt, api_key=openai_api_key or "", fallback=offline,
                            banned=banned)
    return planner, choice


def choose_renderer(settings: RenderSettings) -> Choice:
    """The renderer to try first. ``auto`` asks for SDXL only where CUDA is present."""
    if settings.renderer == "preview":
        return Choice("preview", "configured: engine.renderer = preview")
    if settings.renderer == "sdxl":
        return Choice("sdxl", "configured: engine.renderer = sdxl")
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("diffusers") is None:
        return Choice("preview", "auto: torch/diffusers are not installed, so no GPU renderer can run")
    import torch

    if not torch.cuda.is_available():
        return Choice("preview", "auto: no CUDA device (set engine.renderer = 'sdxl' to draw on the CPU)")
    return Choice("sdxl", "auto: CUDA is available")


def load_ref_guided(settings: RenderSettings, loader: ModelLoader) -> tuple[RefGuided | None, ModeOff | None, str]:
    """Ref-guided mode's ControlNet and IP-Adapter per ``engine.ref_guided``: ``true`` must load them
    (a failure stops start-up), ``"auto"`` loads them when their weights resolve, ``false`` never does.
    Returns the parts (None when off), why it is off, and the reason for the start-up line."""
    if settings.ref_guided is False:
        return None, ModeOff("ref-guided"), "configured: engine.ref_guided = false"
    try:
        ref_guided = loader.ref_guided()
    except ModelLoadError as exc:
        if settings.ref_guided is True:
            raise
        log.warning("ref-guided mode is off: its weights did not load: %s", exc)
        off = ModeOff("ref-guided", weights=exc.weights or "engine.ref_guided")
        return None, off, f"auto: its weights did not load ({exc})"
    loader.pose_library()  # detected poses (pose_source = "detect") are found now, not at the first job
    if settings.ip_adapter_reference != "frame1" and not loader.reference_images():
        raise ModelLoadError(f"engine.ip_adapter_reference = {settings.ip_adapter_reference!r} needs pictures "
                             "in engine.reference_images", key="engine.reference_images")
    how = "configured: engine.ref_guided = true" if settings.ref_guided is True else "auto: its weights loaded"
    return ref_guided, None, how


@dataclass(frozen=True)
class SdxlParts:
    renderer: Renderer
    validator: Validator
    ref_guided_off: ModeOff | None  # None: ref-guided mode is loaded
    ref_guided_reason: str


def build_sdxl(settings: RenderSettings, loader: ModelLoader, *, face_check: bool = False) -> SdxlParts:
    """Load SDXL (+ LoRA), CLIP and the ref-guided parts through the loader; raises ModelLoadError naming the key."""
    from engine.rendering.sdxl import SdxlRenderer

    pipe = loader.pipeline()
    ref_guided, off, reason = load_ref_guided(settings, loader)
    steps = settings.draft_steps if settings.draft else settings.steps
    guidance = settings.draft_guidance if settings.draft else settings.guidance
    ip_references = loader.reference_images() if ref_guided and settings.ip_adapter_reference != "frame1" else []
    renderer = SdxlRenderer(
        pipe, steps=steps, guidance=guidance, batch_size=settings.batch_size, ref_guided=ref_guided,
        controlnet_scale=settings.controlnet_scale,
        control_guidance=(settings.control_guidance_start, settings.control_guidance_end),
        ip_references=ip_references, ip_use_frame1=settings.ip_adapter_reference != "images",
        character_lora=loader.character_lora, lora_fused=bool(settings.lora),
    )
    if loader.applied.get("compile_unet") is True:
        try:
            renderer.warm_up(settings.width, settings.height)
        except Exception as exc:  # e.g. Triton without a C compiler: draw uncompiled rather than not at all
            log.warning("the compiled UNet failed its warm-up; going on without compiling", exc_info=exc)
            first_line = (str(exc).splitlines() or [""])[0][:200]
            loader.uncompile_unet(f"{type(exc).__name__}: {first_line}")
    validator: Validator = NullValidator()
    if settings.clip_model:
        model, processor = loader.clip()
        faces = loader.faces() if face_check else None
        validator = ClipScorer(model, processor, reference_images=loader.reference_images(), faces=faces)
    return SdxlParts(renderer, validator, off, reason)


def build_engine(settings: EngineSettings, *, openai_api_key: str | None = None,
                 banned: TermFilter | None = None) -> StoryEngine:
    """Choose and construct every engine component once; models load here, never at import."""
    planner, planner_choice = build_planner(settings, openai_api_key=openai_api_key, banned=banned)
    renderer_choice = choose_renderer(settings.render)
    loader = ModelLoader(settings.render)
    renderer: Renderer = PreviewRenderer(delay_s=settings.render.preview_delay_s)
    validator: Validator = NullValidator()
    reasons = {"planner": planner_choice.reason}
    modes_off: list[ModeOff] = []
    if renderer_choice.name == "sdxl":
        try:
            parts = build_sdxl(settings.render, loader, face_check=settings.validation.face_check)
            renderer, validator = parts.renderer, parts.validator
            renderer_choice = Choice("sdxl", f"{renderer_choice.reason}; weights loaded")
            state = "on" if parts.ref_guided_off is None else "off"
            reasons["ref_guided"] = f"{state} ({parts.ref_guided_reason})"
            if loader.runtime is not None and loader.runtime.is_cuda:
                reasons["gpu"] = gpu_summary()
            if parts.ref_guided_off is not None:
                modes_off.append(parts.ref_guided_off)
        except ModelLoadError as exc:
            if settings.render.renderer == "sdxl":
                raise
            log.warning("SDXL weights did not load, falling back to the preview renderer: %s", exc)
            renderer_choice = Choice("preview", f"auto: CUDA is available but the weights did not load ({exc})")
    reasons["renderer"] = renderer_choice.reason
    sdxl_ref_guided = renderer.name == "sdxl" and "ref-guided" in renderer.modes
    return StoryEngine(
        planner=planner,
        renderer=renderer,
        validator=validator,
        settings=settings,
        reasons=reasons,
        models=loader if renderer.name == "sdxl" else None,
        poses=loader.pose_library() if sdxl_ref_guided else None,
        modes_off=modes_off,
    )
