"""SDXL + character LoRA renderer, both modes (ref-guided adds the IP-Adapter reference and the
ControlNet pose from engine.models): batched frames, one seed per frame.

* One pipeline call renders a batch; classifier-free guidance is batched inside diffusers.
  Each frame has its own CPU generator, so a frame starts from the same noise at any batch
  size and on any device; its pixels then match within rounding (README: what a seed promises).
* ``callback_on_step_end`` reports every denoising step and checks for cancellation; a
  cancel sets the pipeline's interrupt flag, so it stops within one step.
* CUDA out of memory: the cache is freed and the batch is retried one frame at a time;
  if a single frame still does not fit, the job fails with a clear message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from engine.errors import Cancelled, EngineError, InvalidRequest
from engine.rendering.base import CancelCheck, FrameRequest, StepCallback
from engine.rendering.prompts import Prompt, fit_prompt

log = logging.getLogger(__name__)


class OutOfMemory(EngineError):
    """A frame did not fit in GPU memory even on its own."""


class SdxlRenderer:
    name = "sdxl"

    def __init__(self, pipe: Any, *, steps: int, guidance: float, batch_size: int, ref_guided: Any = None,
                 controlnet_scale: float = 0.8, control_guidance: tuple[float, float] = (0.0, 1.0),
                 ip_references: Sequence[Image.Image] = (), ip_use_frame1: bool = True,
                 character_lora: Any = None, lora_fused: bool = False) -> None:
        import torch

        self._torch = torch
        self.pipe = pipe
        self._vae_dtype = pipe.vae.dtype  # what the VAE is between decodes (the pipeline upcasts it during one)
        self.ref_guided = ref_guided  # engine.models.RefGuided, or None when only simple mode is loaded
        self.steps = steps
        self.guidance = guidance
        self.batch_size = batch_size
        self.controlnet_scale = controlnet_scale
        self.control_guidance = control_guidance
        self.ip_references = list(ip_references)  # configured character pictures for IP-Adapter
        self.ip_use_frame1 = ip_use_frame1
        self.character_lora = character_lora  # engine.models.CharacterLora: switches it off for --no-lora
        self.lora_fused = lora_fused
        self.token_budget = pipe.tokenizer.model_max_length  # 77 for CLIP
        self.modes = ("simple", "ref-guided") if ref_guided is not None else ("simple",)

    # -- prompts -------------------------------------------------------------------------------
    def fit_prompt(self, prompt: Prompt) -> Prompt:
        """Each prompt within its text encoder's budget, measured with that encoder's tokenizer."""
        return fit_prompt(prompt, self._counter(self.pipe.tokenizer), self._counter(self.pipe.tokenizer_2),
                          budget=self.token_budget)

    @staticmethod
    def _counter(tokenizer: Any) -> Callable[[str], int]:
        return lambda text: len(tokenizer(text, truncation=False, verbose=False).input_ids)

    # -- rendering -----------------------------------------------------------------------------
    def render(
        self,
        requests: Sequence[FrameRequest],
        *,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[Image.Image]:
        if not requests:
            return []
        batch = self._try_call(requests, on_step, should_cancel)
        if batch is not None:
            return batch
        if len(requests) == 1:
            raise OutOfMemory(self._oom_message(requests[0]))
        log.warning("out of GPU memory for a batch of %d; retrying one frame at a time", len(requests))
        images = []
        for request in requests:
            alone = self._try_call([request], on_step, should_cancel)
            if alone is None:
                raise OutOfMemory(self._oom_message(request))
            images += alone
        return images

    def _try_call(
        self, requests: Sequence[FrameRequest], on_step: StepCallback | None, should_cancel: CancelCheck | None
    ) -> list[Image.Image] | None:
        """The frames, or None when they did not fit; the pipeline is put back as it was either way."""
        try:
            return self._call(requests, on_step, should_cancel)
        except self._torch.OutOfMemoryError:
            log.debug("out of GPU memory drawing %d frame(s)", len(requests))
        # Outside the except block: its traceback held the pipeline's tensors until now.
        self._recover_from_oom()
        return None

    def _recover_from_oom(self) -> None:
        """An fp16 VAE is upcast to fp32 for the decode and cast back only after a decode that
        worked: after an OOM there it would stay fp32 and fail every later decode (Half input,
        float bias). Put it back, then give the memory back."""
        if self.pipe.vae.dtype != self._vae_dtype:
            log.info("the VAE was left in %s by the failed decode; back to %s", self.pipe.vae.dtype, self._vae_dtype)
            self.pipe.vae.to(dtype=self._vae_dtype)
        self._free_memory()

    def warm_up(self, width: int, height: int) -> None:
        """Throwaway batches of every size a board can use (1..batch_size: frame 1 alone, the
        rest, re-rolls), in every loaded mode, so a compiled UNet compiles them all before the
        first job rather than during it (under a lease and a 15-minute interaction token). Run
        it on the thread that renders: CUDA graphs are recorded per thread."""
        for size in range(1, self.batch_size + 1):
            self.pipe(
                prompt=["warm-up"] * size, num_inference_steps=2, guidance_scale=self.guidance,
                width=width, height=height, output_type="latent",
            )
        if self.ref_guided is None:
            return
        blank = Image.new("RGB", (width, height))
        self.ref_guided.use("ref-guided")
        try:
            for size in range(1, self.batch_size + 1):
                self.ref_guided.pipe(
                    prompt=["warm-up"] * size, image=[blank] * size, ip_adapter_image=[[blank]],
                    controlnet_conditioning_scale=self.controlnet_scale, num_inference_steps=2,
                    guidance_scale=self.guidance, width=width, height=height, output_type="latent",
                )
        finally:
            self.ref_guided.use("simple")

    def _call(
        self, requests: Sequence[FrameRequest], on_step: StepCallback | None, should_cancel: CancelCheck | None
    ) -> list[Image.Image]:
        first = requests[0]
        if any((r.width, r.height) != (first.width, first.height) for r in requests):
            raise ValueError("all frames of one batch must share a size")
        steps = self.steps

        def step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            if on_step is not None:
                on_step(step + 1, steps)
            if should_cancel is not None and should_cancel():
                pipe._interrupt = True
            return tensors

        pipe, extra = self._mode_for(requests)
        self._use_lora(first.lora)
        result = pipe(
            **extra,
            prompt=[r.prompt.positive for r in requests],
            prompt_2=[r.prompt.scene for r in requests],
            negative_prompt=[r.prompt.negative for r in requests],
            negative_prompt_2=[r.prompt.negative for r in requests],
            num_inference_steps=steps,
            guidance_scale=self.guidance,
            width=first.width,
            height=first.height,
            generator=[self._torch.Generator("cpu").manual_seed(r.seed) for r in requests],
            callback_on_step_end=step_end,
            output_type="pil",
        )
        if pipe.interrupt:
            raise Cancelled(f"cancelled while drawing frame {first.shot.index}")
        return list(result.images)

    def _mode_for(self, requests: Sequence[FrameRequest]) -> tuple[Any, dict]:
        """Simple frames use the base pipeline; ref-guided frames the ControlNet pipeline with the
        reference through IP-Adapter and each shot's pose skeleton through ControlNet."""
        guided = [r.reference is not None for r in requests]
        if not any(guided):
            if self.ref_guided is not None:
                self.ref_guided.use("simple")
            return self.pipe, {}
        if not all(guided) or any(r.control_image is None for r in requests):
            raise ValueError("a ref-guided batch needs a reference and a pose image for every frame")
        if self.ref_guided is None:
            raise ValueError("ref-guided mode is not loaded in this renderer")
        self.ref_guided.use("ref-guided")
        start, end = self.control_guidance
        return self.ref_guided.pipe, {
            "image": [r.control_image for r in requests],
            "ip_adapter_image": [self._ip_images(requests[0])],
            "controlnet_conditioning_scale": self.controlnet_scale,
            "control_guidance_start": start,
            "control_guidance_end": end,
        }

    def _use_lora(self, on: bool) -> None:
        """The character LoRA on or off for this batch (one board's frames share the choice)."""
        if self.character_lora is not None:
            self.character_lora.use(on)
        elif not on and self.lora_fused:
            raise InvalidRequest("--no-lora is switched off on this bot (engine.lora_switch = false)")

    def _ip_images(self, request: FrameRequest) -> list[Image.Image]:
        """What IP-Adapter sees: the user's picture alone when the board has one; else the
        configured pictures and/or frame 1 (``engine.ip_adapter_reference``)."""
        if request.picture is not None:
            return [request.picture]
        return self.ip_references + ([request.reference] if self.ip_use_frame1 else [])

    def _free_memory(self) -> None:
        import gc

        gc.collect()
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()

    @staticmethod
    def _oom_message(request: FrameRequest) -> str:
        return (
            f"out of GPU memory drawing frame {request.shot.index} at {request.width}x{request.height}, "
            "even one frame at a time; try a smaller engine.width/height, engine.vae_tiling or engine.cpu_offload"
        )
