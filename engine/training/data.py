"""The trainer's dataset: a folder of pictures, each with an optional caption beside it.

``character.png`` is captioned by ``character.txt`` when that exists, else by the caption
template with the trigger token ("a photo of aldar_kose_man"). Every picture is brought to
the training square (center-cropped, or resized whole), and SDXL's micro-conditioning is
computed from what was done to it: ``original_size``, ``crop_coords_top_left`` and
``target_size``, all (height, width) as SDXL was trained with. Pure Pillow; no torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from engine.images import describe_suffixes, pictures_in

log = logging.getLogger(__name__)

MIN_PICTURES = 3


class DatasetError(ValueError):
    """The training folder cannot be used; the message lists the files at fault."""


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str
    image: Image.Image  # RGB, resolution x resolution
    original_size: tuple[int, int]  # (height, width) of the picture as found
    crop_top_left: tuple[int, int]  # (top, left) of the crop, in the scaled picture
    target_size: tuple[int, int]  # (height, width) trained at

    @property
    def time_ids(self) -> tuple[int, int, int, int, int, int]:
        """SDXL's six added time ids: original size, crop corner, target size."""
        return (*self.original_size, *self.crop_top_left, *self.target_size)


def caption_for(path: Path, *, trigger: str, template: str) -> str:
    """The caption file's text when there is one (the trigger added if it lacks it), else the template."""
    text_file = path.with_suffix(".txt")
    if text_file.is_file():
        caption = " ".join(text_file.read_text(encoding="utf-8").split())
        if caption:
            return caption if trigger in caption else f"{trigger}, {caption}"
    return template.format(trigger=trigger)


def prepare(picture: Image.Image, resolution: int, crop: str) -> tuple[Image.Image, tuple[int, int]]:
    """The picture as a ``resolution`` square and the crop's (top, left) in the scaled picture."""
    picture = picture.convert("RGB")
    if crop == "resize":
        return picture.resize((resolution, resolution), Image.LANCZOS), (0, 0)
    scale = resolution / min(picture.size)
    width, height = max(resolution, round(picture.width * scale)), max(resolution, round(picture.height * scale))
    scaled = picture.resize((width, height), Image.LANCZOS)
    top, left = (height - resolution) // 2, (width - resolution) // 2
    return scaled.crop((left, top, left + resolution, top + resolution)), (top, left)


def picture_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"training pictures: folder not found: {folder}")
    return pictures_in(folder)


def load_dataset(folder: Path, *, trigger: str, template: str, resolution: int, crop: str = "center") -> list[Example]:
    """Every picture in ``folder`` ready to train on; DatasetError names unreadable files or too few pictures."""
    files = picture_files(folder)
    examples: list[Example] = []
    bad: list[str] = []
    for path in files:
        try:
            with Image.open(path) as picture:
                picture.load()
                original = (picture.height, picture.width)
                image, corner = prepare(picture, resolution, crop)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            bad.append(f"{path.name} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'})")
            continue
        caption = caption_for(path, trigger=trigger, template=template)
        examples.append(Example(path, caption, image, original, corner, (resolution, resolution)))
    if bad:
        raise DatasetError(f"training pictures in {folder}: cannot read {len(bad)} file(s): " + "; ".join(bad))
    if len(examples) < MIN_PICTURES:
        found = ", ".join(p.name for p in files) or "none"
        raise DatasetError(f"training pictures in {folder}: need at least {MIN_PICTURES} pictures "
                           f"({describe_suffixes()}), found {len(examples)}: {found}")
    log.info("dataset: %d pictures from %s at %dpx (%s)", len(examples), folder, resolution, crop)
    return examples
