"""``python -m bot export``: a finished board's PDF shot sheet and MP4 animatic, from the CLI.

The board is named by its folder or by its job id (looked up in the bot's database). The files
are made once and kept in the board's folder, exactly as the chats' 📄 PDF and 🎞 Animatic
buttons make them (``bot.exports``); ``--out DIR`` copies them there as well. ``story --export``
makes them with the board.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
from pathlib import Path

from bot.config import AppConfig
from bot.errors import StoryError
from bot.exports import EXPORT_KINDS, BoardExports

JOB_ID_DIGITS = 18  # as bot.commands: below SQLite's 64-bit INTEGER


class ExportCliError(ValueError):
    """A board that cannot be exported as asked, with what to change."""


def add_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export", help="make a finished board's PDF shot sheet and/or MP4 animatic",
        description="Make the PDF shot sheet (--pdf) and/or the MP4 animatic (--mp4) of a finished board, named by "
        "its folder or its job id. They are kept in the board's folder (a second export re-uses them) and "
        "printed, one path a line.")
    export.add_argument("board", metavar="BOARD_DIR|JOB_ID", help="a board folder (with report.json) or a job id")
    export.add_argument("--pdf", action="store_true", help="the PDF shot sheet ([export] paper, pdf_dpi, ...)")
    export.add_argument("--mp4", action="store_true", help="the MP4 animatic ([export] animatic_* keys)")
    export.add_argument("--out", type=Path, metavar="DIR", help="copy the files here too")


def parse_kinds(value: str) -> tuple[str, ...]:
    """``story --export pdf,mp4``: the kinds, checked."""
    kinds = tuple(part.strip().lower() for part in value.split(",") if part.strip())
    wrong = [kind for kind in kinds if kind not in EXPORT_KINDS]
    if not kinds or wrong:
        raise argparse.ArgumentTypeError(f"takes {', '.join(EXPORT_KINDS)}, comma-separated; got {value!r}")
    return kinds


def run(args: argparse.Namespace, config: AppConfig) -> list[Path]:
    kinds = tuple(kind for kind, wanted in (("pdf", args.pdf), ("mp4", args.mp4)) if wanted)
    if not kinds:
        raise ExportCliError("say what to make: --pdf, --mp4 or both")

    async def export() -> list[Path]:
        folder, job_id = await _board_folder(args.board, config)
        return await _export(folder, kinds, config, job_id=job_id, out=args.out)

    return asyncio.run(export())


def export_board(folder: Path, kinds: tuple[str, ...], config: AppConfig, *, job_id: int = 0,
                 out: Path | None = None) -> list[Path]:
    """The paths of the files made (or found made) for the board in ``folder``, copied to ``out``."""
    return asyncio.run(_export(folder, kinds, config, job_id=job_id, out=out))


async def _export(folder: Path, kinds: tuple[str, ...], config: AppConfig, *, job_id: int,
                  out: Path | None) -> list[Path]:
    exports = BoardExports(config.export)
    paths = []
    for kind in kinds:
        try:
            made = await exports.get(folder, kind, job_id=job_id)
        except StoryError as exc:
            raise ExportCliError(exc.message(config.console.language)) from exc
        paths.append(_copy(made.path, out) if out is not None else made.path)
    return paths


async def _board_folder(board: str, config: AppConfig) -> tuple[Path, int]:
    path = Path(board)
    if not (board.isdecimal() and len(board) <= JOB_ID_DIGITS) or path.is_dir():
        if not path.is_dir():
            raise ExportCliError(f"{board}: no such board folder (or give a job id)")
        return path, 0
    from bot.store.store import Store

    if not config.storage.database.is_file():
        raise ExportCliError(f"job {board}: there is no bot database at {config.storage.database}")
    store = await Store.open(config.storage.database)
    try:
        job = await store.get_job(int(board))
    finally:
        await store.close()
    if job is None:
        raise ExportCliError(f"job {board}: no such job in {config.storage.database}")
    if job.status != "done" or not job.report_path:
        raise ExportCliError(f"job {board} is {job.status}, not a finished board")
    return Path(job.report_path).parent, job.id


def _copy(path: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(path, out / path.name))
