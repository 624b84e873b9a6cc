"""The boards an eval scores: our own board folders, and any other system's frames by manifest.

Both become an ``EvalBoard``: its frames in order, each with the text it was drawn from and
whether the character is in it, and the reference pictures identity is measured against.

Our board folder: its report.json and frames. The reference is, in this order, the pictures
the eval is given (``references``: the configured character pictures), the user's picture the
board was drawn from (``character.png``), else frame 1. A panel without Aldar Kose
(``cast_ids`` without 0) is not scored for identity, as the identity check does not score it.
Where the board's face check ran, its record of each kept frame's face comes along, so the
eval need not find that face again (``ClipScorer.face_crops``).

Another system's frames: a manifest, JSON or CSV, beside them (README: "Scoring other
systems"). Paths in it are relative to the manifest's folder.

JSON::

    {"system": "StoryDiffusion", "mode": "default",
     "boards": [{"story_id": "en_01", "seed": 0, "references": ["refs/aldar.png"],
                 "frames": [{"order": 1, "file": "en_01/1.png", "text": "Aldar Kose at the bazaar"}]}]}

CSV, one row per frame (``references`` separated by ``;``, on any row of the board)::

    system,mode,story_id,seed,order,file,text,references
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.board_files import CHARACTER_FILE, REPORT_FILE
from engine.identity.faces import FaceRecord
from engine.shots import HERO_ID

MANIFEST_NAMES = ("manifest.json", "manifest.csv")
CSV_COLUMNS = ("system", "mode", "story_id", "seed", "order", "file", "text", "references")


class BoardsError(ValueError):
    """A board or manifest that cannot be scored, with what is wrong and where."""


@dataclass(frozen=True)
class EvalFrame:
    index: int  # 1-based, in reading order
    path: Path
    text: str  # what the frame was drawn from: the shot's description (CLIP-T)
    hero: bool = True  # the character is in it: scored for identity
    cast_ids: tuple[int, ...] = ()  # who else is in it, by cast id (supporting-cast consistency)
    face: FaceRecord | None = None  # what the board's own face check found in this very picture


@dataclass(frozen=True)
class EvalBoard:
    system: str
    mode: str
    story_id: str
    seed: int | None
    frames: tuple[EvalFrame, ...]
    references: tuple[Path, ...] = ()  # empty: frame 1 is the reference
    source: Path = Path()
    rerolls: tuple[int, ...] | None = None  # per frame, when the system reports it
    accepted: tuple[bool, ...] | None = None
    seconds: float | None = None
    supporting_cast: dict[int, str] = field(default_factory=dict)  # cast id -> name, Aldar Kose left out

    @property
    def key(self) -> tuple[str, str, str, int | None]:
        """What pairs a board with the same story and seed in another run (``--compare``)."""
        return self.system, self.mode, self.story_id, self.seed


def find_boards(paths: Iterable[Path], *, references: Sequence[Path] = (), system: str = "ours") -> list[EvalBoard]:
    """Every board under ``paths``: a board folder, a manifest (or a folder holding one), or a
    folder of board folders."""
    boards: list[EvalBoard] = []
    for path in paths:
        boards.extend(_boards_at(Path(path), references, system))
    if not boards:
        raise BoardsError(f"no boards found in {', '.join(str(p) for p in paths)} "
                          f"(a folder with {REPORT_FILE}, or a {' or '.join(MANIFEST_NAMES)})")
    return boards


def _boards_at(path: Path, references: Sequence[Path], system: str) -> list[EvalBoard]:
    if path.is_file():
        return load_manifest(path)
    if not path.is_dir():
        raise BoardsError(f"{path}: no such file or folder")
    if (path / REPORT_FILE).is_file():
        return [load_our_board(path, references=references, system=system)]
    for name in MANIFEST_NAMES:
        if (path / name).is_file():
            return load_manifest(path / name)
    return [board for child in sorted(p for p in path.iterdir() if p.is_dir())
            for board in _boards_at(child, references, system)]


def load_our_board(folder: Path, *, references: Sequence[Path] = (), system: str = "ours",
                   story_id: str | None = None) -> EvalBoard:
    """A board folder the engine wrote, read from its report.json."""
    try:
        report = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
        frames = tuple(_our_frame(i, frame, folder) for i, frame in enumerate(report["frames"], start=1))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BoardsError(f"{folder / REPORT_FILE}: not a board report ({exc})") from exc
    picture = folder / CHARACTER_FILE if report.get("character_image") else None
    return EvalBoard(
        system=system, mode=report.get("mode", "?"), story_id=story_id or report.get("eval_story") or folder.name,
        seed=report.get("seed"), frames=frames,
        references=tuple(references) or ((picture,) if picture is not None else ()), source=folder,
        rerolls=tuple(len(frame["attempts"]) - 1 for frame in report["frames"]),
        accepted=tuple(bool(frame["accepted"]) for frame in report["frames"]),
        seconds=(report.get("timings") or {}).get("total"),
        supporting_cast={m["id"]: m["name"] for m in report.get("cast") or [] if m["id"] != HERO_ID},
    )


def _our_frame(index: int, frame: dict, folder: Path) -> EvalFrame:
    shot = frame["shot"]
    cast_ids = tuple(shot.get("cast_ids") or ())
    return EvalFrame(index=index, path=folder / frame["file"], text=shot["description"],
                     hero=not cast_ids or HERO_ID in cast_ids,
                     cast_ids=tuple(i for i in cast_ids if i != HERO_ID),
                     face=FaceRecord.from_json(frame["face"]) if frame.get("face") else None)


def load_manifest(path: Path) -> list[EvalBoard]:
    """Another system's boards, from its JSON or CSV manifest."""
    try:
        if path.suffix.lower() == ".csv":
            return _boards_of_rows(_csv_rows(path), path)
        data = json.loads(path.read_text(encoding="utf-8"))
        return [_manifest_board(data, board, path) for board in data["boards"]]
    except BoardsError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BoardsError(f"{path}: not a manifest ({type(exc).__name__}: {exc}); see README, Scoring other systems") \
            from exc


def _manifest_board(data: dict, board: dict, path: Path) -> EvalBoard:
    root = path.parent
    frames = sorted(board["frames"], key=lambda f: int(f["order"]))
    orders = [int(f["order"]) for f in frames]
    if len(set(orders)) != len(orders):
        raise BoardsError(f"{path}: board {board['story_id']!r} has frame orders given twice: {orders}")
    seed = board.get("seed")
    return EvalBoard(
        system=str(board.get("system", data.get("system", "?"))), mode=str(board.get("mode", data.get("mode", "default"))),
        story_id=str(board["story_id"]), seed=int(seed) if seed not in (None, "") else None,
        frames=tuple(EvalFrame(index=i, path=_existing(root / f["file"], path), text=str(f.get("text", "")),
                               hero=bool(f.get("hero", True)))
                     for i, f in enumerate(frames, start=1)),
        references=tuple(_existing(root / r, path) for r in board.get("references") or data.get("references") or ()),
        source=path,
    )


def _csv_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("story_id", "order", "file") if c not in (reader.fieldnames or ())]
        if missing:
            raise BoardsError(f"{path}: the CSV needs the columns {', '.join(missing)} (columns: {', '.join(CSV_COLUMNS)})")
        return list(reader)


def _boards_of_rows(rows: list[dict], path: Path) -> list[EvalBoard]:
    """CSV rows grouped into boards, in the order each board first appears."""
    grouped: dict[tuple, list[dict]] = {}
    for row in rows:
        grouped.setdefault((row.get("system") or "?", row.get("mode") or "default", row["story_id"],
                            row.get("seed") or ""), []).append(row)
    boards = []
    for (system, mode, story_id, seed), members in grouped.items():
        references = sorted({ref.strip() for row in members for ref in (row.get("references") or "").split(";")
                             if ref.strip()})
        board = {"story_id": story_id, "seed": seed, "references": references, "frames": members}
        boards.append(_manifest_board({"system": system, "mode": mode}, board, path))
    return boards


def _existing(path: Path, manifest: Path) -> Path:
    if not path.is_file():
        raise BoardsError(f"{manifest}: names {path}, which is not a file")
    return path
