"""Trainer on the tiny SDXL: steps per second with and without latent/text caching.

Target: caching makes repeated epochs at least 2x faster (``train.cache_latents``).

Set-up: ``tests.tiny_models`` writes a tiny random SDXL pipeline to a temporary folder, and
``--pictures`` synthetic character pictures are drawn with Pillow. Both runs train through
``engine.training.train.train_lora`` exactly as ``python -m bot train-lora`` does, same seed and
settings, differing only in ``cache_latents``. The rate counts the steps after the first
epoch (every picture has been seen, so the cached run encodes nothing more); model loading
and checkpoint writing are outside the timed span.

    python bench/train_tiny.py [--steps 24] [--pictures 4] [--resolution 128] [--batch-size 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.settings import TrainSettings  # noqa: E402
from engine.training.train import TrainJob, train_lora  # noqa: E402

TARGET_RATIO = 2.0


def draw_pictures(folder: Path, count: int) -> None:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True)
    for index in range(count):
        picture = Image.new("RGB", (160, 128), (235, 235, 225))
        draw = ImageDraw.Draw(picture)
        x = 24 + 8 * index
        draw.ellipse((x, 36, x + 72, 116), fill=(200, 40, 40))
        draw.polygon([(x - 8, 40), (x + 36, 4 + index), (x + 80, 40)], fill=(230, 200, 20))
        picture.save(folder / f"character_{index}.png")


def timed_run(job: TrainJob, skip: int) -> tuple[float, int]:
    """Steps per second after the first ``skip`` steps, and the VAE encodes the run did."""
    stamps: list[float] = []
    result = train_lora(job, show_progress=False, on_step=lambda step, loss: stamps.append(time.perf_counter()))
    timed = stamps[skip:]
    return (len(timed) - 1) / (timed[-1] - timed[0]), result.encodes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--pictures", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from tests.tiny_models import build_tiny_sdxl

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = build_tiny_sdxl(root / "sdxl")
        draw_pictures(root / "pictures", args.pictures)
        settings = TrainSettings(resolution=args.resolution, steps=args.steps, checkpoint_every=args.steps,
                                 batch_size=args.batch_size, rank=4, alpha=4.0, warmup_steps=0)
        epoch_steps = -(-args.pictures // args.batch_size)
        skip = epoch_steps + 1
        if args.steps - skip < 4:
            parser.error(f"--steps must be at least {skip + 4} to time repeated epochs")
        rates = {}
        for cached in (False, True):  # uncached first: any warm-up favours the cached run less
            job = TrainJob(root / "pictures", str(base), root / f"out-{cached}",
                           settings.model_copy(update={"cache_latents": cached}), device="cpu")
            rates[cached] = timed_run(job, skip)
    print(f"tiny SDXL trainer, {args.pictures} pictures at {args.resolution}px, batch {args.batch_size}, "
          f"{args.steps} steps (timed after step {skip})")
    print(f"{'caching':<10}{'steps/s':>10}{'VAE encodes':>14}")
    for cached in (False, True):
        rate, encodes = rates[cached]
        print(f"{'on' if cached else 'off':<10}{rate:>10.2f}{encodes:>14}")
    ratio = rates[True][0] / rates[False][0]
    print(f"ratio cached/uncached: {ratio:.2f}x (target >= {TARGET_RATIO:.1f}x) "
          f"{'OK' if ratio >= TARGET_RATIO else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
