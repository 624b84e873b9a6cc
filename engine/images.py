"""Which files are pictures: one list for every folder of pictures a user points the engine at
(training pictures, class pictures, identity references, pose pictures)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def pictures_in(folder: Path) -> list[Path]:
    """The picture files directly in ``folder``, sorted by name (the folder must exist)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES)


def png_bytes(image: Image.Image) -> bytes:
    """The picture as PNG (lossless: what is read back is what was written)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def describe_suffixes() -> str:
    """``.png/.jpg/...``, for a message that says what counts as a picture."""
    return "/".join(PICTURE_SUFFIXES)
