"""How far one seed's frames drift with the batch size and the thread count, on this machine.

README, "What a seed promises": the same request on one machine and thread count gives the same
bytes; a frame drawn in another batch, with another thread count or on another processor is the
same picture within rounding. This bench measures that rounding, so a new machine (AMD or Intel,
with or without AVX-512) can be checked against the bounds the tests assert
(tests/reproducibility.py: at most TARGET_MAX_LEVELS levels per channel, PSNR >= TARGET_MIN_PSNR_DB).

Set-up: the tiny random-weight SDXL and UNet LoRA of ``tests.tiny_models``, loaded through
``engine.build.build_engine`` as the bot loads them (no identity check, so every frame keeps its
first attempt). The same --frames board (seed 5) is drawn four times: batch_size 4 and 1, each at
1 and 2 torch threads. Each board is compared frame by frame with the first (batch 4, 2 threads).

Printed: per variant the largest difference in 0..255 levels and the lowest PSNR, then one line

    RESULT seed_drift: max N levels, min PSNR X dB over F frames x 3 variants; frame 1 the same bytes at any batch size: yes

Nothing is downloaded; everything is written under a temporary directory.

    python bench/seed_drift.py [--frames 8] [--steps 4] [--size 64]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from engine.build import build_engine  # noqa: E402
from engine.settings import EngineSettings, RenderSettings  # noqa: E402
from engine.storyboard import BoardRequest  # noqa: E402
from tests.reproducibility import psnr  # noqa: E402

TARGET_MAX_LEVELS = 2  # the bounds tests/reproducibility.py asserts
TARGET_MIN_PSNR_DB = 50.0
STORY = ("Aldar Kose arrives at a busy bazaar with an empty pot. A greedy merchant laughs at his coat. "
         "Aldar Kose swears the pot boils soup by itself. The merchant trades his horse for the pot. "
         "Aldar Kose rides away across the steppe at sunset.")
VARIANTS = ((4, 2), (4, 1), (1, 2), (1, 1))  # (batch_size, threads); the first is the reference


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="frames per board, 2..12 (default 8)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels, a multiple of 8 (default 64)")
    args = parser.parse_args(argv)
    if not 2 <= args.frames <= 12:
        parser.error("--frames must be within 2..12")
    if args.size < 64 or args.size % 8:
        parser.error("--size must be a multiple of 8, at least 64")
    return args


def draw(folder: Path, args: argparse.Namespace, sdxl: Path, lora: Path, batch_size: int, threads: int) -> list:
    import torch

    render = RenderSettings(renderer="sdxl", base_model=str(sdxl), lora=str(lora), clip_model="", width=args.size,
                            height=args.size, steps=args.steps, batch_size=batch_size, ref_guided=False)
    engine = build_engine(EngineSettings(render=render))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        engine.run(BoardRequest(STORY, frames=args.frames, seed=5), folder)
    finally:
        torch.set_num_threads(before)
    return [np.asarray(Image.open(folder / f"frame_{i:02d}.png")) for i in range(1, args.frames + 1)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from tests.tiny_models import build_tiny_lora, build_tiny_sdxl

    with tempfile.TemporaryDirectory(prefix="bench-seed-drift-") as tmp_name:
        tmp = Path(tmp_name)
        sdxl = build_tiny_sdxl(tmp / "sdxl")
        lora = build_tiny_lora(sdxl, tmp / "lora")
        boards = {variant: draw(tmp / f"b{variant[0]}t{variant[1]}", args, sdxl, lora, *variant)
                  for variant in VARIANTS}
    reference = boards[VARIANTS[0]]
    print(f"{args.frames} frames of {args.size}x{args.size}, {args.steps} steps, seed 5; "
          f"compared with batch_size {VARIANTS[0][0]} at {VARIANTS[0][1]} threads")
    print(f"{'batch_size':>10} {'threads':>7} {'max levels':>10} {'min PSNR dB':>11} {'frames differing':>16}")
    worst, lowest = 0, float("inf")
    for batch_size, threads in VARIANTS[1:]:
        board = boards[(batch_size, threads)]
        levels = [int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(reference, board)]
        ratios = [psnr(a, b) for a, b in zip(reference, board)]
        worst, lowest = max(worst, *levels), min(lowest, *ratios)
        print(f"{batch_size:>10} {threads:>7} {max(levels):>10} {min(ratios):>11.1f} "
              f"{sum(level > 0 for level in levels):>11} of {len(levels)}")
    frame1_same = np.array_equal(reference[0], boards[(1, VARIANTS[0][1])][0])  # alone in both, same threads
    verdict = "PASS" if worst <= TARGET_MAX_LEVELS and lowest >= TARGET_MIN_PSNR_DB and frame1_same else "MISS"
    print(f"RESULT seed_drift: max {worst} levels, min PSNR {lowest:.1f} dB over {args.frames} frames x "
          f"{len(VARIANTS) - 1} variants; frame 1 the same bytes at any batch size: {'yes' if frame1_same else 'no'} "
          f"(targets <= {TARGET_MAX_LEVELS} levels, >= {TARGET_MIN_PSNR_DB:g} dB) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
