"""Command line: ``python -m bot run | worker | story | plan | train-lora | pick-checkpoint | eval``.

    python -m bot run                      # the bot: chat adapters with tokens, else the console
    python -m bot worker                   # a GPU render worker for engine.backend = "arq" (Redis)
    python -m bot story "TEXT" [--out DIR] # one storyboard through the real queue and engine
    python -m bot plan "TEXT"              # the shot list as JSON (no GPU, no model)
    python -m bot train-lora --images DIR --base-model M --out DIR   # train a character LoRA
    python -m bot pick-checkpoint OUT --base-model M [--link]        # name (and use) the best checkpoint
    python -m bot eval [--boards DIR...] [--compare A.json B.json]  # score boards: CLIP-I, CLIP-T, faces

Printing is this module's job (through ``CliOutput``: masked like the log); everything below it logs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from bot.config import CONFIG_ENV, SECRET_ENV, AppConfig, ConfigError, load_config, with_overrides
from bot.errors import StoryError
from bot.ops.logs import SecretMask, log_uncaught
from bot.ops.logs import configure_logging as setup_logging
from bot.eval_cli import add_command as add_eval_command
from bot.export_cli import ExportCliError, export_board
from bot.export_cli import add_command as add_export_command
from bot.export_cli import parse_kinds as parse_export_kinds
from bot.export_cli import run as run_export
from bot.train_cli import add_commands as add_train_commands
from bot.train_cli import set_engine_lora, train_overrides
from engine.limits import ASPECTS, MODES, allowed_frames, allowed_seeds
from engine.models import ModelLoadError
from engine.planning.base import PlanError

log = logging.getLogger("bot")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="Aldar Kose storyboard bot: turns a short story into a storyboard grid.",
        epilog="Configuration: config.toml (or --config / $ALDAR_CONFIG); overrides as ALDAR__SECTION__KEY=value; "
        "secrets only from OPENAI_API_KEY, DISCORD_TOKEN, TELEGRAM_TOKEN, REDIS_URL.",
    )
    _global_args(parser, default=None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start the bot (console adapter when no chat token is set)")
    run.add_argument("--lang", choices=["en", "ru", "kk"], help="console reply language (default from config)")
    run.add_argument("--user", help="console user id (default from config; moderators are listed in config)")
    _engine_args(run)

    worker = commands.add_parser(
        "worker", help="draw boards for a bot with engine.backend = \"arq\" (run one per GPU host)",
        description="An arq worker: loads the models once, then draws boards queued on Redis by the bot, one at "
        "a time. Redis comes from REDIS_URL, else [arq] redis_url; stop with SIGTERM (the board in hand may "
        "finish within [arq] shutdown_grace_s) or Ctrl-C.")
    worker.add_argument("--name", help="this worker's name in logs, health keys and report.json (default HOST:PID)")
    worker.add_argument("--check", action="store_true",
                        help="do not work: exit 0 if a worker of this host (or --name) is live in Redis, else 1 "
                        "(for container health checks)")
    _engine_args(worker)

    story = commands.add_parser("story", help="render one storyboard and print its output folder")
    _story_text_args(story)
    story.add_argument("--mode", choices=MODES, help="render mode (default from config)")
    story.add_argument("--frames", type=int, help=f"number of frames, {allowed_frames()} (default from config)")
    story.add_argument("--seed", type=int, help=f"board seed, {allowed_seeds()} (default: random, recorded in report.json)")
    story.add_argument("--aspect", choices=ASPECTS,
                       help="the frames' shape, e.g. 16:9 draws 1344x768 frames (default [story] default_aspect)")
    story.add_argument("--out", type=Path, help="output folder (default: <outputs>/job-NNNNNN)")
    story.add_argument("--character-image", type=Path, metavar="PATH",
                       help="a picture of your own character: every frame is checked against it, and in "
                            "ref-guided mode IP-Adapter draws from it (JPEG, PNG, WebP, GIF or BMP)")
    story.add_argument("--export", type=parse_export_kinds, metavar="pdf,mp4",
                       help="also make the board's PDF shot sheet and/or MP4 animatic (as `export` does)")
    story.add_argument("--no-lora", action="store_true",
                       help="draw the character of --character-image without the character LoRA and its trigger token")
    _engine_args(story)

    plan = commands.add_parser("plan", help="print the shot list as JSON (or a table with --pretty)")
    _story_text_args(plan)
    plan.add_argument("--frames", type=int, help="exact number of shots (default: the planner decides, 6-10)")
    plan.add_argument("--seed", type=int, default=0, help="planner seed (default 0)")
    plan.add_argument("--planner", choices=["auto", "openai", "offline"], help="planner.backend (default from config)")
    plan.add_argument("--pretty", action="store_true", help="a readable table instead of JSON")
    add_train_commands(commands)
    add_export_command(commands)
    add_eval_command(commands, functools.partial(_engine_args, clip_flag="--check-clip-model"))
    for command in commands.choices.values():
        # accepted after the command too (`run --config prod.toml`); SUPPRESS keeps a value given before it
        _global_args(command, default=argparse.SUPPRESS)
    return parser


def _global_args(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument("--config", type=Path, default=default,
                        help="config file (default: $ALDAR_CONFIG, else ./config.toml, else built-in defaults)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=default,
                        help="override [logging] level")


def _engine_args(parser: argparse.ArgumentParser, *, clip_flag: str = "--clip-model") -> None:
    """``clip_flag``: eval's own --clip-model is its metric model, so there the engine's is another flag."""
    group = parser.add_argument_group("engine (each flag overrides its [engine] key in config.toml)")
    group.add_argument("--renderer", choices=["auto", "preview", "sdxl"], help="engine.renderer")
    group.add_argument("--base-model", metavar="PATH_OR_ID", help="engine.base_model: SDXL hub id or diffusers folder")
    group.add_argument("--lora", metavar="PATH", help="engine.lora: character LoRA file, folder or hub id")
    group.add_argument(clip_flag, dest="engine_clip_model", metavar="PATH_OR_ID",
                       help="engine.clip_model: CLIP for the identity check")
    group.add_argument("--steps", type=int, help="engine.steps: denoising steps")
    group.add_argument("--size", type=_size, metavar="WxH", help="engine.width and engine.height: a frame's pixel count, e.g. 1024x1024 (--aspect gives the shape)")
    group.add_argument("--draft", action="store_true", default=None, help="engine.draft: few-step draft LoRA")
    group.add_argument("--controlnet", metavar="PATH_OR_ID", help="engine.controlnet: SDXL OpenPose ControlNet")
    group.add_argument("--ip-adapter", metavar="PATH_OR_ID", help="engine.ip_adapter: IP-Adapter repo or folder")
    group.add_argument("--ip-adapter-subfolder", metavar="SUBFOLDER",
                       help="engine.ip_adapter_subfolder: the folder holding the weights file ('' = the root)")
    group.add_argument("--ip-adapter-weight", metavar="NAME", help="engine.ip_adapter_weight: weights file name")
    group.add_argument("--image-encoder", metavar="SUBFOLDER", help="engine.image_encoder: the IP-Adapter's image encoder")
    group.add_argument("--pose-images", metavar="DIR",
                       help="engine.pose_images with pose_source = detect: a picture per pose, named after it")
    group.add_argument("--pose-detector", metavar="PATH_OR_ID",
                       help="engine.pose_detector: OpenPose body weights (body_pose_model.pth)")


def _size(value: str) -> tuple[int, int]:
    width, sep, height = value.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1024x1024, got {value!r}")
    return int(width), int(height)


def engine_overrides(args: argparse.Namespace) -> dict[str, object]:
    names = {"renderer": "renderer", "base_model": "base_model", "lora": "lora", "engine_clip_model": "clip_model",
             "steps": "steps", "draft": "draft", "controlnet": "controlnet", "ip_adapter": "ip_adapter",
             "ip_adapter_subfolder": "ip_adapter_subfolder", "ip_adapter_weight": "ip_adapter_weight",
             "image_encoder": "image_encoder",
             "pose_images": "pose_images", "pose_detector": "pose_detector"}
    values: dict[str, object] = {key: getattr(args, attr) for attr, key in names.items()
                                 if getattr(args, attr, None) is not None}
    if getattr(args, "size", None):
        values["width"], values["height"] = args.size
    if "pose_images" in values:
        values["pose_source"] = "detect"
    return values


def _story_text_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="the story (or use --file)")
    parser.add_argument("--file", type=Path, help="read the story from a UTF-8 text file")


def _story_text(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    if args.file is not None:
        try:
            return args.file.read_text(encoding="utf-8")
        except OSError as exc:
            parser.error(f"cannot read --file {args.file}: {exc.strerror}")
    if args.text is None:
        parser.error("give the story as TEXT or --file PATH")
    return args.text


class CliOutput:
    """What the CLI says itself: results on stdout, errors and notes on stderr, each through the
    log's secret mask. The streams are looked up at each call (a test may swap them)."""

    def __init__(self, mask: SecretMask) -> None:
        self.mask = mask

    def result(self, message: object) -> None:
        print(self.mask(str(message)), file=sys.stdout)

    def error(self, message: object) -> None:
        print(self.mask(str(message)), file=sys.stderr)


def configure_logging(config: AppConfig, override: str | None) -> CliOutput:
    """The log, and the CLI's own output, behind one secret mask; Python's own tracebacks and
    warnings go into that log too, so no line leaves the process unmasked."""
    mask = setup_logging(override or config.logging.level, config.logging.format, config.secrets.values())
    log_uncaught()
    return CliOutput(mask)


def _output_before_config(environ: Mapping[str, str]) -> CliOutput:
    """For a config that fails to load: its secrets are still known, as they come only from these
    variables (the config refuses them in files)."""
    return CliOutput(SecretMask(environ.get(var, "").strip() for var in SECRET_ENV.values()))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = engine_overrides(args) if args.command in ("run", "story", "worker", "eval") else {}
        config = with_overrides(load_config(args.config, os.environ), "engine", overrides)
    except ConfigError as exc:
        _output_before_config(os.environ).error(f"error: {exc}")
        return 2
    cli = configure_logging(config, args.log_level)
    if args.command == "plan":
        return _cmd_plan(args, parser, config, cli)
    if args.command == "train-lora":
        return _cmd_train_lora(args, config, cli)
    if args.command == "eval":
        return _cmd_eval(args, config, cli)
    if args.command == "export":
        return _cmd_export(args, config, cli)
    if args.command == "pick-checkpoint":
        return _cmd_pick_checkpoint(args, config, args.config or Path(os.environ.get(CONFIG_ENV) or "config.toml"),
                                    cli)
    try:
        if args.command == "story":
            return _cmd_story(args, parser, config, cli)
        if args.command == "worker":
            return _cmd_worker(config, cli, args.name, check=args.check)
        return _cmd_run(args, config, cli)
    except (ModelLoadError, PlanError) as exc:  # a backend that cannot start: say which key, stop
        cli.error(f"error: {exc}")
        return 2


def _cmd_plan(args: argparse.Namespace, parser: argparse.ArgumentParser, config: AppConfig, cli: CliOutput) -> int:
    from bot.service import StoryRules
    from engine.build import build_planner

    if args.planner:
        config = with_overrides(config, "planner", {"backend": args.planner})
    rules = StoryRules(config.story)
    try:  # the same rules as `story` and the chats
        story = rules.check_text(_story_text(args, parser))
        frames = rules.check_frames(args.frames) if args.frames is not None else None
        seed = rules.check_seed(args.seed)
    except StoryError as exc:
        cli.error(f"error: {exc.message(config.console.language)}")
        return 1
    try:
        planner, choice = build_planner(config.engine_settings(), openai_api_key=config.secrets.openai_key(),
                                        banned=rules.banned)
        result = planner.make_plan(story, shots=frames, seed=seed)
    except PlanError as exc:
        cli.error(f"error: {exc}")
        return 1
    logging.getLogger("bot").info("planner=%s (%s)", choice.name, choice.reason)
    if result.fallback_reason:
        cli.error(f"note: planned offline because the {choice.name} planner failed: {result.fallback_reason}")
    if args.pretty:
        cli.result(plan_table(result.plan, result.planner))
    else:
        cli.result(json.dumps(result.plan.model_dump(mode="json"), ensure_ascii=False, indent=2))
    return 0


def plan_table(plan, planner: str) -> str:
    """A plan as a terminal table: one row per shot."""
    header = f"{plan.title}  [{plan.language}, {len(plan.shots)} shots, planner: {planner}]"
    columns = ("#", "framing", "angle", "pose", "setting", "time", "caption")
    rows = [(str(s.index), s.framing, s.camera_angle, s.pose, s.setting, s.time_of_day, s.caption)
            for s in plan.shots]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if i < 6 else 0 for i, c in enumerate(columns)]
    lines = [header, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _cmd_story(args: argparse.Namespace, parser: argparse.ArgumentParser, config: AppConfig, cli: CliOutput) -> int:
    from bot.app import run_story
    from bot.pictures import Upload
    from bot.service import StoryOptions

    options = StoryOptions(mode=args.mode, frames=args.frames, seed=args.seed, lora=False if args.no_lora else None,
                           aspect=args.aspect)
    out = args.out.resolve() if args.out else None
    picture = Upload.of_bytes(_read_picture_file(args.character_image, parser)) if args.character_image else None
    try:
        delivery = asyncio.run(run_story(config, _story_text(args, parser), options, out, picture=picture))
    except StoryError as exc:
        cli.error(f"error: {exc.message(config.console.language)}")
        return 1
    cli.result(delivery.grid_path.parent)
    if args.export:
        return _print_exports(lambda: export_board(delivery.grid_path.parent, args.export, config,
                                                   job_id=delivery.job_id), cli)
    return 0


def _cmd_export(args: argparse.Namespace, config: AppConfig, cli: CliOutput) -> int:
    return _print_exports(lambda: run_export(args, config), cli)


def _print_exports(make, cli: CliOutput) -> int:
    try:
        paths = make()
    except ExportCliError as exc:  # the board itself is untouched
        cli.error(f"error: {exc}")
        return 1
    for path in paths:
        cli.result(path)
    return 0


def _cmd_eval(args: argparse.Namespace, config: AppConfig, cli: CliOutput) -> int:
    from bot.eval_cli import EvalError, run
    from engine.evaluation.boards import BoardsError

    try:
        cli.result(run(args, config))
    except (EvalError, BoardsError, FileNotFoundError, ModelLoadError, PlanError) as exc:
        cli.error(f"error: {exc}")
        return 2
    return 0


def _read_picture_file(path: Path, parser: argparse.ArgumentParser) -> bytes:
    """The file's bytes; what they hold is checked by the service, as for a chat upload."""
    try:
        return path.read_bytes()
    except OSError as exc:
        parser.error(f"--character-image: cannot read {path}: {exc.strerror or exc}")


def _cmd_run(args: argparse.Namespace, config: AppConfig, cli: CliOutput) -> int:
    from bot.app import AdapterStartError, run_bot

    console = config.console.model_copy(
        update={k: v for k, v in (("language", args.lang), ("user_id", args.user)) if v}
    )
    try:
        asyncio.run(run_bot(config.model_copy(update={"console": console})))
    except AdapterStartError as exc:
        cli.error(f"error: {exc}")
        return 2
    return 0


def _cmd_worker(config: AppConfig, cli: CliOutput, name: str | None, *, check: bool = False) -> int:
    from bot.render.arq_worker import RenderWorker, check_health

    if check:
        healthy, detail = asyncio.run(check_health(config, name))
        (cli.result if healthy else cli.error)(f"{'ok' if healthy else 'unhealthy'}: {detail}")
        return 0 if healthy else 1
    asyncio.run(RenderWorker(config, name=name).run())
    return 0


def _cmd_train_lora(args: argparse.Namespace, config: AppConfig, cli: CliOutput) -> int:
    from engine.errors import EngineError
    from engine.training.data import DatasetError
    from engine.training.train import TrainJob, train_lora

    try:
        settings = with_overrides(config, "train", train_overrides(args)).train
    except ConfigError as exc:
        cli.error(f"error: {exc}")
        return 2
    job = TrainJob(images=args.images, base_model=args.base_model, out=args.out, settings=settings,
                   class_prompt=args.class_prompt or "", class_images=args.class_images,
                   resume_from=args.resume_from, device=args.device)
    try:
        result = train_lora(job, show_progress=not args.quiet)
    except (DatasetError, EngineError) as exc:
        cli.error(f"error: {exc}")
        return 1
    cli.result(f"trained {result.step} steps in {result.seconds:.1f}s, last loss {result.loss:.4f}")
    for checkpoint in result.checkpoints:
        cli.result(checkpoint)
    return 0


def _cmd_pick_checkpoint(args: argparse.Namespace, config: AppConfig, config_path: Path | None,
                         cli: CliOutput) -> int:
    from engine.errors import EngineError
    from engine.training.data import DatasetError
    from engine.training.pick import pick_checkpoint, table

    clip_model = args.clip_model or config.engine.clip_model
    if not clip_model:
        cli.error("error: pick-checkpoint scores with CLIP: pass --clip-model or set engine.clip_model")
        return 2
    try:
        result = pick_checkpoint(args.out, base_model=args.base_model, clip_model=clip_model, settings=config.pick,
                                 images=args.images, trigger=args.trigger, device=args.device,
                                 face_check=config.validation.face_check)
    except (DatasetError, EngineError) as exc:
        cli.error(f"error: {exc}")
        return 1
    cli.result(table(result.rows, result.best))
    cli.result(f"table: {result.csv_path}\ncontact sheet: {result.sheet_path}")
    if result.best is None:
        cli.error("error: no checkpoint can be recommended (see the notes above)")
        return 1
    best = (args.out / result.best.name).resolve()
    cli.result(f"best: {best}")
    if args.link:
        target = config_path or Path("config.toml")
        set_engine_lora(target, str(best))
        try:
            linked = load_config(target, {}).engine.lora
        except ConfigError as exc:
            cli.error(f"error: {target} no longer loads after linking: {exc}")
            return 1
        cli.result(f"linked: {target} [engine] lora = {linked!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
