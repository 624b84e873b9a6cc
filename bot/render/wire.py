"""What travels between the bot host and a GPU worker through Redis, and how it is encoded.

Everything is msgpack: plain maps, strings, numbers and raw bytes. Nothing is pickled, so a
message from Redis can never run code on the bot or on a worker. arq's own job and result
envelopes go through ``dumps``/``loads`` too; the exceptions arq puts in them are carried as
a type name and a message, never as objects.

* request: the board to draw (story or reused plan, mode, frames, seed, and kept frames as PNG);
* progress: one ``ProgressEvent`` per message on the job's channel;
* result: every file of the finished board (frames, grid, report.json), or a failure.

A result is only as trustworthy as the worker that wrote it (or anyone else who can write to
Redis), so the bot checks it against the request before it decodes a pixel: the frames asked
for, numbered 1..n, each its own file of the engine's size, a bounded number of attempts, and
a grid within the ``[grid]`` limits (``ResultBounds``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
from PIL import Image

from bot.render.port import ResultTooLarge
from engine.board_files import REPORT_FILE, FrameResult, Storyboard, frames_from_report, plan_from_report, write_bytes
from engine.errors import Cancelled, EngineError, InvalidRequest
from engine.images import png_bytes
from engine.limits import MAX_FRAMES, MIN_FRAMES, allowed_frames
from engine.planning.base import PlanError
from engine.rendering.grid import EncodedGrid
from engine.settings import EngineSettings, GridSettings
from engine.shots import ShotList
from engine.storyboard import BoardRequest, ProgressEvent

WIRE_VERSION = 1
RENDER_FUNCTION = "render_board"
# a board's files: frame_01.png, pose_01.png, grid.jpeg, report.json; nothing with a path in it
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
# errors whose type survives the trip, so the bot treats them exactly as a local render's
_KNOWN_ERRORS: dict[str, type[Exception]] = {"InvalidRequest": InvalidRequest, "PlanError": PlanError,
                                             "Cancelled": Cancelled, "ResultTooLarge": ResultTooLarge}
# a real report.json is tens of KB; parsing a hostile 64 MB one could take gigabytes of Python objects
MAX_REPORT_BYTES = 2**20
# report.json's grid format -> the one PIL format its file may be opened as
_GRID_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


class WireError(ValueError):
    """A message from Redis that is not what this version of the bot or worker sends."""


class BadResult(WireError):
    """A worker's result that is not the board the job asked for: refused, and the job fails once."""


class RemoteError(EngineError):
    """A render failed on a GPU worker; ``error_type`` is the worker's exception type."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class RemoteCancelled(RemoteError):
    """arq reports the job as aborted (our /cancel) or cancelled."""


# -- arq envelopes -------------------------------------------------------------------------------------
def dumps(obj: Any) -> bytes:
    """arq's job serializer: msgpack, with exceptions reduced to their type and message."""
    return msgpack.packb(obj, default=_encode_special, use_bin_type=True)


# A real message holds a few hundred values (a plan, a dozen files). Bytes count against
# [arq] max_result_mb, but a Python object costs ~50 bytes more than its msgpack byte, so a
# result of millions of tiny values would take gigabytes: containers are capped in length, and
# their members counted as they are built (a cap's worth at most is allocated past the budget).
MAX_CONTAINER_LEN = 4096
MAX_VALUES = 100_000


class _ValueBudget:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend(self, count: int) -> None:
        self.left -= count + 1
        if self.left < 0:
            raise WireError(f"the message holds more than {MAX_VALUES} values")

    def on_list(self, items: list) -> list:
        self.spend(len(items))
        return items

    def on_map(self, obj: dict) -> Any:
        self.spend(2 * len(obj))
        return _decode_special(obj)


def loads(data: bytes) -> Any:
    """arq's job deserializer: msgpack only, never pickle, and never more than MAX_VALUES values."""
    budget = _ValueBudget(MAX_VALUES)
    try:
        return msgpack.unpackb(data, raw=False, object_hook=budget.on_map, list_hook=budget.on_list,
                               strict_map_key=False, max_array_len=MAX_CONTAINER_LEN, max_map_len=MAX_CONTAINER_LEN)
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise WireError(f"not a message this bot understands: {exc}") from exc


def _encode_special(obj: Any) -> Any:
    if isinstance(obj, BaseException):
        return {"__exception__": type(obj).__name__, "message": str(obj)}
    raise TypeError(f"cannot send a {type(obj).__name__} through Redis")


def _decode_special(obj: dict) -> Any:
    if "__exception__" not in obj:
        return obj
    name, message = str(obj["__exception__"]), str(obj.get("message", ""))
    if name == "CancelledError":
        return RemoteCancelled(name, message or "the render was aborted")
    return RemoteError(name, message)


# -- request ---------------------------------------------------------------------------------------------
def encode_request(request: BoardRequest) -> dict:
    return {
        "v": WIRE_VERSION,
        "story": request.story,
        "mode": request.mode,
        "frames": request.frames,
        "seed": request.seed,
        "plan": request.plan.model_dump(mode="json") if request.plan is not None else None,
        "keep": [{"meta": frame.to_json(), "png": png_bytes(frame.image)} for frame in request.keep.values()],
        "character_image": png_bytes(request.character_image) if request.character_image is not None else None,
        "lora": request.lora,
        "aspect": request.aspect,
    }


def decode_request(data: Any, folder: Path) -> BoardRequest:
    """The request a worker received; kept frames are written into ``folder`` (the board's folder)."""
    if not isinstance(data, dict) or data.get("v") != WIRE_VERSION:
        got = data.get("v") if isinstance(data, dict) else type(data).__name__
        raise InvalidRequest(f"render request version {got!r}; this worker speaks version {WIRE_VERSION}")
    try:
        plan = ShotList.model_validate(data["plan"]) if data.get("plan") is not None else None
        keep = {}
        for item in data.get("keep") or []:
            meta = item["meta"]
            _write_file(folder, meta["file"], item["png"])
            frame = FrameResult.from_json(meta, folder)
            keep[frame.index] = frame
        return BoardRequest(story=data["story"], mode=data["mode"], frames=data.get("frames"), seed=data["seed"],
                            plan=plan, keep=keep, character_image=_picture(data.get("character_image")),
                            lora=bool(data.get("lora", True)), aspect=str(data.get("aspect", "1:1")))
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise InvalidRequest(f"render request is malformed: {exc}") from exc


def _picture(png: Any) -> Image.Image | None:
    """The user's character picture: the bot checked it (bot.pictures) and sends it as PNG."""
    if png is None:
        return None
    if not isinstance(png, bytes):
        raise TypeError(f"character_image must be PNG bytes, got {type(png).__name__}")
    with Image.open(io.BytesIO(png), formats=("PNG",)) as image:
        return image.convert("RGB")


# -- progress ---------------------------------------------------------------------------------------------
def encode_progress(event: ProgressEvent) -> bytes:
    return dumps(dataclasses.asdict(event))


def decode_progress(data: bytes) -> ProgressEvent:
    fields = loads(data)
    if not isinstance(fields, dict):
        raise WireError("a progress message is not a map")
    known = {f.name for f in dataclasses.fields(ProgressEvent)}
    try:
        return ProgressEvent(**{k: v for k, v in fields.items() if k in known})
    except TypeError as exc:
        raise WireError(f"a progress message without its fields: {exc}") from exc


# -- result -------------------------------------------------------------------------------------------------
def encode_board(board: Storyboard, *, max_bytes: int) -> dict:
    """Every file of a finished board. Raises ``ResultTooLarge`` past ``max_bytes``."""
    files = {path.name: path.read_bytes() for path in sorted(board.out_dir.iterdir())
             if path.is_file() and not path.name.endswith(".tmp")}
    total = sum(len(data) for data in files.values())
    if total > max_bytes:
        raise ResultTooLarge(f"the board's files are {size_text(total)}, over the limit of {size_text(max_bytes)} "
                             "([arq] max_result_mb)")
    return {"v": WIRE_VERSION, "ok": True, "files": files}


def size_text(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 1024:.1f} KB"


@dataclasses.dataclass(frozen=True)
class ResultBounds:
    """What the board drawn for one request may hold, known on the bot host before the worker answers."""

    frames: int | None  # the frames the job asked for; None: the planner picks, at most MAX_FRAMES
    frame_size: tuple[int, int]  # [engine] width, height: what a newly drawn frame measures
    max_attempts: int  # 1 + [validation] max_retries
    kept: Mapping[int, FrameResult]  # frames sent along to be reused: they keep their own size and attempts
    grid: GridSettings

    @classmethod
    def for_request(cls, request: BoardRequest, settings: EngineSettings) -> ResultBounds:
        render = settings.render
        return cls(frames=request.frames, frame_size=(render.width, render.height),
                   max_attempts=1 + settings.validation.max_retries, kept=request.keep, grid=settings.grid)

    def size_of(self, index: int) -> tuple[int, int]:
        kept = self.kept.get(index)
        return kept.image.size if kept is not None else self.frame_size

    def attempts_of(self, index: int) -> int:
        # a kept frame may come from a board drawn when max_retries was higher
        kept = self.kept.get(index)
        return max(self.max_attempts, len(kept.attempts)) if kept is not None else self.max_attempts


def encode_failure(exc: BaseException) -> dict:
    return {"v": WIRE_VERSION, "ok": False, "error_type": type(exc).__name__, "message": str(exc)}


def decode_result(data: Any, out_dir: Path, bounds: ResultBounds) -> Storyboard:
    """Write a worker's result into ``out_dir`` and rebuild the ``Storyboard``; or raise its failure.
    Raises ``BadResult`` for a result that is not the board ``bounds`` allow."""
    if not isinstance(data, dict) or data.get("v") != WIRE_VERSION:
        raise BadResult("the worker's result is not a version-1 board")
    if not data.get("ok"):
        raise remote_failure(str(data.get("error_type", "RemoteError")), str(data.get("message", "")))
    files = data.get("files")
    if not isinstance(files, dict) or REPORT_FILE not in files:
        raise BadResult("the worker's result has no report.json")
    refused = next((name for name, content in files.items() if not _plain_file(name, content)), None)
    if refused is not None:
        raise BadResult(f"refusing a file named {refused!r} from Redis")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        write_bytes(out_dir / name, content)
    try:
        return load_board(out_dir, bounds)
    except BadResult:
        raise
    except (KeyError, TypeError, ValueError, OSError, EngineError, Image.DecompressionBombError) as exc:
        raise BadResult(f"the worker's board does not hold together: {type(exc).__name__}: {exc}") from exc


def remote_failure(error_type: str, message: str) -> Exception:
    known = _KNOWN_ERRORS.get(error_type)
    return known(message) if known is not None else RemoteError(error_type, message)


def load_board(out_dir: Path, bounds: ResultBounds) -> Storyboard:
    """A finished board from its folder: report.json, its frames and its grid. Every count, index,
    file and picture size is checked against ``bounds`` from the pictures' headers; no pixel is decoded."""
    report = _read_report(out_dir / REPORT_FILE)
    grid_info = report["grid"]
    for name in [grid_info["file"], *(frame["file"] for frame in report["frames"])]:
        if not isinstance(name, str) or not _FILE_NAME.match(name):  # report.json names files in out_dir only
            raise BadResult(f"report.json names a file {name!r} outside the board's folder")
    _check_frames(out_dir, report["frames"], bounds)
    grid = _load_grid(out_dir, grid_info, bounds.grid)
    frames = frames_from_report(report, out_dir, read_pixels=False)  # the bot stores and posts files, never pixels
    return Storyboard(plan=plan_from_report(report), frames=frames, grid=grid, report=report, out_dir=out_dir)


def _read_report(path: Path) -> dict:
    size = path.stat().st_size
    if size > MAX_REPORT_BYTES:
        raise BadResult(f"report.json is {size_text(size)}, over the limit of {size_text(MAX_REPORT_BYTES)}")
    return json.loads(path.read_text(encoding="utf-8"))


def _check_frames(out_dir: Path, frames: list, bounds: ResultBounds) -> None:
    count = len(frames)
    if bounds.frames is not None and count != bounds.frames:
        raise BadResult(f"the board has {count} frames; the job asked for {bounds.frames}")
    if not MIN_FRAMES <= count <= MAX_FRAMES:
        raise BadResult(f"the board has {count} frames; a board has {allowed_frames()}")
    indices = [frame["index"] for frame in frames]
    if indices != list(range(1, count + 1)):  # also what makes each frame's file its own
        raise BadResult(f"the board's frames are numbered {indices}, not 1..{count} in order")
    for frame in frames:
        _check_frame(out_dir, frame, bounds)


def _check_frame(out_dir: Path, frame: dict, bounds: ResultBounds) -> None:
    index, attempts = frame["index"], frame["attempts"]
    own_file = f"frame_{index:02d}.png"  # FrameResult.file_name: the name the bot stores and posts
    if frame["file"] != own_file:
        raise BadResult(f"frame {index} names the file {frame['file']!r}, not its own {own_file!r}")
    allowed = bounds.attempts_of(index)
    if not 1 <= len(attempts) <= allowed:
        raise BadResult(f"frame {index} lists {len(attempts)} attempts; at most {allowed} are made "
                        "(1 + [validation] max_retries)")
    chosen = frame.get("chosen_attempt", 0)
    if type(chosen) is not int or not 0 <= chosen < len(attempts):
        raise BadResult(f"frame {index} keeps attempt {chosen!r} of {len(attempts)}")
    size, expected = _header_size(out_dir / own_file, "PNG"), bounds.size_of(index)
    if size != expected:
        raise BadResult(f"frame {index} is {_dimensions(size)} pixels; the engine draws {_dimensions(expected)} "
                        "([engine] width, height)")


def _load_grid(out_dir: Path, info: dict, limits: GridSettings) -> EncodedGrid:
    """The grid's bytes, after its header shows it within ``[grid]``'s limits; the bot never decodes it."""
    if info["format"] not in _GRID_FORMATS:
        raise BadResult(f"the grid's format {info['format']!r} is not one of {', '.join(_GRID_FORMATS)}")
    path = out_dir / info["file"]
    width, height = size = _header_size(path, _GRID_FORMATS[info["format"]])
    if size != (info["width"], info["height"]):
        raise BadResult(f"the grid is {_dimensions(size)} pixels; report.json says "
                        f"{_dimensions((info['width'], info['height']))}")
    if width + height > limits.max_dimension_sum or max(size) > limits.max_aspect_ratio * min(size):
        raise BadResult(f"the grid is {_dimensions(size)} pixels, outside [grid] max_dimension_sum "
                        f"{limits.max_dimension_sum} or max_aspect_ratio {limits.max_aspect_ratio}")
    if (stored := path.stat().st_size) > limits.max_bytes:
        raise BadResult(f"the grid is {size_text(stored)}, over [grid] max_bytes ({size_text(limits.max_bytes)})")
    grid = EncodedGrid(data=path.read_bytes(), format=info["format"], width=width, height=height)
    if info["file"] != f"grid.{grid.extension}":  # Storyboard.grid_path: the file the bot stores and posts
        raise BadResult(f"the grid names the file {info['file']!r}, not grid.{grid.extension}")
    return grid


def _header_size(path: Path, pil_format: str) -> tuple[int, int]:
    """A picture's size from its header alone: PIL decodes pixels only on ``load()``, and raises
    ``DecompressionBombError`` here, before any pixel, for a header past its own limit."""
    with Image.open(path, formats=[pil_format]) as image:
        return image.size


def _dimensions(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _plain_file(name: Any, content: Any) -> bool:
    """A file name without a path in it, and bytes for its content."""
    return isinstance(name, str) and bool(_FILE_NAME.match(name)) and isinstance(content, bytes)


def _write_file(folder: Path, name: Any, content: Any) -> None:
    if not _plain_file(name, content):
        raise WireError(f"refusing a file named {name!r} from Redis")
    write_bytes(folder / name, content)

