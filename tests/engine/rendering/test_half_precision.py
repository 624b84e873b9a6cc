"""Half precision on the CPU, on tiny models loaded through engine.models: what a GPU runs in
float16 must not quietly become float32 (or crash) the first time it meets real hardware.

bfloat16 runs the production loading path as configured (``engine.dtype = "bfloat16"``; float16
is refused on the CPU by config). float16 is built straight with diffusers where a test needs
what only float16 does: the VAE upcast around the decode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.build import build_engine
from engine.rendering.prompts import build_prompt
from engine.rendering.base import FrameRequest
from engine.rendering.sdxl import SdxlRenderer
from engine.settings import EngineSettings, PromptSettings, RenderSettings
from engine.storyboard import BoardRequest

STORY = (
    "Aldar Kose arrives at a busy bazaar with an empty pot. A greedy merchant laughs at his coat. "
    "Aldar Kose swears the pot boils soup by itself. The merchant trades his horse for the pot."
)
SIZE = 64


def half_settings(base: Path, dtype: str, **engine) -> EngineSettings:
    values = {"renderer": "sdxl", "base_model": str(base), "clip_model": "", "width": SIZE, "height": SIZE,
              "steps": 2, "batch_size": 4, "dtype": dtype, **engine}
    return EngineSettings(render=RenderSettings(**values))


@pytest.fixture(scope="module")
def bf16_both_modes(tiny_sdxl_dir, tiny_controlnet_dir, tiny_ip_adapter_dir, tiny_lora_file):
    return build_engine(half_settings(tiny_sdxl_dir, "bfloat16", lora=str(tiny_lora_file), ref_guided=True,
                                      controlnet=str(tiny_controlnet_dir), ip_adapter=str(tiny_ip_adapter_dir)))


def module_dtypes(pipe) -> dict[str, set[torch.dtype]]:
    modules = ("unet", "vae", "text_encoder", "text_encoder_2", "image_encoder", "controlnet")
    return {name: {p.dtype for p in getattr(pipe, name).parameters()}
            for name in modules if getattr(pipe, name, None) is not None}


def test_every_module_of_both_pipelines_stays_in_the_configured_dtype(bf16_both_modes):
    renderer = bf16_both_modes.renderer
    simple, guided = module_dtypes(renderer.pipe), module_dtypes(renderer.ref_guided.pipe)
    assert set(guided) == {"unet", "vae", "text_encoder", "text_encoder_2", "image_encoder", "controlnet"}
    assert {name: dtypes for name, dtypes in {**simple, **guided}.items() if dtypes != {torch.bfloat16}} == {}


def test_a_ref_guided_board_renders_in_bfloat16_and_says_so(bf16_both_modes, tmp_path):
    bf16_both_modes.run(BoardRequest(STORY, mode="ref-guided", frames=3, seed=2), tmp_path / "b")
    report = json.loads((tmp_path / "b" / "report.json").read_text(encoding="utf-8"))
    assert report["mode"] == "ref-guided" and report["models"]["dtype"] == "bfloat16"
    assert [f["index"] for f in report["frames"]] == [1, 2, 3]
    assert module_dtypes(bf16_both_modes.renderer.pipe)["unet"] == {torch.bfloat16}  # still, after rendering


def frame_request(shot_index: int, seed: int) -> FrameRequest:
    from engine.planning.offline.planner import OfflinePlanner
    from engine.settings import PlannerSettings

    shot = OfflinePlanner(PlannerSettings()).plan(STORY, shots=3).shots[shot_index - 1]
    return FrameRequest(shot, build_prompt(shot, PromptSettings()), seed, SIZE, SIZE)


def test_an_out_of_memory_decode_in_float16_is_retried_and_the_next_job_renders(tiny_sdxl_dir):
    """The pipeline upcasts an fp16 VAE to fp32 for the decode and casts it back only after one that
    worked; an OOM in between used to leave it fp32, and every later decode failed."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir, dtype=torch.float16)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae.config.force_upcast
    renderer = SdxlRenderer(pipe, steps=2, guidance=5.0, batch_size=4)
    decode, seen = pipe.vae.decode, []

    def decode_once_out_of_memory(*args, **kwargs):
        seen.append(pipe.vae.dtype)
        if len(seen) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected in vae.decode)")
        return decode(*args, **kwargs)

    pipe.vae.decode = decode_once_out_of_memory
    board = renderer.render([frame_request(1, 1), frame_request(2, 2)])  # the batch, then one at a time
    assert len(board) == 2 and seen[0] == torch.float32  # it was upcast when it ran out
    assert pipe.vae.dtype == torch.float16
    [next_job] = renderer.render([frame_request(3, 3)])
    assert next_job.size == (SIZE, SIZE) and len(seen) == 4


def test_half_precision_loads_the_fp16_copy_of_the_weights(tiny_sdxl_dir, tmp_path):
    """A folder holding only ``*.fp16.safetensors`` (as the hub's SDXL repos also do) loads in bf16;
    read without ``variant="fp16"`` it would have no weights at all."""
    from diffusers import StableDiffusionXLPipeline

    halved = tmp_path / "sdxl_fp16_only"
    StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir, dtype=torch.float16).save_pretrained(
        halved, variant="fp16")
    assert sorted(p.name for p in (halved / "unet").iterdir()) == [
        "config.json", "diffusion_pytorch_model.fp16.safetensors"]
    engine = build_engine(half_settings(halved, "bfloat16", ref_guided=False))
    assert module_dtypes(engine.renderer.pipe)["unet"] == {torch.bfloat16}
    assert engine.renderer.render([frame_request(1, 1)])[0].size == (SIZE, SIZE)


def test_the_host_driver_is_read_from_the_kernel_modules_version_file():
    from engine.models import nvidia_driver_version

    sample = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16)\n"
              "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n")
    assert nvidia_driver_version(sample) == "580.65.06"
    assert nvidia_driver_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22\n") == "550.54.14"
    assert nvidia_driver_version("") == "unknown"


def test_the_warm_up_runs_every_batch_size_in_both_modes_and_leaves_simple_mode_as_it_was(bf16_both_modes,
                                                                                          monkeypatch):
    renderer = bf16_both_modes.renderer
    calls: list[tuple[str, int]] = []
    before = np.asarray(renderer.render([frame_request(1, 5)])[0])
    for mode, pipe in (("simple", renderer.pipe), ("ref-guided", renderer.ref_guided.pipe)):
        def counting(self, *args, _mode=mode, _call=type(pipe).__call__, **kwargs):
            calls.append((_mode, len(kwargs["prompt"])))
            return _call(self, *args, **kwargs)

        monkeypatch.setattr(type(pipe), "__call__", counting)
    renderer.warm_up(SIZE, SIZE)
    monkeypatch.undo()
    assert calls == [("simple", n) for n in (1, 2, 3, 4)] + [("ref-guided", n) for n in (1, 2, 3, 4)]
    assert renderer.ref_guided.mode == "simple"
    assert np.array_equal(np.asarray(renderer.render([frame_request(1, 5)])[0]), before)


def test_a_compiled_unet_that_fails_its_warm_up_is_dropped_and_boards_still_draw(
        tiny_sdxl_dir, tiny_controlnet_dir, tiny_ip_adapter_dir, monkeypatch, tmp_path):
    """Triton without a C compiler fails the warm-up: the bot goes on with the plain UNet (and says
    so in report.json) instead of not starting. torch.compile needs CUDA here, so the compiled
    module is stood in for by a wrapper with the same ``_orig_mod``."""
    from engine.build import build_sdxl
    from engine.models import ModelLoader

    render = half_settings(tiny_sdxl_dir, "bfloat16", ref_guided=True, controlnet=str(tiny_controlnet_dir),
                           ip_adapter=str(tiny_ip_adapter_dir)).render
    loader = ModelLoader(render)
    pipe = loader.pipeline()
    plain = pipe.unet

    class Compiled(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self._orig_mod, name)

    pipe.unet = Compiled(plain)
    loader.applied["compile_unet"] = True

    def no_compiler(self, width, height):
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")

    monkeypatch.setattr("engine.rendering.sdxl.SdxlRenderer.warm_up", no_compiler)
    parts = build_sdxl(render, loader)
    assert pipe.unet is plain and loader.ref_guided().pipe.unet is plain and loader.ref_guided().unet is plain
    assert loader.applied["compile_unet"] == (
        "off: the warm-up failed (RuntimeError: Failed to find C compiler. Please specify via CC environment variable.)")
    assert parts.renderer.render([frame_request(1, 1)])[0].size == (SIZE, SIZE)
