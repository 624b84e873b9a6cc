"""DreamBooth prior preservation: pictures of the character's class ("a photo of a kazakh man")
trained on beside the character's, so the LoRA learns the character without forgetting the class.

``--class-images DIR`` may hold real pictures. When it holds fewer than
``train.num_class_images``, the missing ones are drawn with the base model first and kept in
DIR with a ``class_prompt.txt`` recording what they show, so the next run reuses them and a run
with a different class prompt is refused instead of mixing two classes.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Protocol

from PIL import Image

from engine.errors import TrainError
from engine.models import ModelLoader
from engine.settings import RenderSettings, TrainSettings
from engine.training.data import Example, picture_files, prepare

log = logging.getLogger(__name__)

PROMPT_FILE = "class_prompt.txt"


class PriorJob(Protocol):
    """What prior preservation reads of a training run (engine.training.train.TrainJob has it)."""

    settings: TrainSettings
    base_model: str
    device: str
    class_prompt: str
    class_images: Path | None


def class_examples_for(job: PriorJob, instances: list[Example]) -> list[Example]:
    """The class pictures as training examples, captioned with the class prompt; generated if missing."""
    assert job.class_images is not None
    s = job.settings
    folder = job.class_images
    folder.mkdir(parents=True, exist_ok=True)
    recorded = folder / PROMPT_FILE
    if recorded.is_file() and recorded.read_text(encoding="utf-8").strip() != job.class_prompt:
        raise TrainError(f"--class-images {folder} holds pictures of {recorded.read_text(encoding='utf-8').strip()!r},"
                         f" not {job.class_prompt!r}; use another folder or empty this one")
    existing = picture_files(folder)
    missing = s.num_class_images - len(existing)
    if missing > 0:
        generate_class_images(job, folder, first_index=len(existing), count=missing)
        existing = picture_files(folder)
    else:
        log.info("prior preservation: reusing %d class pictures in %s", len(existing), folder)
    examples = []
    for path in existing[: s.num_class_images]:
        with Image.open(path) as picture:
            picture.load()
            image, corner = prepare(picture, s.resolution, s.crop)
            examples.append(Example(path, job.class_prompt, image, (picture.height, picture.width), corner,
                                    (s.resolution, s.resolution)))
    return examples


def generate_class_images(job: PriorJob, folder: Path, *, first_index: int, count: int) -> None:
    """Draw ``count`` class pictures with the base model (no LoRA), each saved as it is made."""
    import torch

    s = job.settings
    log.info("prior preservation: drawing %d class pictures of %r with the base model", count, job.class_prompt)
    loader = ModelLoader(RenderSettings(renderer="sdxl", base_model=job.base_model, device=job.device,
                                        ref_guided=False, clip_model="", fuse_qkv=False, compile_unet=False,
                                        width=s.resolution, height=s.resolution, steps=s.class_steps))
    pipe = loader.pipeline()
    (folder / PROMPT_FILE).write_text(job.class_prompt + "\n", encoding="utf-8")
    for index in range(first_index, first_index + count):
        generator = torch.Generator("cpu").manual_seed(s.seed * 100_003 + index)
        image = pipe(job.class_prompt, num_inference_steps=s.class_steps, width=s.resolution, height=s.resolution,
                     generator=generator).images[0]
        partial = folder / f".class-{index:05d}.png.partial"
        image.save(partial, format="PNG")
        partial.rename(folder / f"class-{index:05d}.png")
    del pipe, loader
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
