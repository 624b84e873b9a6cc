"""SDXL engine on tiny random-weight models: cold start vs warm boards, and model loads per board.

Target: a warm board (the second and later boards of one process) causes 0 model loads
(``report["timings"]["model_loads"] == 0`` and the loader's total unchanged).

Set-up: ``tests.tiny_models`` writes a tiny SDXL pipeline, a tiny CLIP and a tiny UNet LoRA
(random weights, ``save_pretrained``/safetensors) into a temporary directory. The engine is
built exactly as the bot builds it:

    build_engine(EngineSettings(render=RenderSettings(renderer="sdxl", base_model=..., lora=...,
                 clip_model=..., width=64, height=64, steps=S, batch_size=4)))

so the weights go through ``engine.models.ModelLoader`` (from_pretrained, LoRA load + fuse, CLIP).

Measured, all in one process:

1. imports     torch, diffusers, transformers, peft (paid once per process, before anything else);
2. cold start  the first ``build_engine`` (component loads) + the first board (seed 0);
3. warm        --repeat more boards (seeds 1..N) on the same engine: wall time, model loads;
4. rebuild     ``build_engine`` again with the libraries already imported: what reloading the
               weights for every board would add to each board;
5. batch size  the same warm boards (same seeds) on an engine built with batch_size=1, after one
               untimed board, for the batch_size=1 / batch_size=4 ratio.

Each board is --frames frames (default 8) of the story file, with the configured validation
([validation] defaults: threshold 0.70, 2 re-rolls). A tiny random CLIP scores identity near
random, so most frames are re-rolled: the "renders" column counts every frame drawn,
re-rolls included, and "s/render" divides the render stage by it.

Nothing is downloaded (HF_HUB_OFFLINE=1); everything is written under a temporary directory.

--threads N sets torch's CPU threads (default: torch's own choice); on a busy 2-core box two
threads spin against each other and a tiny board can take 30x longer, so run_all passes 1.

    python bench/engine_tiny.py [--repeat 3] [--steps 2] [--frames 8] [--max-retries 2] [--threads N] [--story PATH]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.build import build_engine  # noqa: E402  (imports no torch/diffusers)
from engine.board_files import Storyboard  # noqa: E402
from engine.settings import EngineSettings, RenderSettings, ValidateSettings  # noqa: E402
from engine.storyboard import BoardRequest, StoryEngine  # noqa: E402

TARGET_LOADS = 0
DEFAULT_STORY = REPO.parent / "shared" / "stories" / "en_merchant.txt"
FALLBACK_STORY = "Aldar Kose tricks a greedy merchant at the bazaar and rides away on his horse."
SIZE = 64


def _quiet_libraries() -> None:
    """Progress bars and the tiny LoRA's 'no text-encoder keys' warnings would drown the table."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def time_imports() -> float:
    t0 = time.perf_counter()
    import diffusers  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from diffusers import StableDiffusionXLPipeline  # noqa: F401  (lazy module: the real import)
    from transformers import CLIPModel  # noqa: F401

    return time.perf_counter() - t0


def build_tiny_models(root: Path) -> dict[str, str]:
    from tests.tiny_models import build_tiny_clip, build_tiny_lora, build_tiny_sdxl

    sdxl = build_tiny_sdxl(root / "tiny_sdxl")
    clip = build_tiny_clip(root / "tiny_clip")
    lora = build_tiny_lora(sdxl, root / "tiny_lora")
    return {"base_model": str(sdxl), "clip_model": str(clip), "lora": str(lora)}


def engine_settings(models: dict[str, str], *, steps: int, batch_size: int, max_retries: int) -> EngineSettings:
    return EngineSettings(
        render=RenderSettings(
            renderer="sdxl", width=SIZE, height=SIZE, steps=steps, batch_size=batch_size, ref_guided=False,
            **models
        ),
        validation=ValidateSettings(max_retries=max_retries),
    )


def timed_build(settings: EngineSettings) -> tuple[StoryEngine, float, int]:
    t0 = time.perf_counter()
    engine = build_engine(settings)
    seconds = time.perf_counter() - t0
    if engine.renderer.name != "sdxl" or engine.models is None:
        raise RuntimeError(f"expected the SDXL renderer, got {engine.renderer.name}: {engine.reasons}")
    return engine, seconds, engine.models.loads


class Board:
    """One timed board: wall seconds and what its report says."""

    def __init__(self, label: str, board: Storyboard, wall: float) -> None:
        timings = board.report["timings"]
        self.label = label
        self.wall = wall
        self.render = timings["render"]
        self.validate = timings["validate"]
        self.loads = timings["model_loads"]
        self.loads_total = board.report["models"]["loads_total"]
        self.frames = len(board.frames)
        self.renders = sum(len(f["attempts"]) for f in board.report["frames"])

    @property
    def per_render(self) -> float:
        return self.render / self.renders


def run_board(engine: StoryEngine, label: str, story: str, frames: int, seed: int, out: Path) -> Board:
    t0 = time.perf_counter()
    board = engine.run(BoardRequest(story, frames=frames, seed=seed), out)
    wall = time.perf_counter() - t0
    if not board.grid_path.is_file():
        raise RuntimeError(f"no grid written for {label}")
    return Board(label, board, wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="warm boards per batch size (default 3)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per frame (default 2)")
    parser.add_argument("--frames", type=int, default=8, help="frames per board (default 8)")
    parser.add_argument("--max-retries", type=int, default=ValidateSettings().max_retries,
                        help="validation re-rolls per frame (default: [validation] max_retries = %(default)s)")
    parser.add_argument("--story", type=Path, default=None,
                        help=f"story file (default {DEFAULT_STORY}, or a built-in sentence where it is missing)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default 0 = torch's default; 1 keeps a busy 2-core box steady)")
    parser.add_argument("--verbose", action="store_true", help="keep library warnings and progress bars")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if not 1 <= args.frames <= 12:
        parser.error("--frames must be within 1..12")
    if not 1 <= args.steps <= 150:
        parser.error("--steps must be within 1..150")
    story_path = args.story or (DEFAULT_STORY if DEFAULT_STORY.is_file() else None)
    story = story_path.read_text(encoding="utf-8") if story_path else FALLBACK_STORY
    started = time.perf_counter()

    imports_s = time_imports()
    if not args.verbose:
        _quiet_libraries()
        logging.getLogger("transformers").setLevel(logging.ERROR)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"story: {story_path or 'built-in'} ({len(story)} chars); {args.frames} frames of {SIZE}x{SIZE}, {args.steps} steps; "
          f"max_retries {args.max_retries}; repeat {args.repeat}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    with tempfile.TemporaryDirectory(prefix="bench-engine-tiny-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        models = build_tiny_models(tmp / "models")
        build_models_s = time.perf_counter() - t0
        print(f"tiny models written in {build_models_s:.2f} s (not part of any figure)")

        def settings(batch_size: int) -> EngineSettings:
            return engine_settings(models, steps=args.steps, batch_size=batch_size, max_retries=args.max_retries)

        # 2. cold start: first build_engine in this process + first board
        engine4, cold_build_s, cold_loads = timed_build(settings(4))
        first = run_board(engine4, "first board", story, args.frames, 0, tmp / "b4-0")
        applied = engine4.models.report()["applied"]

        # 3. warm boards on the same engine
        warm4 = [run_board(engine4, f"warm {i}", story, args.frames, i, tmp / f"b4-{i}")
                 for i in range(1, args.repeat + 1)]
        loader_total = engine4.models.loads

        # 4. a second build with everything imported: the price of reloading per board
        rebuilt, rebuild_s, rebuild_loads = timed_build(settings(4))
        del rebuilt

        # 5. batch_size=1: same seeds, after one untimed board
        engine1, build1_s, build1_loads = timed_build(settings(1))
        warmup1 = run_board(engine1, "bs1 warm-up", story, args.frames, 0, tmp / "b1-0")
        warm1 = [run_board(engine1, f"warm {i}", story, args.frames, i, tmp / f"b1-{i}")
                 for i in range(1, args.repeat + 1)]

    warm4_s = statistics.median(b.wall for b in warm4)
    warm1_s = statistics.median(b.wall for b in warm1)
    cold_s = cold_build_s + first.wall

    print()
    print(f"{'step':<34} {'seconds':>8} {'loads':>5} {'renders':>7} {'s/render':>8}  note")

    def line(label: str, seconds: float, loads: object = "", board: Board | None = None, note: str = "") -> None:
        renders = f"{board.renders:>7}" if board else f"{'':>7}"
        per = f"{board.per_render:>8.3f}" if board else f"{'':>8}"
        print(f"{label:<34} {seconds:>8.3f} {loads!s:>5} {renders} {per}  {note}")

    line("imports (torch/diffusers/...)", imports_s, note="once per process")
    line("build_engine, cold (bs=4)", cold_build_s, cold_loads, note=f"loader total {cold_loads}")
    line("first board (bs=4, seed 0)", first.wall, first.loads, first)
    line("cold start = build + first board", cold_s, cold_loads + first.loads, note="imports excluded")
    for b in warm4:
        line(f"warm board bs=4 ({b.label})", b.wall, b.loads, b, note=f"loader total {b.loads_total}")
    line("build_engine again (libs warm)", rebuild_s, rebuild_loads, note="= reload cost per board")
    line("build_engine bs=1", build1_s, build1_loads)
    line("bs=1 untimed warm-up board", warmup1.wall, warmup1.loads, warmup1, note="not in the median")
    for b in warm1:
        line(f"warm board bs=1 ({b.label})", b.wall, b.loads, b)

    print()
    print(f"applied by the loader: {applied}")
    print(f"cold start / warm board (bs=4):           {cold_s:.3f} / {warm4_s:.3f} s = {cold_s / warm4_s:.2f}x "
          f"({(imports_s + cold_s) / warm4_s:.2f}x with the imports)")
    print(f"first board / warm board:                 {first.wall / warm4_s:.2f}x (first-call overhead)")
    print(f"reloading per board would cost {rebuild_s:.3f} s per board ({rebuild_loads} loads): "
          f"{warm4_s:.3f} -> {warm4_s + rebuild_s:.3f} s, +{100 * rebuild_s / warm4_s:.0f}%")
    same_work = [b.renders for b in warm1] == [b.renders for b in warm4]
    print(f"batch_size=1 / batch_size=4 warm board:   {warm1_s:.3f} / {warm4_s:.3f} s = {warm1_s / warm4_s:.2f}x "
          f"(per render {statistics.median(b.per_render for b in warm1):.3f} vs "
          f"{statistics.median(b.per_render for b in warm4):.3f} s; "
          f"{'same' if same_work else 'DIFFERENT'} renders per board)")
    elapsed = time.perf_counter() - started
    print(f"bench wall time {elapsed:.1f} s")

    warm_loads = [b.loads for b in warm4 + warm1]
    totals_steady = all(b.loads_total == loader_total for b in warm4)
    ok = all(n == TARGET_LOADS for n in warm_loads) and totals_steady
    print()
    print(f"RESULT engine_tiny: warm board {warm4_s:.3f} s median (cold start {cold_s:.3f} s, {cold_s / warm4_s:.2f}x; "
          f"bs1/bs4 {warm1_s / warm4_s:.2f}x); model loads per warm board {max(warm_loads)}, loader total "
          f"{'steady' if totals_steady else 'GREW'} at {loader_total} (target {TARGET_LOADS}) {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
