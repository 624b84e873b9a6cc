"""Ten minutes that answer every GPU question, with no download.

Builds full-size SDXL, an OpenPose ControlNet and an IP-Adapter from the published configs in
bench/sdxl_configs/ with random weights (bench/random_sdxl.py; speed and memory do not depend
on the weights' values), saves them, and loads them the way the bot does, through
``engine.build.build_engine``, in both modes. Real weights replace the random ones with
--base-model / --controlnet / --ip-adapter. On a machine without CUDA it runs the same rows on
the tiny test models at 64 px in seconds (``--tiny`` forces that anywhere), so CI proves it
works; rows that need CUDA say so.

Each figure is a ``RESULT gpu_probe: ...`` line:

    dtypes        the dtype of every module of both pipelines, and whether all are the configured one
    simple        s/board, s/frame and it/s for --frames frames at --size px, --steps steps
    ref-guided    the same in ref-guided mode
    seed drift    the largest pixel difference of one seed drawn alone vs in a batch of 4
    vram          peak allocated and reserved GiB at batch 1 and batch 4 (CUDA)
    decode oom    a batch of 4 under a memory cap that fits one frame: retried one at a time,
                  the VAE back in its dtype, the next render fine (CUDA)
    draft         a board at draft speed: --draft-steps steps, guidance 0 (a fused LoRA adds no time)
    compile       compile_unet: build + warm-up time, then the first ref-guided board (CUDA;
                  recompiles are logged, TORCH_LOGS=recompiles)

--budget-s (480) keeps the run within its time: rows run in the order above, and a row whose
estimated cost no longer fits is dropped (compile, then draft, ...) and says so.

    python bench/gpu_probe.py [--tiny] [--budget-s 480] [--frames 8] [--size 1024] [--steps 30]
        [--dtype float16|bfloat16] [--base-model PATH --controlnet PATH --ip-adapter PATH]
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.settings import EngineSettings, RenderSettings, ValidateSettings  # noqa: E402

STORY = ("Aldar Kose arrives at a busy bazaar with an empty pot. A greedy merchant laughs at his ragged coat. "
         "Aldar Kose swears the pot boils soup by itself. The merchant trades his fine horse for the pot. "
         "Aldar Kose rides away across the steppe, grinning. The merchant waits for soup that never comes. "
         "The villagers laugh at the merchant. Aldar Kose counts his coins by the fire.")
MODULES = ("unet", "vae", "text_encoder", "text_encoder_2", "image_encoder", "controlnet")
NEEDS_CUDA = "skipped: needs CUDA"


@dataclass(frozen=True)
class Weights:
    base: str
    controlnet: str
    ip_adapter: str
    ip_adapter_subfolder: str = "sdxl_models"


@dataclass
class Probe:
    args: argparse.Namespace
    torch: Any
    cuda: bool
    started: float = field(default_factory=time.perf_counter)
    board_s: float | None = None  # the first simple board: the unit the other rows are estimated in

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.started)

    def result(self, text: str) -> None:
        print(f"RESULT gpu_probe: {text}", flush=True)


def tiny_weights(root: Path) -> Weights:
    from tests.tiny_models import build_tiny_controlnet, build_tiny_ip_adapter, build_tiny_sdxl

    base = build_tiny_sdxl(root / "base")
    return Weights(str(base), str(build_tiny_controlnet(base, root / "controlnet")),
                   str(build_tiny_ip_adapter(base, root / "ip_adapter")))


def random_weights(root: Path, probe: Probe) -> Weights:
    from bench.random_sdxl import save_random_sdxl

    started = time.perf_counter()
    saved = save_random_sdxl(root, device="cuda", dtype=_dtype(probe))
    probe.torch.cuda.empty_cache()
    probe.result(f"random full-size weights built and saved in {time.perf_counter() - started:.1f} s")
    return Weights(str(saved.base), str(saved.controlnet), str(saved.ip_adapter))


def _dtype(probe: Probe) -> Any:
    return {"float16": probe.torch.float16, "bfloat16": probe.torch.bfloat16}[probe.args.dtype]


def settings(probe: Probe, weights: Weights, **overrides: Any) -> EngineSettings:
    args = probe.args
    values = dict(
        renderer="sdxl", device="cuda" if probe.cuda else "cpu", dtype=args.dtype, base_model=weights.base,
        controlnet=weights.controlnet, ip_adapter=weights.ip_adapter, ip_adapter_subfolder=weights.ip_adapter_subfolder,
        ref_guided=True, clip_model="", width=args.size, height=args.size, steps=args.steps, batch_size=4)
    render = RenderSettings(**{**values, **overrides})
    return EngineSettings(render=render, validation=ValidateSettings(max_retries=0, face_check=False))


# -- rows -----------------------------------------------------------------------------------------
def row_dtypes(probe: Probe, engine: Any) -> None:
    renderer = engine.renderer
    expected = str(_dtype(probe)).removeprefix("torch.")
    found = {}
    for mode, pipe in (("simple", renderer.pipe), ("ref-guided", renderer.ref_guided.pipe)):
        for name in MODULES:
            module = getattr(pipe, name, None)
            if module is not None:
                found[f"{mode}.{name}"] = ",".join(sorted({str(p.dtype).removeprefix("torch.")
                                                           for p in module.parameters()}))
    wrong = {name: dtypes for name, dtypes in found.items() if dtypes != expected}
    listing = " ".join(f"{name}={dtypes}" for name, dtypes in found.items())
    verdict = f"all {expected}" if not wrong else f"MISMATCH {wrong}"
    probe.result(f"dtypes: {verdict} ({listing})")


def _timed_board(probe: Probe, engine: Any, mode: str, out: Path, *, frames: int | None = None) -> float:
    frames = frames or probe.args.frames
    _sync(probe)
    started = time.perf_counter()
    engine.run(_request(mode, frames, seed=7), out)
    _sync(probe)
    return time.perf_counter() - started


def _request(mode: str, frames: int, seed: int) -> Any:
    from engine.storyboard import BoardRequest

    return BoardRequest(STORY, mode=mode, frames=frames, seed=seed)


def _sync(probe: Probe) -> None:
    if probe.cuda:
        probe.torch.cuda.synchronize()


def row_board(probe: Probe, engine: Any, mode: str, out: Path, *, label: str | None = None,
              steps: int | None = None) -> float:
    engine.run(_request(mode, 2, seed=1), out / f"{mode}-warm")  # first-call costs (cuDNN autotune, allocator)
    seconds = _timed_board(probe, engine, mode, out / mode)
    frames, steps = probe.args.frames, steps or probe.args.steps
    batches = 1 + -(-(frames - 1) // 4)  # frame 1 alone, then batches of 4
    probe.result(f"{label or mode}: {seconds:.2f} s/board, {seconds / frames:.3f} s/frame, "
                 f"{batches * steps / seconds:.2f} it/s ({frames} frames at {probe.args.size} px, {steps} steps; "
                 "the board time includes planning, decodes and the grid)")
    return seconds


def row_seed_drift(probe: Probe, engine: Any) -> None:
    requests = _frame_requests(engine, probe, 4)
    alone = np.asarray(engine.renderer.render(requests[:1])[0], dtype=np.int16)
    batched = np.asarray(engine.renderer.render(requests)[0], dtype=np.int16)
    probe.result(f"seed drift: one seed alone vs in a batch of 4: max {int(np.abs(alone - batched).max())} levels")


def row_vram(probe: Probe, engine: Any) -> None:
    if not probe.cuda:
        probe.result(f"vram: {NEEDS_CUDA}")
        return
    torch = probe.torch
    figures = []
    for batch in (1, 4):
        torch.cuda.reset_peak_memory_stats()
        engine.renderer.render(_frame_requests(engine, probe, batch))
        figures.append(f"batch {batch}: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB allocated, "
                       f"{torch.cuda.max_memory_reserved() / 2**30:.1f} GiB reserved")
    probe.result("vram peak " + "; ".join(figures))


def _frame_requests(engine: Any, probe: Probe, count: int) -> list[Any]:
    from engine.rendering.prompts import build_prompt
    from engine.rendering.base import FrameRequest
    from engine.settings import PromptSettings

    shots = engine.planner.plan(STORY, shots=count).shots
    return [FrameRequest(shot, engine.renderer.fit_prompt(build_prompt(shot, PromptSettings())), 200 + i,
                         probe.args.size, probe.args.size) for i, shot in enumerate(shots)]


def row_decode_oom(probe: Probe, engine: Any) -> None:
    """Cap this process's GPU memory just above what one frame needs, so a batch of 4 runs out
    (in the UNet or the upcast decode) and is retried one frame at a time."""
    if not probe.cuda:
        probe.result(f"decode oom: {NEEDS_CUDA}")
        return
    torch = probe.torch
    vae_dtype = engine.renderer.pipe.vae.dtype
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    engine.renderer.render(_frame_requests(engine, probe, 1))
    one_frame = torch.cuda.max_memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()  # the cap counts what the allocator holds: give back the cached blocks first
    torch.cuda.set_per_process_memory_fraction(min(1.0, one_frame * 1.15 / total))
    try:
        images = engine.renderer.render(_frame_requests(engine, probe, 4))
        outcome = f"{len(images)} frames drawn"
    except Exception as exc:  # the probe reports what happened, whatever it was
        outcome = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    after = engine.renderer.render(_frame_requests(engine, probe, 1))
    probe.result(f"decode oom under a {one_frame * 1.15 / 2**30:.1f} GiB cap: {outcome}; VAE "
                 f"{str(engine.renderer.pipe.vae.dtype).removeprefix('torch.')} (was "
                 f"{str(vae_dtype).removeprefix('torch.')}); next render {'ok' if len(after) == 1 else 'FAILED'}")


def row_compile(probe: Probe, weights: Weights, out: Path) -> None:
    if not probe.cuda:
        probe.result(f"compile: {NEEDS_CUDA}")
        return
    from engine.build import build_engine

    probe.torch._logging.set_logs(recompiles=True)
    started = time.perf_counter()
    engine = build_engine(settings(probe, weights, compile_unet=True))
    built = time.perf_counter() - started
    first = _timed_board(probe, engine, "ref-guided", out / "compiled-ref-guided")
    probe.result(f"compile: build + warm-up {built:.1f} s, then the first ref-guided board {first:.1f} s")
    del engine
    _release(probe)


def _release(probe: Probe) -> None:
    gc.collect()
    if probe.cuda:
        probe.torch._dynamo.reset()
        probe.torch.cuda.empty_cache()


# -- the run --------------------------------------------------------------------------------------
def fits(probe: Probe, name: str, boards: float) -> bool:
    """Whether a row estimated at ``boards`` simple boards still fits the budget; says so if not."""
    estimate = boards * (probe.board_s or 0.0)
    if estimate <= probe.left():
        return True
    probe.result(f"{name}: skipped: about {estimate:.0f} s, {probe.left():.0f} s of --budget-s left")
    return False


def run(args: argparse.Namespace) -> None:
    import torch

    from engine.build import build_engine

    cuda = torch.cuda.is_available() and not args.tiny
    probe = Probe(args, torch, cuda)
    if cuda:
        probe.result(f"device {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        probe.result("device cpu: tiny models at 64 px (no CUDA, or --tiny)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights = _weights(args, root, probe)
        started = time.perf_counter()
        engine = build_engine(settings(probe, weights))
        probe.result(f"load: both modes built in {time.perf_counter() - started:.1f} s")
        row_dtypes(probe, engine)
        probe.board_s = row_board(probe, engine, "simple", root)
        rows: list[tuple[str, float, Callable[[], Any]]] = [
            ("ref-guided", 2.5, lambda: row_board(probe, engine, "ref-guided", root)),
            ("seed drift", 0.5, lambda: row_seed_drift(probe, engine)),
            ("vram", 0.5, lambda: row_vram(probe, engine)),
            ("decode oom", 1.0, lambda: row_decode_oom(probe, engine)),
        ]
        for name, boards, row in rows:
            if fits(probe, name, boards):
                row()
        if fits(probe, "draft", 1.0):
            draft = build_engine(settings(probe, weights, steps=args.draft_steps, guidance=0.0, ref_guided=False))
            row_board(probe, draft, "simple", root / "draft", label=f"draft speed ({args.draft_steps} steps, guidance 0)",
                      steps=args.draft_steps)
            del draft
        del engine
        _release(probe)
        if not cuda or fits(probe, "compile", 6.0):  # without CUDA the row only says it needs it
            row_compile(probe, weights, root)
    probe.result(f"total {time.perf_counter() - probe.started:.1f} s (budget {args.budget_s:.0f} s)")


def _weights(args: argparse.Namespace, root: Path, probe: Probe) -> Weights:
    if args.base_model:
        return Weights(args.base_model, args.controlnet, args.ip_adapter, args.ip_adapter_subfolder)
    return random_weights(root, probe) if probe.cuda else tiny_weights(root)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny test models at 64 px even with CUDA")
    parser.add_argument("--budget-s", type=float, default=480.0, help="drop the slowest rows to stay within this")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=None, help="frame side in px (1024 on CUDA, 64 tiny)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (30 on CUDA, 2 tiny)")
    parser.add_argument("--draft-steps", type=int, default=4)
    parser.add_argument("--dtype", choices=("float16", "bfloat16"), default=None,
                        help="float16 on CUDA, bfloat16 on the CPU")
    parser.add_argument("--base-model", default="", help="real SDXL weights (folder or hub id) instead of random")
    parser.add_argument("--controlnet", default="")
    parser.add_argument("--ip-adapter", default="")
    parser.add_argument("--ip-adapter-subfolder", default="sdxl_models")
    args = parser.parse_args(argv)
    if args.base_model and not (args.controlnet and args.ip_adapter):
        parser.error("--base-model needs --controlnet and --ip-adapter too (both modes are probed)")
    return args


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    on_gpu = torch.cuda.is_available() and not args.tiny
    args.size = args.size or (1024 if on_gpu else 64)
    args.steps = args.steps or (30 if on_gpu else 2)
    args.dtype = args.dtype or ("float16" if on_gpu else "bfloat16")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run(args)


if __name__ == "__main__":
    main()
