"""Per-story aspect ratios: the size each renderer draws, the pose skeletons, the grid's shape
and its platform limits, and what report.json says."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.build import build_engine
from engine.errors import InvalidRequest
from engine.limits import ASPECTS, MIN_FRAME_SIDE, NATIVE_SIZES, frame_size
from engine.rendering.grid import GridPanel, auto_columns, compose_grid, encode_grid
from engine.settings import EngineSettings, GridSettings, RenderSettings
from engine.storyboard import BoardRequest

STORY = "Aldar Kose rides to the bazaar. The bai laughs at his coat. Aldar Kose grins and rides away."
TELEGRAM_PHOTO = {"bytes": 10_000_000, "sides": 10_000, "ratio": 20.0}
DISCORD_FILE = 10 * 2**20


def test_native_sizes_are_sdxl_sizes_near_one_megapixel_in_the_named_shape():
    for aspect, (width, height) in NATIVE_SIZES.items():
        assert width % 64 == 0 and height % 64 == 0, aspect
        assert 0.8 < width * height / 2**20 < 1.1, aspect
        named = [float(part) for part in aspect.split(":")]
        assert width / height == pytest.approx(named[0] / named[1], rel=0.05), aspect
    assert NATIVE_SIZES["16:9"] == (1344, 768) and NATIVE_SIZES["9:16"] == (768, 1344)
    assert NATIVE_SIZES["2.39:1"] == (1536, 640)


@pytest.mark.parametrize("pixels", [512 * 512, 128 * 128, 64 * 64])
def test_a_smaller_renderer_draws_the_same_shape_scaled_down(pixels):
    for aspect in ASPECTS:
        width, height = frame_size(aspect, pixels)
        native_w, native_h = NATIVE_SIZES[aspect]
        assert width % 16 == 0 and height % 16 == 0 and min(width, height) >= MIN_FRAME_SIDE
        if min(width, height) > MIN_FRAME_SIDE:  # else held at the shortest side a renderer draws
            assert abs(width * height - pixels) / pixels < 0.3, aspect
        if aspect == "1:1":
            assert width == height
        else:  # the long side stays the long side
            assert (width > height) == (native_w > native_h), aspect


def board(engine, aspect: str, folder: Path, frames: int = 1, mode: str = "simple") -> dict:
    engine.run(BoardRequest(STORY, frames=frames, seed=3, aspect=aspect, mode=mode), folder)
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def test_every_aspect_renders_on_the_preview_renderer_at_its_size(tmp_path):
    engine = build_engine(EngineSettings(render=RenderSettings(renderer="preview", width=512, height=512)))
    for aspect in ASPECTS:
        report = board(engine, aspect, tmp_path / aspect.replace(":", "x"))
        expected = frame_size(aspect, 512 * 512)
        frame = Image.open(tmp_path / aspect.replace(":", "x") / report["frames"][0]["file"])
        assert frame.size == expected, aspect
        assert report["aspect"] == aspect
        assert (report["frame_size"]["width"], report["frame_size"]["height"]) == expected


def test_every_aspect_renders_on_the_tiny_sdxl_with_its_pose_skeleton(
        tmp_path, tiny_sdxl_dir, tiny_controlnet_dir, tiny_ip_adapter_dir):
    engine = build_engine(EngineSettings(render=RenderSettings(
        renderer="sdxl", base_model=str(tiny_sdxl_dir), clip_model="", width=64, height=64, steps=2,
        ref_guided=True, controlnet=str(tiny_controlnet_dir), ip_adapter=str(tiny_ip_adapter_dir))))
    for aspect in ASPECTS:
        folder = tmp_path / aspect.replace(":", "x")
        report = board(engine, aspect, folder, frames=2, mode="ref-guided")
        expected = frame_size(aspect, 64 * 64)
        for frame in report["frames"]:
            assert Image.open(folder / frame["file"]).size == expected, aspect
        pose = report["frames"][1]["pose_file"]  # frame 2 is drawn from frame 1 with a pose skeleton
        assert Image.open(folder / pose).size == expected, aspect


def test_an_unknown_aspect_is_refused_before_any_file_is_written(tmp_path):
    engine = build_engine(EngineSettings(render=RenderSettings(renderer="preview", width=256, height=256)))
    with pytest.raises(InvalidRequest, match="aspect must be one of"):
        engine.run(BoardRequest(STORY, frames=1, aspect="5:4"), tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_wide_boards_read_as_rows_of_two_and_tall_boards_as_a_strip():
    assert auto_columns(6, 1344 / 768) == 2 and auto_columns(10, 1536 / 640) == 2
    assert auto_columns(6, 768 / 1344) == 6 and auto_columns(10, 768 / 1344) == 5
    assert auto_columns(6, 1.0) == 3 and auto_columns(6, 1152 / 896) == 3


def photo_like(size: tuple[int, int], seed: int) -> Image.Image:
    """Noise over a gradient: what a JPEG or PNG encoder finds hardest, as a photo is."""
    rng = np.random.default_rng(seed)
    width, height = size
    gradient = np.linspace(0, 200, width, dtype=np.float32)[None, :, None].repeat(height, 0).repeat(3, 2)
    noise = rng.normal(0, 40, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(gradient + noise, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("count", [6, 10])
@pytest.mark.parametrize("aspect", ASPECTS)
def test_the_grid_of_every_aspect_stays_within_telegram_and_discord_limits(aspect, count):
    size = NATIVE_SIZES[aspect]
    frame = photo_like((size[0] // 2, size[1] // 2), seed=count).resize(size)  # half the noise: faster to encode
    panels = [GridPanel(frame, number=i, caption=f"Aldar Kose, panel {i}") for i in range(1, count + 1)]
    grid = encode_grid(compose_grid(panels, GridSettings(), title="A board"), GridSettings())
    assert len(grid.data) <= min(TELEGRAM_PHOTO["bytes"], DISCORD_FILE)
    assert grid.width + grid.height <= TELEGRAM_PHOTO["sides"]
    assert max(grid.width, grid.height) / min(grid.width, grid.height) <= TELEGRAM_PHOTO["ratio"]
    with Image.open(io.BytesIO(grid.data)) as decoded:
        assert decoded.size == (grid.width, grid.height)
