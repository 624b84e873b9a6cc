"""``python -m bot eval``: character consistency and story fidelity of boards, as a table.

Two forms: render the eval stories through the real engine and score the boards, or score
boards that exist (``--boards``: ours, or another system's frames with a manifest). ``--compare
A.json B.json`` prints a paired difference per metric instead. The metrics and files are
``engine.evaluation``'s; this module reads flags, builds the models and reports.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from bot.config import AppConfig
from engine.limits import MODES, allowed_frames

log = logging.getLogger(__name__)

EVAL_STORIES = Path(__file__).resolve().parent.parent / "bench" / "eval_stories"
METRIC_CLIP_HINT = "e.g. --clip-model openai/clip-vit-large-patch14, the model ConsiStory+ scores with"


class EvalError(ValueError):
    """An eval that cannot run as asked, with what to change."""


def add_command(commands: argparse._SubParsersAction, engine_args) -> None:
    ev = commands.add_parser(
        "eval", help="score boards for character consistency and story fidelity (CLIP-I, CLIP-T, faces, copy-paste)",
        description="Render the eval stories in each mode and seed and score the boards, or score boards that "
        "exist (--boards), or compare two eval.json files (--compare). Writes eval.json, eval.md and "
        "contact_sheet.png into --out.")
    ev.add_argument("--stories", type=Path, metavar="DIR", help=f"stories to render, *.txt (default {EVAL_STORIES})")
    ev.add_argument("--modes", default="simple", metavar="M[,M]",
                    help=f"render modes, comma-separated, of {', '.join(MODES)} (default simple)")
    ev.add_argument("--seeds", type=int, default=1, metavar="N", help="board seeds 0..N-1 per story and mode (default 1)")
    ev.add_argument("--frames", type=int, metavar="N", help=f"frames per board, {allowed_frames()} (default: the planner's)")
    ev.add_argument("--boards", type=Path, nargs="+", metavar="DIR",
                    help="score these instead of rendering: board folders, folders of them, or manifests")
    ev.add_argument("--system", default="ours", help="the name of our boards' system in the table (default ours)")
    ev.add_argument("--references", type=Path, metavar="DIR",
                    help="the character's pictures, the identity reference of our boards (default: "
                         "engine.reference_images, else the board's character.png, else frame 1)")
    ev.add_argument("--clip-model", metavar="PATH_OR_ID",
                    help=f"the metric CLIP, apart from the engine's identity check ({METRIC_CLIP_HINT})")
    ev.add_argument("--no-faces", action="store_true", help="skip the dlib face metrics")
    ev.add_argument("--copy-ceiling", type=float, metavar="X", help="copy-paste above this similarity "
                    "(default validation.copy_ceiling)")
    ev.add_argument("--out", type=Path, default=Path("eval"), metavar="DIR", help="where the results go (default eval/)")
    ev.add_argument("--compare", type=Path, nargs=2, metavar=("A.json", "B.json"),
                    help="print B − A per metric, paired by story and seed, with its bootstrap interval")
    engine_args(ev)


def run(args: argparse.Namespace, config: AppConfig) -> str:
    """The eval as asked; the text to print (the table, or the comparison)."""
    from engine.evaluation.stats import format_compare, paired_deltas

    if args.compare:
        a, b = (_read_eval(path) for path in args.compare)
        return format_compare(paired_deltas(a["boards"], b["boards"]))
    clip_model = _metric_clip(args, config)  # before anything is drawn: an eval that cannot score fails first
    boards, notes = _boards(args, config)
    from engine.evaluation.outputs import markdown_table
    from engine.evaluation.run import evaluate

    data = evaluate(_scorer(args, config), boards, args.out, clip_model=clip_model, notes=notes)
    return markdown_table(data["summary"]) + f"\n\nwritten: {args.out / 'eval.json'}, eval.md, contact_sheet.png"


def _boards(args: argparse.Namespace, config: AppConfig) -> tuple[list, list[str]]:
    from engine.evaluation.boards import find_boards

    references = _references(args, config)
    if args.boards:
        return find_boards(args.boards, references=references, system=args.system), []
    from engine.build import build_engine
    from engine.evaluation.run import read_stories, render_boards

    modes = _modes(args.modes)
    if args.seeds < 1:
        raise EvalError("--seeds must be 1 or more")
    stories = read_stories(args.stories or EVAL_STORIES)
    engine = build_engine(config.engine_settings(), openai_api_key=config.secrets.openai_api_key)
    for mode in modes:
        if (off := engine.mode_off(mode)) is not None:
            raise EvalError(off.describe())
    boards = render_boards(engine, stories, modes, range(args.seeds), args.out, frames=args.frames,
                           system=args.system, references=references)
    notes = [f"renderer {engine.renderer.name}, planner {engine.planner.name}, {len(stories)} stories, "
             f"modes {', '.join(modes)}, seeds 0-{args.seeds - 1}"]
    if engine.renderer.name == "preview":
        notes.append("preview renderer: sketches, not characters; the numbers only prove the plumbing")
    return boards, notes


def _modes(value: str) -> list[str]:
    modes = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if not modes or unknown:
        raise EvalError(f"--modes takes {', '.join(MODES)}, comma-separated; got {value!r}")
    return modes


def _references(args: argparse.Namespace, config: AppConfig) -> list[Path]:
    from engine.images import pictures_in

    folder = args.references or (Path(config.engine.reference_images) if config.engine.reference_images else None)
    if folder is None:
        return []
    if not folder.is_dir():
        raise EvalError(f"{folder}: no such folder (--references or engine.reference_images)")
    pictures = pictures_in(folder)
    if not pictures:
        raise EvalError(f"no pictures in {folder} (--references or engine.reference_images)")
    return pictures


def _metric_clip(args: argparse.Namespace, config: AppConfig) -> str:
    model = args.clip_model or config.engine.clip_model
    if not model:
        raise EvalError(f"the eval needs a CLIP model for its metrics: --clip-model PATH_OR_ID ({METRIC_CLIP_HINT})")
    return model


def _scorer(args: argparse.Namespace, config: AppConfig):
    from engine.evaluation.metrics import BoardScorer
    from engine.identity.validate import ClipScorer
    from engine.models import ModelLoader
    from engine.settings import RenderSettings

    render = RenderSettings.model_validate({**config.engine.model_dump(exclude={"backend"}),
                                            "clip_model": _metric_clip(args, config)})
    model, processor = ModelLoader(render).clip()
    faces = None if args.no_faces else _faces()
    ceiling = args.copy_ceiling if args.copy_ceiling is not None else config.validation.copy_ceiling
    return BoardScorer(ClipScorer(model, processor, faces=faces), copy_ceiling=ceiling)


def _faces():
    from engine.identity.faces import FaceIdentity, FaceModelError

    try:
        return FaceIdentity()
    except FaceModelError as exc:
        log.warning("no face metrics: %s", exc)
        return None


def _read_eval(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["boards"]  # noqa: B018 - what --compare pairs
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EvalError(f"{path}: not an eval.json ({exc})") from exc
    return data
