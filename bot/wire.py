"""What travels between the bot host and a GPU worker through Redis, and how it is encoded.

Everything is msgpack: plain maps, strings, numbers and raw bytes. Nothing is pickled, so a
message from Redis can never run code on the bot or on a worker. arq's own job and result
envelopes go through ``dumps``/``loads`` too; the exceptions arq puts in them are carried as
a type name and a message, never as objects.

* request: the board to draw (story or reused plan, mode, frames, seed, and kept frames as PNG);
* progress: one ``ProgressEvent`` per message on the job's channel;
* result: every file of the finished board (frames, grid, report.json), or a failure.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import msgpack
from PIL import Image

from bot.engine_port import ResultTooLarge
from engine.errors import Cancelled, EngineError, InvalidRequest
from engine.grid import EncodedGrid
from engine.plan import PlanError
from engine.shots import ShotList
from engine.storyboard import (
    REPORT_FILE,
    BoardRequest,
    FrameResult,
    ProgressEvent,
    Storyboard,
    plan_from_report,
    write_bytes,
    write_json,
)

WIRE_VERSION = 1
RENDER_FUNCTION = "render_board"
# a board's files: frame_01.png, pose_01.png, grid.jpeg, report.json; nothing with a path in it
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
# errors whose type survives the trip, so the bot treats them exactly as a local render's
_KNOWN_ERRORS: dict[str, type[Exception]] = {"InvalidRequest": InvalidRequest, "PlanError": PlanError,
                                             "Cancelled": Cancelled, "ResultTooLarge": ResultTooLarge}


class WireError(ValueError):
    """A message from Redis that is not what this version of the bot or worker sends."""


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


def loads(data: bytes) -> Any:
    """arq's job deserializer: msgpack only, never pickle."""
    try:
        return msgpack.unpackb(data, raw=False, object_hook=_decode_special, strict_map_key=False)
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
        "keep": [{"meta": frame.to_json(), "png": _png(frame.image)} for frame in request.keep.values()],
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
                            plan=plan, keep=keep)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"render request is malformed: {exc}") from exc


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


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


def record_worker(board: Storyboard, worker: dict) -> None:
    """Add which worker drew the board (and on which try) to its report.json."""
    board.report["worker"] = worker
    write_json(board.report_path, board.report)


def size_text(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 1024:.1f} KB"


def encode_failure(exc: BaseException) -> dict:
    return {"v": WIRE_VERSION, "ok": False, "error_type": type(exc).__name__, "message": str(exc)}


def decode_result(data: Any, out_dir: Path) -> Storyboard:
    """Write a worker's result into ``out_dir`` and rebuild the ``Storyboard``; or raise its failure."""
    if not isinstance(data, dict) or data.get("v") != WIRE_VERSION:
        raise WireError("the worker's result is not a version-1 board")
    if not data.get("ok"):
        raise remote_failure(str(data.get("error_type", "RemoteError")), str(data.get("message", "")))
    files = data.get("files")
    if not isinstance(files, dict) or REPORT_FILE not in files:
        raise WireError("the worker's result has no report.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        _write_file(out_dir, name, content)
    try:
        return load_board(out_dir)
    except (KeyError, TypeError, ValueError, OSError, EngineError) as exc:
        raise WireError(f"the worker's board does not hold together: {type(exc).__name__}: {exc}") from exc


def remote_failure(error_type: str, message: str) -> Exception:
    known = _KNOWN_ERRORS.get(error_type)
    return known(message) if known is not None else RemoteError(error_type, message)


def load_board(out_dir: Path) -> Storyboard:
    """A finished board from its folder: report.json, its frames and its grid."""
    report = json.loads((out_dir / REPORT_FILE).read_text(encoding="utf-8"))
    grid_info = report["grid"]
    for name in [grid_info["file"], *(frame["file"] for frame in report["frames"])]:
        if not isinstance(name, str) or not _FILE_NAME.match(name):  # report.json names files in out_dir only
            raise WireError(f"report.json names a file {name!r} outside the board's folder")
    grid = EncodedGrid(data=(out_dir / grid_info["file"]).read_bytes(), format=grid_info["format"],
                       width=grid_info["width"], height=grid_info["height"])
    frames = tuple(FrameResult.from_json(frame, out_dir) for frame in report["frames"])
    return Storyboard(plan=plan_from_report(report), frames=frames, grid=grid, report=report, out_dir=out_dir)


def _write_file(folder: Path, name: Any, content: Any) -> None:
    if not isinstance(name, str) or not _FILE_NAME.match(name) or not isinstance(content, bytes):
        raise WireError(f"refusing a file named {name!r} from Redis")
    write_bytes(folder / name, content)

