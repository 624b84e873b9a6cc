"""The user's own character picture: checked at the door, stored once, read back for its job.

A picture comes from any adapter as an ``Upload``: what the platform declares of it (size,
content type) and how to fetch it (a Telegram photo, a Discord attachment, a file the CLI
names). The service checks the user and the story first, then ``PictureRules.receive``, the one
check every platform meets, before any job row is written:

* at most ``[story] max_picture_mb``, by the declared size before anything is fetched, then
  by the bytes;
* declared as an image, when the platform declares a type;
* a still JPEG, PNG, WebP, GIF or BMP: Pillow is told to try only those formats, so an EPS
  or PSD upload never reaches a decoder it has no business running;
* at most ``Image.MAX_IMAGE_PIXELS`` pixels, checked from the header before any decode (a
  decompression bomb is a small file that decodes to gigabytes);
* not animated: which frame would be the character is the user's call, not ours.

What passes is turned upright (EXIF orientation), converted to RGB (CMYK, palette, greyscale,
transparency over white), shrunk to ``STORED_SIDE`` and written as PNG under
``<outputs>/pictures/<sha256>.png``. The job row names that file, so a resumed or regenerated
board draws from the same picture; the storage sweep removes a picture no job names.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from bot.errors import BadRequest
from engine.board_files import write_bytes
from engine.images import png_bytes

log = logging.getLogger(__name__)

PICTURE_FOLDER = "pictures"
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
STORED_SIDE = 1024  # a reference picture needs no more: IP-Adapter and CLIP see 224 px
_MB = 1_000_000


@dataclass(frozen=True)
class Upload:
    """A picture a user sent, not fetched yet: what the platform declares, and how to fetch it."""

    fetch: Callable[[], Awaitable[bytes]]
    size: int | None = None  # as declared; None: not declared
    content_type: str | None = None  # as declared, e.g. "image/jpeg"; None: not declared

    @classmethod
    def of_bytes(cls, data: bytes) -> Upload:
        """A picture already in hand (the CLI's and the console's file)."""
        async def fetch() -> bytes:
            return data

        return cls(fetch, size=len(data))


class PictureRules:
    def __init__(self, max_mb: float, outputs: Path) -> None:
        self.max_bytes = int(max_mb * _MB)
        self.folder = outputs / PICTURE_FOLDER

    def check_size(self, size: int | None) -> None:
        """Refuse a picture whose declared size is over the limit (None: not declared)."""
        if size is not None and size > self.max_bytes:
            raise BadRequest("err_picture_too_big", size=_megabytes(size), max=_megabytes(self.max_bytes))

    def check_declared(self, upload: Upload) -> None:
        """Refuse what the platform's own description already rules out, before any download."""
        self.check_size(upload.size)
        content_type = (upload.content_type or "").lower()
        if content_type.startswith("video/"):  # Telegram's clients send a GIF as an MP4 "animation"
            raise BadRequest("err_picture_animated")
        if content_type and not content_type.startswith("image/"):
            raise BadRequest("err_picture_unreadable", formats=", ".join(FORMATS))

    async def receive(self, upload: Upload) -> Path:
        """Check what is declared, fetch, check and store the picture; its stored path."""
        self.check_declared(upload)
        data = await upload.fetch()
        return await asyncio.to_thread(self.accept, data)

    def accept(self, data: bytes) -> Path:
        """Check, normalise and store the picture; its stored path. Raises BadRequest with the
        reason. Reads and writes files: run it off the event loop."""
        self.check_size(len(data))
        image = _normalised(_opened(data))
        body = png_bytes(image)
        path = self.folder / f"{hashlib.sha256(body).hexdigest()[:32]}.png"
        if path.exists():
            path.touch()  # new again: the sweep spares a picture this young until its job row names it
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_bytes(path, body)  # atomic: a crash leaves no half picture under a job's name
        log.info("character picture accepted: %dx%d -> %s", image.width, image.height, path.name)
        return path


def read_picture(path: Path) -> Image.Image:
    """A stored picture, for the job that names it (already checked and RGB)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def _opened(data: bytes) -> Image.Image:
    """The picture, decoded, after the checks that need only its header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadRequest("err_picture_too_many_pixels", max=_megapixels(Image.MAX_IMAGE_PIXELS)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BadRequest("err_picture_unreadable", formats=", ".join(FORMATS)) from None
    if Image.MAX_IMAGE_PIXELS and image.width * image.height > Image.MAX_IMAGE_PIXELS:
        raise BadRequest("err_picture_too_many_pixels", max=_megapixels(Image.MAX_IMAGE_PIXELS))
    if getattr(image, "n_frames", 1) > 1:
        raise BadRequest("err_picture_animated")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError):  # a truncated or corrupt body behind a good header
        raise BadRequest("err_picture_unreadable", formats=", ".join(FORMATS)) from None
    return image


def _normalised(image: Image.Image) -> Image.Image:
    """Upright, RGB (transparency over white), at most STORED_SIDE on its longer side."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    image = image.convert("RGB")  # CMYK, greyscale, 16-bit and palette pictures alike
    image.thumbnail((STORED_SIDE, STORED_SIDE), Image.Resampling.LANCZOS)
    return image


def _megabytes(size: int) -> str:
    return f"{size / _MB:.1f}"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.0f}"
