"""What a seed promises, as the tests check it (README, "What a seed promises").

* **Byte for byte**: the same request, settings and thread count on one machine. The engine's
  batches are fixed by the request (frame 1 alone, then the rest in order), so every
  computation repeats exactly. Tests compare bytes only between renders made that way.
* **Within rounding**: a frame drawn in another batch (a resumed job, another batch size or
  slot), with another thread count, or on another CPU or GPU starts from the same noise, but
  batched and unbatched matrix products round differently on some processors. Such frames
  are the same picture, not the same bytes: ``assert_same_picture`` checks exactly that.

The bounds are loose enough for every processor these tests run on (measured: at most 1
level, PSNR above 80 dB on the tiny models) and tight enough that another seed, prompt or
LoRA fails them by far.
"""

from __future__ import annotations

import numpy as np

MAX_LEVELS = 2  # no channel of any pixel differs by more than this, in 0..255
MIN_PSNR_DB = 50.0


def to_levels(frame: np.ndarray) -> np.ndarray:
    """A float frame in [0, 1] (diffusers' output_type="np") as 8-bit levels, as a PNG would hold it."""
    return np.clip(np.round(np.asarray(frame, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two 8-bit pictures, in dB (inf when they are equal)."""
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def assert_same_picture(a: np.ndarray, b: np.ndarray, what: str = "frame") -> None:
    """The two 8-bit pictures differ by floating-point rounding at most."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: shapes differ, {a.shape} vs {b.shape}"
    worst = int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
    ratio = psnr(a, b)
    assert worst <= MAX_LEVELS and ratio >= MIN_PSNR_DB, (
        f"{what}: more than rounding apart (max {worst} levels, PSNR {ratio:.1f} dB; "
        f"allowed {MAX_LEVELS} levels, {MIN_PSNR_DB} dB)")


def assert_other_picture(a: np.ndarray, b: np.ndarray, what: str = "frame") -> None:
    """The two pictures differ by more than rounding: another seed, prompt or model drew one."""
    a, b = np.asarray(a), np.asarray(b)
    worst = int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) if a.shape == b.shape else 255
    assert a.shape != b.shape or worst > MAX_LEVELS, f"{what}: the pictures are the same within rounding"
