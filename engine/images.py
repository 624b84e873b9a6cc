"""Which files are pictures: one list for every folder of pictures a user points the engine at
(training pictures, class pictures, identity references, pose pictures)."""

from __future__ import annotations

from pathlib import Path

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def pictures_in(folder: Path) -> list[Path]:
    """The picture files directly in ``folder``, sorted by name (the folder must exist)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES)


def describe_suffixes() -> str:
    """``.png/.jpg/...``, for a message that says what counts as a picture."""
    return "/".join(PICTURE_SUFFIXES)
