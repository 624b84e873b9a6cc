"""The MP4 animatic of a finished board: its panels one after another, each held as long as its text
takes to read, with a slow camera move, its caption burned in, and a short cross-fade to the next.

A director watches the animatic to feel the story's pace before anything is animated, usually on a
phone straight from the Discord or Telegram chat. So the file is what every phone plays and streams:
H.264 (libx264) in yuv420p with an even width and height, ``+faststart`` (the index before the data),
no audio track, at ``animatic_fps``. It must also fit ``max_bytes`` (Discord's attachment limit):
x264 encodes at constant quality (``CRF``) under a bitrate cap chosen from ``max_bytes`` and the
running time, so a simple board makes a small file and a detailed one is held to the limit; a file
still too large is encoded again with a lower cap, then at a smaller picture (``FALLBACKS``).

The timeline (``plan_timeline``): a panel is on screen for ``panel_seconds`` (its words at
``animatic_seconds_per_word``, between ``animatic_min_seconds`` and ``animatic_max_seconds``),
rounded to whole frames. Consecutive panels overlap by the cross-fade, so the video has
``sum(panel frames) - (panels - 1) * crossfade frames`` frames.

The camera follows the shot's framing (``CAMERA_MOVES``): a wide shot pans slowly left to right, a
close-up pushes in, a medium shot pushes in gently. Each frame is a window of the panel, moving or
shrinking linearly over the panel's whole time on screen (cross-fades included, so the move never
stops at a fade), sampled to the output with sub-pixel accuracy: a zoom's by OpenCV's bilinear warp
from the float window, a pan's by mixing the two whole-pixel windows around it in rows already scaled
to the output. The picture work is done on the Y, Cb and Cr planes the encoder takes (chroma at half
size), which is half the pixels of RGB and spares the encoder a colour conversion for every frame,
and each picture is drawn into one reused buffer. On this 2-core box that is ~2.5 ms a 720p frame;
x264 takes the rest (``bench/export.py``).

The caption is burned in as a lower third: a translucent dark band across the bottom with the
caption, and the spoken line under it in bold, white, centred, wrapped to the width, in the bundled
DejaVu Sans (it covers Cyrillic and the Kazakh letters). The band is drawn once per panel and laid
over every frame of it.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from av.codec.codec import UnknownCodecError
from PIL import Image, ImageDraw

from engine.exports.board import ExportBoard, ExportError, ExportPanel
from engine.rendering.fonts import load_font, wrap_text
from engine.settings import ExportSettings

log = logging.getLogger(__name__)

CODEC = "libx264"
PIX_FMT = "yuv420p"  # 4:2:0, 8-bit: what every phone's hardware decoder takes
# x264's speed for size: on a 720p board "superfast" saves ~15% of the time for twice the bytes (so does
# "ultrafast" with CABAC and B-frames back), and the slower presets take 1.3-2x the time for files no
# smaller on these slow, smooth moves
PRESET = "veryfast"
CRF = 23  # x264's default constant quality; the bitrate cap only bites on detailed boards
CONTAINER_OPTIONS = {"movflags": "+faststart"}  # the index first, so a phone plays while it downloads

# Room kept in max_bytes for what is not picture: the MP4 index (some bytes per frame) and x264's
# headers, plus a share of the limit, because x264 holds the cap over its buffer, not to the byte.
CONTAINER_BYTES = 8_192
CONTAINER_BYTES_PER_FRAME = 24
SIZE_MARGIN = 0.95
BUFFER_SECONDS = 1.0  # x264's rate buffer (VBV), in seconds at the cap: a file is at most cap x (duration + this)

# (picture scale, bitrate cap scale) tried in turn while the file is larger than max_bytes: the
# planned encode, then a lower cap, then smaller pictures, which need fewer bits for the same look.
FALLBACKS = ((1.0, 1.0), (1.0, 0.6), (0.75, 0.5), (0.5, 0.4))

# The caption band, in proportions of the output picture, so it reads the same at every size.
FONT_SHARE = 0.042  # the font's pixel size, of the picture's shorter side
MIN_FONT_PX = 10
LINE_SPACING = 1.25  # a text line's height, in font sizes
BAND_PADDING = 0.6  # above and below the text, in font sizes
BAND_MAX_SHARE = 1 / 3  # the band never covers more than the lower third
BAND_ALPHA = 0.6  # how dark the band is: the picture under it keeps 40% of its light
CAPTION_LINES = 3
DIALOGUE_LINES = 2
SIDE_MARGIN = 0.05  # text keeps off the picture's left and right edges by this share of the width

# Video levels (limited range), as H.264 decoders expect them.
Y_BLACK, Y_WHITE = 16, 235
C_NEUTRAL = 128
C_RANGE = 224
# FFmpeg's tags for that (its AVColorSpace and AVColorRange values; PyAV has no enum for the first):
# BT.601's matrix, which PIL's YCbCr uses, and video levels
AVCOL_SPC_SMPTE170M = 6
AVCOL_RANGE_MPEG = 1


@dataclass(frozen=True)
class CameraMove:
    """A window of the panel, from ``start`` to ``end`` over its time on screen, each as (zoom, x): the zoom
    (1 = the whole frame) and where the window sits across the room left at that zoom (0 = at the left edge,
    0.5 = centred, 1 = at the right edge). The window is always centred vertically."""

    name: str
    start: tuple[float, float]
    end: tuple[float, float]

    def box(self, progress: float, width: int, height: int, aspect: float) -> tuple[float, float, float, float]:
        """The window (left, top, right, bottom, in the frame's pixels, not rounded) at ``progress`` (0 to 1);
        ``aspect`` is the output's width over height, which the window keeps."""
        zoom = _lerp(self.start[0], self.end[0], progress)
        x = _lerp(self.start[1], self.end[1], progress)
        window_w = min(width, height * aspect) / zoom
        window_h = min(height, window_w / aspect)  # height * aspect / aspect can come back a hair over height
        left = max(0.0, (width - window_w) * x)
        top = max(0.0, (height - window_h) / 2)  # PIL refuses a box a hair outside the picture
        return left, top, min(float(width), left + window_w), min(float(height), top + window_h)


CAMERA_MOVES = {
    "wide": CameraMove("pan left to right", start=(1.12, 0.0), end=(1.12, 1.0)),
    "medium": CameraMove("gentle push-in", start=(1.0, 0.5), end=(1.07, 0.5)),
    "close-up": CameraMove("push-in", start=(1.0, 0.5), end=(1.18, 0.5)),
}
DEFAULT_MOVE = CAMERA_MOVES["medium"]  # a framing the planner may add later
MAX_ZOOM = max(max(move.start[0], move.end[0]) for move in CAMERA_MOVES.values())


@dataclass(frozen=True)
class PanelSpan:
    """One panel on the timeline: frames ``first_frame`` to ``first_frame + frames - 1`` of the video."""

    number: int
    first_frame: int
    frames: int
    move: str  # the camera move's name

    @property
    def end_frame(self) -> int:
        """The first frame after the panel's last."""
        return self.first_frame + self.frames


@dataclass(frozen=True)
class Timeline:
    """The animatic's frames, panel by panel. Each panel after the first starts ``crossfade_frames``
    before the previous one ends, so ``total_frames = sum(frames) - (panels - 1) * crossfade_frames``."""

    fps: int
    crossfade_frames: int
    spans: tuple[PanelSpan, ...]

    @property
    def total_frames(self) -> int:
        return self.spans[-1].end_frame

    @property
    def seconds(self) -> float:
        return self.total_frames / self.fps


@dataclass(frozen=True)
class Animatic:
    """The encoded MP4 and what it was made with."""

    data: bytes
    width: int
    height: int
    fps: int
    frames: int
    seconds: float
    bitrate: int  # the cap x264 was held to, in bits per second
    lowered: str  # "" when the planned encode fitted; else what was lowered to fit, e.g. "bitrate 60%"
    timeline: Timeline


def panel_seconds(panel: ExportPanel, settings: ExportSettings) -> float:
    """How long ``panel`` is on screen: time to read its caption and its spoken line.

    The words of both (split on whitespace) times ``animatic_seconds_per_word``, clamped to
    ``[animatic_min_seconds, animatic_max_seconds]``: a panel without text is still seen for the
    minimum, and a long one does not stall the story past the maximum.
    """
    words = len(panel.caption.split()) + len(panel.dialogue.split())
    seconds = words * settings.animatic_seconds_per_word
    return min(max(seconds, settings.animatic_min_seconds), settings.animatic_max_seconds)


def plan_timeline(board: ExportBoard, settings: ExportSettings) -> Timeline:
    """Each panel's frames at ``animatic_fps``: ``panel_seconds`` rounded to whole frames (at least one),
    overlapping the previous panel by the cross-fade (``animatic_crossfade_seconds`` in whole frames, at
    most half the shortest panel, so a panel never fades with two neighbours at once)."""
    fps = settings.animatic_fps
    frames = [max(1, round(panel_seconds(panel, settings) * fps)) for panel in board.panels]
    crossfade = min(round(settings.animatic_crossfade_seconds * fps), min(frames) // 2) if len(frames) > 1 else 0
    spans = []
    first = 0
    for panel, count in zip(board.panels, frames, strict=True):
        spans.append(PanelSpan(panel.number, first, count, _camera_move(panel).name))
        first += count - crossfade
    return Timeline(fps, crossfade, tuple(spans))


def output_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The video's (width, height): the frame's shape with its longer side ``long_side``, both even."""
    scale = long_side / max(width, height)
    return _even(width * scale), _even(height * scale)


def build_animatic(board: ExportBoard, settings: ExportSettings) -> Animatic:
    """The animatic of ``board``, within ``settings.max_bytes``; ``ExportError`` when libx264 is missing
    or no encode in ``FALLBACKS`` fits."""
    _require_encoder()
    timeline = plan_timeline(board, settings)
    planned_size = output_size(board.width, board.height, settings.animatic_long_side)
    planned_bitrate = bitrate_cap(settings.max_bytes, timeline)
    if planned_bitrate <= 0:
        raise ExportError(f"an animatic of {timeline.total_frames} frames cannot fit {settings.max_bytes} bytes: "
                          "the MP4 index alone takes about that")
    frames = [_load_rgb(panel.image) for panel in board.panels]
    sizes: list[int] = []
    with tempfile.TemporaryDirectory(prefix="animatic-") as folder:
        path = Path(folder) / "animatic.mp4"
        for size, bitrate, lowered in _encodings(planned_size, planned_bitrate):
            started = time.perf_counter()
            data = _encode(board, frames, timeline, size, bitrate, path)
            log.info("animatic of %s: %dx%d, %d frames (%.1f s) at %d fps, cap %d kbit/s: %d bytes in %.1f s%s",
                     board.folder.name, *size, timeline.total_frames, timeline.seconds, timeline.fps,
                     bitrate // 1000, len(data), time.perf_counter() - started, f" ({lowered})" if lowered else "")
            if len(data) <= settings.max_bytes:
                return Animatic(data=data, width=size[0], height=size[1], fps=timeline.fps,
                                frames=timeline.total_frames, seconds=timeline.seconds, bitrate=bitrate,
                                lowered=lowered, timeline=timeline)
            sizes.append(len(data))
    raise ExportError(f"the animatic does not fit {settings.max_bytes} bytes even at a lower bitrate and size "
                      f"(encodes of {', '.join(map(str, sizes))} bytes)")


def bitrate_cap(max_bytes: int, timeline: Timeline) -> int:
    """The bitrate (bits per second) that keeps a file of ``timeline`` within ``max_bytes``: what is left
    after the container's share, spread over the running time plus x264's rate buffer."""
    container = CONTAINER_BYTES + CONTAINER_BYTES_PER_FRAME * timeline.total_frames
    picture_bytes = max_bytes * SIZE_MARGIN - container
    return math.floor(picture_bytes * 8 / (timeline.seconds + BUFFER_SECONDS))


def _require_encoder() -> None:
    try:
        av.codec.Codec(CODEC, "w")
    except UnknownCodecError as exc:
        raise ExportError(f"this machine's PyAV/FFmpeg has no {CODEC} encoder, so no MP4 animatic can be made") from exc


def _camera_move(panel: ExportPanel) -> CameraMove:
    return CAMERA_MOVES.get(panel.framing, DEFAULT_MOVE)


def _encodings(planned_size: tuple[int, int], planned_bitrate: int) -> Iterator[tuple[tuple[int, int], int, str]]:
    """(size, bitrate cap, what was lowered) for each encode in ``FALLBACKS``, the planned one first."""
    for picture_scale, bitrate_scale in FALLBACKS:
        size = output_size(*planned_size, long_side=_even(max(planned_size) * picture_scale))
        notes = []
        if bitrate_scale < 1:
            notes.append(f"bitrate {bitrate_scale:.0%}")
        if size != planned_size:
            notes.append(f"size {planned_size[0]}x{planned_size[1]} to {size[0]}x{size[1]}")
        yield size, int(planned_bitrate * bitrate_scale), ", ".join(notes)


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _encode(board: ExportBoard, frames: list[Image.Image], timeline: Timeline, size: tuple[int, int],
            bitrate: int, path: Path) -> bytes:
    """The MP4 of ``timeline`` at ``size``, x264 held to ``bitrate``; written to ``path`` on the way, because
    ``+faststart`` moves the index to the front by reading the finished file back."""
    panels = [_prepare_panel(panel, frame, size) for panel, frame in zip(board.panels, frames, strict=True)]
    kbits = max(1, bitrate // 1000)
    options = {"preset": PRESET, "crf": str(CRF), "maxrate": f"{kbits}k",
               "bufsize": f"{max(1, round(kbits * BUFFER_SECONDS))}k"}
    with av.open(str(path), "w", format="mp4", options=CONTAINER_OPTIONS) as container:
        stream = container.add_stream(CODEC, rate=timeline.fps, options=options)
        stream.width, stream.height = size
        stream.pix_fmt = PIX_FMT
        # x264's frame threads (PyAV asks for slice threads): encode() hands a frame over and returns, so
        # the next frame is composed while x264 works on this one
        stream.codec_context.thread_type = "FRAME"
        # the planes are BT.601 in video levels (_video_planes); say so, or an HD player may assume BT.709
        stream.codec_context.colorspace = AVCOL_SPC_SMPTE170M
        stream.codec_context.color_range = AVCOL_RANGE_MPEG
        for index, picture in enumerate(_pictures(panels, timeline, size)):
            frame = av.VideoFrame.from_ndarray(picture, format=PIX_FMT)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path.read_bytes()


Planes = tuple[np.ndarray, np.ndarray, np.ndarray]  # Y at full size, Cb and Cr at half: uint8 rows


def _new_picture(size: tuple[int, int]) -> np.ndarray:
    """One yuv420p picture as PyAV takes it: (height * 3 / 2, width), the Y, Cb and Cr planes one after another."""
    width, height = size
    return np.empty((height * 3 // 2, width), dtype=np.uint8)


def _planes_of(picture: np.ndarray) -> Planes:
    """Views of ``picture``'s three planes, to draw into."""
    height, width = picture.shape[0] * 2 // 3, picture.shape[1]
    flat = picture.reshape(-1)
    luma, chroma = width * height, width * height // 4
    return (flat[:luma].reshape(height, width),
            flat[luma:luma + chroma].reshape(height // 2, width // 2),
            flat[luma + chroma:].reshape(height // 2, width // 2))


@dataclass(frozen=True)
class _Band:
    """The caption band, per plane: what is laid over the picture's bottom rows, and how opaque it is."""

    top: int  # the band's first row, in the Y plane (even, so it is row top // 2 of the chroma planes)
    luma: np.ndarray
    luma_opacity: np.ndarray  # float32, 0 to 1
    chroma: np.ndarray
    chroma_opacity: np.ndarray

    def lay_over(self, planes: Planes) -> None:
        luma, cb, cr = planes
        _mix_into(luma[self.top:], self.luma, self.luma_opacity)
        _mix_into(cb[self.top // 2:], self.chroma, self.chroma_opacity)
        _mix_into(cr[self.top // 2:], self.chroma, self.chroma_opacity)


def _mix_into(under: np.ndarray, over: np.ndarray, opacity: np.ndarray) -> None:
    cv2.blendLinear(under, over, 1.0 - opacity, opacity, dst=under)


@dataclass(frozen=True)
class _PreparedPanel:
    """A panel ready to be filmed: its frame as planes, its camera move, its band."""

    planes: Planes  # the panel's frame in video levels; for a pan, its window's rows at the output's scale
    frame_size: tuple[int, int]  # the frame's (width, height) the camera's window is placed in
    pan: bool  # the move keeps its zoom, so a frame is a window of ``planes`` moved sideways
    move: CameraMove
    band: _Band | None  # None when the panel has no text
    size: tuple[int, int]  # the output's

    def draw(self, progress: float, into: Planes) -> None:
        """The output picture at ``progress`` (0 to 1) through the panel's time, into ``into``: its
        window, then its band."""
        width, height = self.size
        window = self.move.box(progress, *self.frame_size, width / height)
        for source, target in zip(self.planes, into, strict=True):
            scale_x, scale_y = source.shape[1] / self.frame_size[0], source.shape[0] / self.frame_size[1]
            if self.pan:
                _slide(source, window[0] * scale_x, target)
            else:
                left, top, right, bottom = window
                _resample(source, (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y), target)
        if self.band is not None:
            self.band.lay_over(into)


def _slide(source: np.ndarray, left: float, into: np.ndarray) -> None:
    """The window of ``into``'s size, ``left`` pixels into ``source`` (a pan's planes, already at the output's
    scale): the two whole-pixel windows around it, mixed by its fraction. That is bilinear sampling at a
    scale of one, exactly, for a fraction of a resize's cost."""
    width = into.shape[1]
    left = min(left, float(source.shape[1] - width))
    whole = int(left)
    fraction = left - whole
    if fraction > 1 / 256 and whole + width < source.shape[1]:  # a shift below one level of 8 bits is none
        cv2.addWeighted(source[:, whole:whole + width], 1.0 - fraction, source[:, whole + 1:whole + 1 + width],
                        fraction, 0.0, dst=into)
    else:
        np.copyto(into, source[:, whole:whole + width])


def _resample(source: np.ndarray, box: tuple[float, float, float, float], into: np.ndarray) -> None:
    """The float ``box`` of ``source`` resized to ``into`` (a zoom): bilinear sampling by OpenCV, which takes a
    sub-pixel window (to 1/32 of a pixel) at about twice PIL's speed. It does not smooth what it shrinks,
    but a zoom never shrinks a window by more than ``MAX_ZOOM``, too little to alias."""
    left, top, right, bottom = box
    height, width = into.shape
    step_x, step_y = (right - left) / width, (bottom - top) / height
    # output pixel (u, v) samples the box at that pixel's centre, in OpenCV's pixel-centre coordinates
    to_source = np.float64([[step_x, 0, left + step_x / 2 - 0.5], [0, step_y, top + step_y / 2 - 0.5]])
    cv2.warpAffine(source, to_source, (width, height), dst=into, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                   borderMode=cv2.BORDER_REPLICATE)


def _prepare_panel(panel: ExportPanel, frame: Image.Image, size: tuple[int, int]) -> _PreparedPanel:
    """``panel`` at the output ``size``. A pan keeps its zoom, so its window's rows are scaled to the output
    once here (in high quality), and each of its frames is a window of them moved sideways."""
    move = _camera_move(panel)
    pan = move.start[0] == move.end[0]
    if pan:
        _, top, _, bottom = move.box(0.0, *frame.size, size[0] / size[1])
        scale = size[1] / (bottom - top)  # the window's height to the output's, and so its width too
        working = frame.resize((max(size[0], round(frame.width * scale)), size[1]), Image.Resampling.LANCZOS,
                               box=(0, top, frame.width, bottom))
        frame_size = frame.size  # the planes stand for the frame's whole width (and the window's rows)
    else:
        working = _working_frame(frame, size)
        frame_size = working.size
    return _PreparedPanel(planes=_video_planes(working), frame_size=frame_size, pan=pan, move=move,
                          band=_caption_band(panel, size), size=size)


def _working_frame(frame: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``frame`` shrunk (once, in high quality) to what the closest zoom shows at the output's size: every
    frame's window is then resized at most a little, which keeps bilinear sharp and each frame cheap."""
    scale = max(size[0] / frame.width, size[1] / frame.height) * MAX_ZOOM
    if scale >= 1:
        return frame
    return frame.resize((max(2, round(frame.width * scale)), max(2, round(frame.height * scale))),
                        Image.Resampling.LANCZOS)


def _video_planes(frame: Image.Image) -> Planes:
    """The RGB ``frame`` as BT.601 Y, Cb, Cr planes in video levels (Y 16-235, Cb/Cr 16-240), chroma halved."""
    luma, cb, cr = frame.convert("YCbCr").split()  # BT.601 at full range (0-255), as JPEG has it
    chroma_size = ((frame.width + 1) // 2, (frame.height + 1) // 2)
    return (np.asarray(luma.point(_LUMA_LEVELS)),
            np.asarray(cb.resize(chroma_size, Image.Resampling.BOX).point(_CHROMA_LEVELS)),
            np.asarray(cr.resize(chroma_size, Image.Resampling.BOX).point(_CHROMA_LEVELS)))


_LUMA_LEVELS = [Y_BLACK + round(v * (Y_WHITE - Y_BLACK) / 255) for v in range(256)]
_CHROMA_LEVELS = [C_NEUTRAL + round((v - C_NEUTRAL) * C_RANGE / 255) for v in range(256)]


def _caption_band(panel: ExportPanel, size: tuple[int, int]) -> _Band | None:
    """The lower third of ``panel`` at the output ``size``: its caption, then its spoken line in bold."""
    width, height = size
    font_px = max(MIN_FONT_PX, round(min(size) * FONT_SHARE))
    line_height = round(font_px * LINE_SPACING)
    padding = round(font_px * BAND_PADDING)
    room = max(0, int((height * BAND_MAX_SHARE - 2 * padding) // line_height))
    text_width = round(width * (1 - 2 * SIDE_MARGIN))
    regular, bold = load_font(font_px), load_font(font_px, bold=True)
    caption = wrap_text(panel.caption, regular, text_width, min(CAPTION_LINES, room))
    dialogue = wrap_text(panel.dialogue, bold, text_width, min(DIALOGUE_LINES, room - len(caption)))
    lines = [(line, regular) for line in caption] + [(line, bold) for line in dialogue]
    if not lines:
        return None
    band_height = min(_even(len(lines) * line_height + 2 * padding), height)
    luma = Image.new("L", (width, band_height), Y_BLACK)
    opacity = Image.new("L", (width, band_height), round(BAND_ALPHA * 255))
    for row, (line, font) in enumerate(lines):
        position = ((width - font.getlength(line)) / 2, padding + row * line_height)
        # the same glyphs on the picture (white) and on its opacity (full), so the text is solid white
        ImageDraw.Draw(luma).text(position, line, font=font, fill=Y_WHITE)
        ImageDraw.Draw(opacity).text(position, line, font=font, fill=255)
    chroma_size = (width // 2, band_height // 2)
    return _Band(top=height - band_height, luma=np.asarray(luma),
                 luma_opacity=np.asarray(opacity, dtype=np.float32) / 255,
                 chroma=np.full((chroma_size[1], chroma_size[0]), C_NEUTRAL, dtype=np.uint8),
                 chroma_opacity=np.asarray(opacity.resize(chroma_size, Image.Resampling.BOX), dtype=np.float32) / 255)


def _pictures(panels: list[_PreparedPanel], timeline: Timeline, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Every output picture in order (one buffer, drawn again for each: use it before asking for the next):
    a panel's own, or during a cross-fade the outgoing panel's mixed into the incoming one's, the incoming
    share rising by equal steps over the fade."""
    picture, outgoing, arriving = _new_picture(size), _new_picture(size), _new_picture(size)
    fade = timeline.crossfade_frames
    for index, (panel, span) in enumerate(zip(panels, timeline.spans, strict=True)):
        # the first `fade` frames of every panel but the first were made with the previous panel's fade-out
        start = fade if index > 0 else 0
        fade_out = fade if index < len(panels) - 1 else 0
        for local in range(start, span.frames - fade_out):
            panel.draw(_progress(local, span.frames), _planes_of(picture))
            yield picture
        if fade_out:
            incoming, incoming_span = panels[index + 1], timeline.spans[index + 1]
            for step in range(fade):
                panel.draw(_progress(span.frames - fade + step, span.frames), _planes_of(outgoing))
                incoming.draw(_progress(step, incoming_span.frames), _planes_of(arriving))
                share = (step + 1) / (fade + 1)
                cv2.addWeighted(outgoing, 1.0 - share, arriving, share, 0.0, dst=picture)
                yield picture


def _progress(local: int, frames: int) -> float:
    return local / (frames - 1) if frames > 1 else 0.0


def _lerp(start: float, end: float, progress: float) -> float:
    return start + (end - start) * progress


def _even(value: float) -> int:
    """``value`` rounded to an even whole number, at least 2 (yuv420p halves both sides for its chroma)."""
    return max(2, round(value / 2) * 2)
