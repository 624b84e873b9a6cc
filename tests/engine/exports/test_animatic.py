"""The MP4 animatic, read back with PyAV as a phone would play it: its codec and frame rate, its
length against the planned holds, its size against the limit, the camera moving within a panel,
the cross-fade, and the caption band over the picture.

Boards are small (16:9 frames of 256x144, a 320-pixel video) except in the size tests, which take
a 10-panel board of photographs at the native 16:9 size (1344x768), and in the smoothness test, whose
panels are one photograph at 512x288."""

from __future__ import annotations

import dataclasses
import io
import itertools
import shutil
import struct
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from av.codec.codec import UnknownCodecError
from PIL import Image
from skimage import data as photos

from engine.exports import animatic
from engine.exports.animatic import (
    CAMERA_MOVES,
    Animatic,
    build_animatic,
    output_size,
    panel_seconds,
    plan_timeline,
)
from engine.exports.board import ExportBoard, ExportError, load_export_board
from engine.settings import ExportSettings

SMALL = ExportSettings(animatic_long_side=320)
# every panel one second: the timeline no longer depends on the text, so two boards line up frame by frame
ONE_SECOND = SMALL.model_copy(update={"animatic_min_seconds": 1.0, "animatic_max_seconds": 1.0,
                                      "animatic_crossfade_seconds": 0.25})
PHOTOS = (photos.astronaut, photos.chelsea, photos.coffee, photos.rocket, photos.hubble_deep_field)


def reshaped(folder: Path, target: Path, size: tuple[int, int], use_photos: bool = False) -> Path:
    """A copy of the board in ``folder`` whose frames are ``size``: its own frames resized, or photographs."""
    shutil.copytree(folder, target)
    for index, frame in enumerate(sorted(target.glob("frame_*.png"))):
        if use_photos:
            picture = Image.fromarray(PHOTOS[index % len(PHOTOS)]()).convert("RGB")
        else:
            picture = Image.open(frame).convert("RGB")
        picture.resize(size, Image.Resampling.LANCZOS).save(frame)
    return target


def decode(data: bytes) -> list[np.ndarray]:
    """Every frame of the MP4, as RGB arrays (int16, so differences do not wrap)."""
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24").astype(np.int16) for frame in container.decode(video=0)]


def luma(frame: np.ndarray) -> np.ndarray:
    return frame @ np.array([0.299, 0.587, 0.114])


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@pytest.fixture(scope="module")
def wide_board(make_board, tmp_path_factory) -> ExportBoard:
    """The conftest story's six panels (wide, close-up and medium shots; English, Kazakh, Russian; a spoken
    line), its frames made 256x144."""
    return load_export_board(reshaped(make_board(), tmp_path_factory.mktemp("wide") / "board", (256, 144)))


@pytest.fixture(scope="module")
def wide_animatic(wide_board) -> Animatic:
    return build_animatic(wide_board, SMALL)


@pytest.fixture(scope="module")
def wide_frames(wide_animatic) -> list[np.ndarray]:
    return decode(wide_animatic.data)


@pytest.fixture(scope="module")
def photo_board(make_board, tmp_path_factory) -> ExportBoard:
    """Ten panels of photographs at 1344x768: the detail a real SDXL board has, for the size limit."""
    folder = tmp_path_factory.mktemp("photos") / "board"
    return load_export_board(reshaped(make_board(frames=10), folder, (1344, 768), use_photos=True))


def test_plays_on_any_phone_h264_yuv420p_at_24_fps_without_audio(wide_animatic):
    with av.open(io.BytesIO(wide_animatic.data)) as container:
        assert [stream.type for stream in container.streams] == ["video"]  # no audio track
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert video.codec_context.pix_fmt == "yuv420p"
        assert video.average_rate == SMALL.animatic_fps == wide_animatic.fps
        assert (video.codec_context.width, video.codec_context.height) == (wide_animatic.width, wide_animatic.height)
    # +faststart: the index (moov) comes before the picture data (mdat), so playback starts while downloading
    boxes = _top_level_boxes(wide_animatic.data)
    assert boxes.index(b"moov") < boxes.index(b"mdat")


def test_frame_count_follows_each_panels_hold_less_the_cross_fades(wide_board, wide_animatic, wide_frames):
    fps = SMALL.animatic_fps
    holds = [round(panel_seconds(panel, SMALL) * fps) for panel in wide_board.panels]
    fade = round(SMALL.animatic_crossfade_seconds * fps)
    expected = sum(holds) - (len(holds) - 1) * fade
    timeline = plan_timeline(wide_board, SMALL)
    assert [span.frames for span in timeline.spans] == holds
    assert timeline.total_frames == wide_animatic.frames == expected
    assert abs(len(wide_frames) - expected) <= 1
    assert wide_animatic.seconds == pytest.approx(expected / fps)


def test_a_longer_caption_holds_longer_up_to_the_maximum(wide_board):
    panel = wide_board.panels[0]
    holds = [panel_seconds(dataclasses.replace(panel, caption=" ".join(["слово"] * words), dialogue=""), SMALL)
             for words in (0, 3, 6, 10, 12, 40)]
    assert holds == sorted(holds)
    assert holds[0] == holds[1] == SMALL.animatic_min_seconds  # too short to read slower than the minimum
    assert holds[3] == pytest.approx(10 * SMALL.animatic_seconds_per_word)
    assert holds[3] < holds[4]
    assert holds[-1] == SMALL.animatic_max_seconds
    spoken = dataclasses.replace(panel, caption="one two three four five six", dialogue='Bai: "give it back"')
    assert panel_seconds(spoken, SMALL) == pytest.approx(10 * SMALL.animatic_seconds_per_word)


def test_the_camera_pans_across_a_wide_shot(wide_board, wide_animatic, wide_frames):
    span = _span(wide_board, wide_animatic, "wide")
    start, end = _own_ends(wide_frames, span, wide_animatic.timeline.crossfade_frames)
    assert difference(start, end) > 2
    # panning left to right, the picture slides left: the end matches the start moved left by some pixels
    rows = slice(0, wide_animatic.height // 2)  # above the caption band
    shifts = {shift: difference(start[rows, shift:], end[rows, :end.shape[1] - shift]) for shift in range(40)}
    best = min(shifts, key=shifts.get)
    assert best >= 5
    assert shifts[best] < shifts[0] / 2


def test_the_camera_pushes_in_on_a_close_up(wide_board, wide_animatic, wide_frames):
    span = _span(wide_board, wide_animatic, "close-up")
    fade = wide_animatic.timeline.crossfade_frames
    start, end = _own_ends(wide_frames, span, fade)
    assert difference(start, end) > 2
    # pushing in, the end is the start's middle enlarged, by the zoom the move reached between them
    zoom = _zoom_at(span, span.frames - 1 - fade) / _zoom_at(span, fade)
    rows = slice(wide_animatic.height // 8, wide_animatic.height // 2)  # above the band, off the zoomed-out edge
    enlarged, shrunk = _zoomed(start, zoom), _zoomed(start, 1 / zoom)
    assert difference(enlarged[rows], end[rows]) < difference(start[rows], end[rows]) / 2
    assert difference(enlarged[rows], end[rows]) < difference(shrunk[rows], end[rows])


@pytest.fixture(scope="module")
def photo_animatic(make_board, tmp_path_factory) -> tuple[ExportBoard, Animatic]:
    """The six panels as one photograph at 512x288, filmed at 320 pixels: detail to see every frame's move by."""
    folder = shutil.copytree(make_board(), tmp_path_factory.mktemp("one_photo") / "board")
    for frame in folder.glob("frame_*.png"):
        Image.fromarray(photos.astronaut()).convert("RGB").resize((512, 288), Image.Resampling.LANCZOS).save(frame)
    board = load_export_board(folder)
    return board, build_animatic(board, SMALL)


def test_the_camera_moves_by_even_fractions_of_a_pixel_without_judder(photo_animatic):
    """A move of half a pixel a frame drawn from whole-pixel windows goes 0, 1, 0, 1 pixels (measured: steps
    0.5 px off their mean); sampled at the window's exact place each frame moves alike (within 0.13 px,
    x264's noise included). A pan's step is measured across the picture; a push-in's as the right half
    moving away from the left."""
    board, made = photo_animatic
    fade = made.timeline.crossfade_frames
    with av.open(io.BytesIO(made.data)) as container:
        video = [frame.to_ndarray(format="gray").astype(np.float32) for frame in container.decode(video=0)]
    height, width = video[0].shape
    rows, left, right = slice(height // 8, height // 2), slice(width // 16, width * 7 // 16), slice(width * 9 // 16, width * 15 // 16)

    def shift(a: np.ndarray, b: np.ndarray) -> float:
        return cv2.phaseCorrelate(a, b)[0][0]

    for panel, span in zip(board.panels, made.timeline.spans, strict=True):
        own = video[span.first_frame + fade:span.end_frame - fade]
        if panel.framing == "wide":
            steps = [shift(a[rows], b[rows]) for a, b in itertools.pairwise(own)]
        else:
            steps = [shift(a[rows, right], b[rows, right]) - shift(a[rows, left], b[rows, left])
                     for a, b in itertools.pairwise(own)]
        mean = float(np.mean(steps))
        assert abs(mean) > 0.05, f"panel {panel.number} ({panel.framing}): the camera does not move"
        assert max(abs(step - mean) for step in steps) < 0.25, (
            f"panel {panel.number} ({panel.framing}): uneven steps around {mean:.2f} px, {np.round(steps, 2)}")


def test_the_first_and_last_frames_differ(wide_frames):
    assert difference(wide_frames[0], wide_frames[-1]) > 5


def test_panels_cross_fade(wide_animatic, wide_frames):
    fade = wide_animatic.timeline.crossfade_frames
    assert fade == round(SMALL.animatic_crossfade_seconds * SMALL.animatic_fps)
    outgoing, incoming = wide_animatic.timeline.spans[:2]
    before = wide_frames[incoming.first_frame - 1]  # the first panel's last frame on its own
    after = wide_frames[outgoing.end_frame]  # the second's first on its own
    middle = wide_frames[incoming.first_frame + fade // 2]
    apart = difference(before, after)
    assert difference(middle, before) < 0.75 * apart
    assert difference(middle, after) < 0.75 * apart


def test_the_caption_is_burned_in_on_a_dark_band(wide_board, tmp_path):
    silent = dataclasses.replace(wide_board, panels=tuple(dataclasses.replace(panel, caption="", dialogue="")
                                                          for panel in wide_board.panels))
    captioned, plain = decode(build_animatic(wide_board, ONE_SECOND).data), decode(build_animatic(silent, ONE_SECOND).data)
    assert len(captioned) == len(plain)
    timeline = plan_timeline(wide_board, ONE_SECOND)
    kazakh = next(i for i, panel in enumerate(wide_board.panels) if "ө" in panel.caption)
    span = timeline.spans[kazakh]
    frame = span.first_frame + span.frames // 2
    with_text, without = luma(captioned[frame]), luma(plain[frame])
    height = with_text.shape[0]
    bottom, top = slice(height - height // 8, height), slice(0, height // 2)
    assert with_text[bottom].mean() < 0.7 * without[bottom].mean()  # the band darkens the lower third
    assert np.abs(with_text[top] - without[top]).mean() < 3  # and leaves the picture above it alone
    # white letters on it: far brighter than the darkened picture (at most 40% of its light) can be
    assert np.percentile(with_text[bottom], 99) > 200


def test_wide_and_tall_boards_give_even_sizes_of_the_frames_shape(make_board, tmp_path):
    for size in ((250, 140), (140, 250)):
        board = load_export_board(reshaped(make_board(), tmp_path / f"{size[0]}x{size[1]}", size))
        made = build_animatic(board, ONE_SECOND)
        frames = decode(made.data)
        height, width = frames[0].shape[:2]
        assert (width, height) == (made.width, made.height)
        assert width % 2 == 0 and height % 2 == 0
        assert max(width, height) == ONE_SECOND.animatic_long_side
        assert width / height == pytest.approx(size[0] / size[1], rel=0.02)
    assert output_size(1001, 333, 320) == (320, 106)
    assert output_size(333, 1001, 129) == (42, 128)  # even sides, an odd long side too


def test_ten_photo_panels_fit_the_discord_limit(photo_board):
    settings = ExportSettings()
    made = build_animatic(photo_board, settings)
    assert len(made.data) <= settings.max_bytes
    assert (made.width, made.height) == output_size(1344, 768, settings.animatic_long_side) == (1280, 732)
    assert made.lowered == ""
    with av.open(io.BytesIO(made.data)) as container:
        assert container.streams.video[0].frames == made.frames == plan_timeline(photo_board, settings).total_frames


def test_a_tight_limit_is_met_by_the_bitrate_cap(photo_board):
    # without the cap these 640-pixel photographs take about 0.9 MB; the cap holds them to the limit
    settings = ExportSettings.model_construct(**{**ExportSettings().model_dump(), "max_bytes": 500_000,
                                                 "animatic_long_side": 640})
    made = build_animatic(photo_board, settings)
    assert len(made.data) <= settings.max_bytes
    assert made.lowered == ""  # the first encode fitted: neither a lower cap nor a smaller picture was needed
    assert len(decode(made.data)) == made.frames


def test_a_file_too_large_is_encoded_again_smaller(wide_board, monkeypatch):
    # a cap far too generous, as if x264 missed its target: the planned encode overshoots a 60 kB limit
    monkeypatch.setattr(animatic, "bitrate_cap", lambda max_bytes, timeline: 50_000_000)
    noisy = _noise_board(wide_board)
    settings = ONE_SECOND.model_construct(**{**ONE_SECOND.model_dump(), "max_bytes": 150_000})
    made = build_animatic(noisy, settings)
    assert len(made.data) <= settings.max_bytes
    assert "size" in made.lowered
    assert made.width < ONE_SECOND.animatic_long_side
    with pytest.raises(ExportError, match="does not fit 20000 bytes"):
        build_animatic(noisy, settings.model_construct(**{**settings.model_dump(), "max_bytes": 20_000}))


def test_an_impossible_limit_raises(wide_board):
    settings = SMALL.model_construct(**{**SMALL.model_dump(), "max_bytes": 10_000})
    with pytest.raises(ExportError, match="cannot fit 10000 bytes"):
        build_animatic(wide_board, settings)


def test_no_libx264_raises(wide_board, monkeypatch):
    def missing(name: str, mode: str = "r"):
        raise UnknownCodecError(name)

    monkeypatch.setattr(av.codec, "Codec", missing)
    with pytest.raises(ExportError, match="libx264"):
        build_animatic(wide_board, SMALL)


def _top_level_boxes(data: bytes) -> list[bytes]:
    """The MP4's top-level box types in file order (ftyp, moov, mdat, ...)."""
    types, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:  # a 64-bit size follows the type
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        types.append(kind)
        offset += size if size else len(data)
    return types


def _span(board: ExportBoard, made: Animatic, framing: str):
    index = next(i for i, panel in enumerate(board.panels) if panel.framing == framing)
    return made.timeline.spans[index]


def _own_ends(frames: list[np.ndarray], span, fade: int) -> tuple[np.ndarray, np.ndarray]:
    """A panel's first and last frames outside the cross-fades."""
    return frames[span.first_frame + fade], frames[span.end_frame - 1 - fade]


def _zoom_at(span, local: int) -> float:
    """A close-up's zoom at its frame ``local``: the move's, from its start to its end over the panel."""
    start, end = CAMERA_MOVES["close-up"].start[0], CAMERA_MOVES["close-up"].end[0]
    return start + (end - start) * local / (span.frames - 1)


def _zoomed(frame: np.ndarray, zoom: float) -> np.ndarray:
    """``frame`` enlarged by ``zoom`` about its centre (shrunk below 1), at its own size."""
    height, width = frame.shape[:2]
    picture = Image.fromarray(frame.astype(np.uint8))
    box_w, box_h = width / zoom, height / zoom
    box = ((width - box_w) / 2, (height - box_h) / 2, (width + box_w) / 2, (height + box_h) / 2)
    return np.asarray(picture.transform((width, height), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR),
                      dtype=np.int16)


def _noise_board(board: ExportBoard) -> ExportBoard:
    """``board`` with frames of random pixels: what x264 cannot compress."""
    folder = board.folder.parent / "noise"
    if not folder.exists():
        shutil.copytree(board.folder, folder)
        rng = np.random.default_rng(0)
        for frame in folder.glob("frame_*.png"):
            Image.fromarray(rng.integers(0, 256, (board.height, board.width, 3), dtype=np.uint8)).save(frame)
    return load_export_board(folder)


@pytest.mark.parametrize("pixels", [64 * 64, 128 * 128, 512 * 512, 1024 * 1024])
def test_every_camera_window_stays_inside_the_frame_for_every_aspect_and_output_size(pixels):
    """A window a hair outside the picture (float rounding) is refused by PIL: found on a 4:3 board."""
    from engine.limits import ASPECTS, frame_size

    for aspect in ASPECTS:
        width, height = frame_size(aspect, pixels)
        for long_side in (192, 320, 1280):
            out_w, out_h = output_size(width, height, long_side)
            for move in animatic.CAMERA_MOVES.values():
                for progress in np.linspace(0, 1, 25):
                    left, top, right, bottom = move.box(float(progress), width, height, out_w / out_h)
                    assert 0 <= left < right <= width and 0 <= top < bottom <= height, (aspect, long_side, move)
