"""SDXL engine on a GPU host: seconds per board with each CUDA performance setting on and off.

Target: with every setting on ("all on"), a board takes no longer than with every setting off
("baseline"), and every configuration builds and renders.

Each configuration is built the way the bot builds it, ``build_engine(EngineSettings(render=
RenderSettings(renderer="sdxl", ..., <overrides>)))``, so the weights go through
``engine.models.ModelLoader`` and the settings through its ``_apply_performance``. The previous
configuration's engine is deleted before the next is built (``del`` + ``gc.collect()`` +
``torch._dynamo.reset()`` + ``torch.cuda.empty_cache()``); the table shows what it left allocated.

Configurations (--dry-run prints them with the values they get):

    baseline            sdpa, channels_last, fuse_qkv, compile_unet all off
    +sdpa               baseline + engine.sdpa
    +channels_last      baseline + engine.channels_last
    +sdpa +fuse_qkv     baseline + engine.sdpa + engine.fuse_qkv (the fused processor is SDPA)
    all on              sdpa + channels_last + fuse_qkv
    all on + compile    all on + engine.compile_unet (torch.compile, mode max-autotune)
    ref-guided          all on, ref-guided boards (ControlNet + IP-Adapter)
    ref-guided-compile  all on + compile_unet, ref-guided boards
    draft               all on + engine.draft with --draft-lora (only when --draft-lora is given)

Per configuration: build_engine once (the compile configuration compiles and warms up here),
--warmup untimed boards (they absorb torch.compile's recompiles for the batch shapes the
warm-up render did not see: frame 1 alone, the last partial batch), then --repeat timed boards
of --frames frames. Reported: seconds per board (median), and of it the renders and the identity
checks (CLIP and dlib run on a thread beside the next batch's render, so a board costs the renders
plus only the check time the render thread waited for), seconds per drawn frame, it/s of the
denoising loop at the batch size used (timed from each batch's start to its last step, with a
CUDA sync at every step), peak VRAM of the timed boards (``torch.cuda.max_memory_allocated`` and
``max_memory_reserved``,
reset after the warm-up) and of the build, and the UNet attention processor really in use.

Validation re-rolls are off by default (--max-retries 0), so every configuration draws the
same number of frames; --max-retries 2 measures boards as the bot runs them.

Without CUDA it prints "no CUDA: engine_gpu needs a GPU host; nothing measured" and exits 0.
Weights come from a local path or the Hugging Face cache (set HF_HUB_OFFLINE=1 on a host
without network).

    python bench/engine_gpu.py [--dry-run] [--repeat 2] [--warmup 1] [--steps 30] [--size 1024]
        [--frames 8] [--batch-size 4] [--base-model ID|PATH] [--lora PATH] [--vae ID|PATH]
        [--clip-model ID|PATH|""] [--draft-lora ID|PATH] [--configs baseline,all-on,...]
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.settings import EngineSettings, RenderSettings, ValidateSettings  # noqa: E402

DEFAULT_STORY = REPO.parent / "shared" / "stories" / "en_merchant.txt"
FALLBACK_STORY = (
    "Aldar Kose rides into the bazaar at dawn. A greedy merchant guards his silk. Aldar Kose tells him the "
    "sky is about to fall and sells him a bag to catch it. The merchant waits with the bag all day. "
    "Aldar Kose rides away on the merchant's horse, laughing, as the sun sets over the steppe."
)
NO_CUDA = "no CUDA: engine_gpu needs a GPU host; nothing measured"
PERF_FLAGS = ("sdpa", "channels_last", "fuse_qkv", "compile_unet")
GIB = 1024**3


@dataclass(frozen=True)
class Config:
    key: str  # for --configs
    name: str  # in the table
    overrides: dict[str, Any]
    mode: str = "simple"  # the boards' render mode


def config_matrix(args: argparse.Namespace) -> list[Config]:
    off = {flag: False for flag in PERF_FLAGS}
    all_on = {**off, "sdpa": True, "channels_last": True, "fuse_qkv": True}
    matrix = [
        Config("baseline", "baseline", dict(off)),
        Config("sdpa", "+sdpa", {**off, "sdpa": True}),
        Config("channels_last", "+channels_last", {**off, "channels_last": True}),
        # diffusers' fused processor is itself SDPA: fusing without SDPA is not a configuration that exists
        Config("fuse_qkv", "+sdpa +fuse_qkv", {**off, "sdpa": True, "fuse_qkv": True}),
        Config("all-on", "all on", dict(all_on)),
        Config("compile", "all on + compile_unet", {**all_on, "compile_unet": True}),
        # frame 1 simple, frames 2+ with IP-Adapter + ControlNet-OpenPose (engine.controlnet / engine.ip_adapter)
        Config("ref-guided", "all on, ref-guided mode", {**all_on, "ref_guided": True}, mode="ref-guided"),
        Config("ref-guided-compile", "all on + compile_unet, ref-guided mode",
               {**all_on, "compile_unet": True, "ref_guided": True}, mode="ref-guided"),
    ]
    if args.draft_lora:
        draft = {**all_on, "draft": True, "draft_lora": args.draft_lora, "draft_steps": args.draft_steps}
        if args.draft_lora_weight_name is not None:
            draft["draft_lora_weight_name"] = args.draft_lora_weight_name
        matrix.append(Config("draft", "all on + draft", draft))
    if args.configs:
        wanted = [key.strip() for key in args.configs.split(",") if key.strip()]
        known = {c.key for c in matrix}
        unknown = [key for key in wanted if key not in known]
        if unknown:
            raise SystemExit(f"--configs: unknown {', '.join(unknown)}; known: {', '.join(c.key for c in matrix)}")
        matrix = [c for c in matrix if c.key in wanted]
    return matrix


def engine_settings(args: argparse.Namespace, config: Config) -> EngineSettings:
    render = dict(
        renderer="sdxl",
        base_model=args.base_model,
        vae=args.vae,
        lora=args.lora,
        lora_weight_name=args.lora_weight_name,
        clip_model=args.clip_model,
        steps=args.steps,
        width=args.size,
        height=args.size,
        batch_size=args.batch_size,
        # as the bot runs: ref-guided's ControlNet + IP-Adapter load too where their weights resolve
        # (forcing it off once hid that from_pipe turned every module fp32)
        ref_guided="auto",
    )
    render.update(config.overrides)
    return EngineSettings(render=RenderSettings(**render), validation=ValidateSettings(max_retries=args.max_retries))


def print_matrix(args: argparse.Namespace, matrix: list[Config]) -> None:
    print(f"base_model={args.base_model!r} lora={args.lora or 'none'!r} vae={args.vae or 'the base one'!r} "
          f"clip_model={args.clip_model or 'none (no identity check)'!r}")
    print(f"{args.frames} frames per board, {args.size}x{args.size}, batch_size {args.batch_size}, "
          f"max_retries {args.max_retries}; {args.warmup} warm-up + {args.repeat} timed boards per configuration")
    print()
    print("| key | configuration | sdpa | channels_last | fuse_qkv | compile_unet | draft | steps | guidance |")
    print("|---|---|---|---|---|---|---|---|---|")
    for config in matrix:
        r = engine_settings(args, config).render
        steps = r.draft_steps if r.draft else r.steps
        guidance = r.draft_guidance if r.draft else r.guidance
        flags = " | ".join("on" if getattr(r, flag) else "off" for flag in (*PERF_FLAGS, "draft"))
        print(f"| {config.key} | {config.name} | {flags} | {steps} | {guidance:g} |")
    if not args.draft_lora:
        print("(draft: not in the matrix; give --draft-lora, e.g. ByteDance/SDXL-Lightning)")


@dataclass
class Result:
    config: Config
    error: str = ""
    build_s: float = 0.0
    first_board_s: float = 0.0
    boards: list[float] = field(default_factory=list)
    render_s: list[float] = field(default_factory=list)
    check_s: list[float] = field(default_factory=list)  # CLIP + dlib, on the check thread beside the renders
    waited_s: list[float] = field(default_factory=list)  # of which the render thread waited for
    renders: list[int] = field(default_factory=list)
    steps: int = 0
    denoise_steps: int = 0
    denoise_s: float = 0.0
    peak_build_gib: float = 0.0
    peak_boards_gib: float = 0.0
    reserved_boards_gib: float = 0.0  # what the caching allocator held: what other processes could not use
    left_gib: float = 0.0
    attention: str = ""
    applied: dict = field(default_factory=dict)

    @property
    def board_s(self) -> float:
        return statistics.median(self.boards)

    @property
    def frame_s(self) -> float:
        return sum(self.render_s) / sum(self.renders)

    @property
    def its(self) -> float:
        return self.denoise_steps / self.denoise_s if self.denoise_s else float("nan")


class _StepClock:
    """Times the denoising loop from the progress events: a batch starts at its "rendering"
    event and ends at its last "step" event; each step event syncs the device first."""

    def __init__(self, sync) -> None:
        self.sync = sync
        self.steps = 0
        self.seconds = 0.0
        self._batch_start: float | None = None
        self._last_step: float | None = None

    def __call__(self, event) -> None:
        if event.stage == "rendering":
            self._close()
            self._batch_start = time.perf_counter()
        elif event.stage == "step":
            self.sync()
            self._last_step = time.perf_counter()
            self.steps += 1
        elif event.stage in ("validating", "done"):
            self._close()

    def _close(self) -> None:
        if self._batch_start is not None and self._last_step is not None and self._last_step > self._batch_start:
            self.seconds += self._last_step - self._batch_start
        self._batch_start = self._last_step = None


def attention_processors(pipe: Any) -> str:
    names = sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})
    return "+".join(names)


def measure(args: argparse.Namespace, config: Config, story: str, out: Path, torch: Any) -> Result:
    """Build one configuration, warm it up, time --repeat boards; everything it built is garbage on return."""
    from engine.build import build_engine
    from engine.storyboard import BoardRequest

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    result = Result(config)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    engine = build_engine(engine_settings(args, config))
    sync()
    result.build_s = time.perf_counter() - t0
    if engine.renderer.name != "sdxl" or engine.models is None:
        raise RuntimeError(f"expected the SDXL renderer, got {engine.renderer.name}: {engine.reasons}")
    result.applied = engine.models.report()["applied"]
    result.attention = attention_processors(engine.renderer.pipe)
    result.steps = engine.renderer.steps
    if cuda:
        result.peak_build_gib = torch.cuda.max_memory_allocated() / GIB

    for i in range(args.warmup):
        t0 = time.perf_counter()
        engine.run(BoardRequest(story, mode=config.mode, frames=args.frames, seed=1000 + i),
                   out / f"{config.key}-warmup-{i}")
        sync()
        if i == 0:
            result.first_board_s = time.perf_counter() - t0

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    clock = _StepClock(sync)
    for i in range(args.repeat):
        t0 = time.perf_counter()
        board = engine.run(BoardRequest(story, mode=config.mode, frames=args.frames, seed=i), out / f"{config.key}-{i}",
                           on_progress=clock)
        sync()
        result.boards.append(time.perf_counter() - t0)
        result.render_s.append(board.report["timings"]["render"])
        result.check_s.append(board.report["timings"]["validate"])
        result.waited_s.append(board.report["timings"]["validate_wait"])
        result.renders.append(sum(len(f["attempts"]) for f in board.report["frames"]))
        if board.report["timings"]["model_loads"]:
            raise RuntimeError(f"a timed board loaded {board.report['timings']['model_loads']} models")
    result.denoise_steps, result.denoise_s = clock.steps, clock.seconds
    if cuda:
        result.peak_boards_gib = torch.cuda.max_memory_allocated() / GIB
        result.reserved_boards_gib = torch.cuda.max_memory_reserved() / GIB
    return result


def free_memory(torch: Any) -> float:
    """Drop what the last configuration left behind; GiB still allocated afterwards."""
    gc.collect()
    torch._dynamo.reset()  # compiled graphs hold on to the UNet they were traced from
    gc.collect()
    if not torch.cuda.is_available():
        return 0.0
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated() / GIB


def print_row(r: Result) -> None:
    if r.error:
        print(f"| {r.config.name} | FAILED: {r.error} |" + " |" * 15, flush=True)
        return
    boards = ", ".join(f"{b:.2f}" for b in r.boards)
    print(f"| {r.config.name} | {r.board_s:.2f} | {boards} | {statistics.median(r.render_s):.2f} | "
          f"{statistics.median(r.check_s):.2f} | {statistics.median(r.waited_s):.2f} | {r.frame_s:.3f} | {r.its:.2f} | {r.steps} | "
          f"{statistics.median(r.renders)} | {r.peak_boards_gib:.2f} | {r.reserved_boards_gib:.2f} | {r.peak_build_gib:.2f} | "
          f"{r.build_s:.1f} | {r.first_board_s:.2f} | {r.left_gib:.2f} | {r.attention} |", flush=True)


TABLE_HEAD = (
    "| configuration | s/board (median) | boards s | render s/board | checks s/board | waited on checks s/board "
    "| s/frame | it/s | steps | frames drawn | peak VRAM GiB (boards) "
    "| peak reserved GiB (boards) | peak VRAM GiB (build) | build s | first board s | GiB left after free "
    "| UNet attention |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = RenderSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the configuration matrix and exit")
    parser.add_argument("--base-model", default=defaults.base_model, help="SDXL base: hub id or folder (default %(default)s)")
    parser.add_argument("--lora", default="", help="character LoRA: .safetensors file, folder or hub id (default none)")
    parser.add_argument("--lora-weight-name", default="", help="weights file inside a LoRA folder or repo")
    parser.add_argument("--vae", default="", help="VAE override, e.g. madebyollin/sdxl-vae-fp16-fix (default: the base's)")
    parser.add_argument("--clip-model", default=defaults.clip_model,
                        help="CLIP for the identity check; '' skips validation (default %(default)s)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="denoising steps (default %(default)s)")
    parser.add_argument("--size", type=int, default=defaults.width, help="frame width = height (default %(default)s)")
    parser.add_argument("--frames", type=int, default=8, help="frames per board (default 8)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="frames per pipeline call (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=2, help="timed boards per configuration (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed boards per configuration first (default 1)")
    parser.add_argument("--max-retries", type=int, default=0,
                        help="validation re-rolls (default 0: same work in every configuration; the bot uses 2)")
    parser.add_argument("--draft-lora", default="", help="distilled few-step LoRA; adds the draft configuration")
    parser.add_argument("--draft-lora-weight-name", default=None,
                        help=f"its weights file (default {defaults.draft_lora_weight_name})")
    parser.add_argument("--draft-steps", type=int, default=defaults.draft_steps, help="draft steps (default %(default)s)")
    parser.add_argument("--configs", default="", help="comma-separated keys to run (default all; see --dry-run)")
    parser.add_argument("--story", type=Path, default=None, help=f"story file (default {DEFAULT_STORY} or a built-in story)")
    parser.add_argument("--verbose", action="store_true", help="keep library warnings and progress bars")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be >= 1 and --warmup >= 0")
    if not 1 <= args.frames <= 12:
        parser.error("--frames must be within 1..12")
    try:
        for config in config_matrix(args):
            engine_settings(args, config)
    except ValueError as exc:  # pydantic: a value outside the [engine] ranges
        parser.error(str(exc).splitlines()[0] + ": " + " ".join(str(exc).splitlines()[1:3]))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    matrix = config_matrix(args)
    if args.dry_run:
        print_matrix(args, matrix)
        return 0
    try:
        import torch
    except ImportError:
        print(NO_CUDA + " (torch is not installed)")
        return 0
    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    _run_matrix(args, matrix, torch)
    return 0


def _run_matrix(args: argparse.Namespace, matrix: list[Config], torch: Any) -> list[Result]:
    if not args.verbose:
        import diffusers
        import transformers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        logging.getLogger("transformers").setLevel(logging.ERROR)
    story_path = args.story or (DEFAULT_STORY if DEFAULT_STORY.is_file() else None)
    story = story_path.read_text(encoding="utf-8") if story_path else FALLBACK_STORY
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "cpu (not a GPU figure)"
    total_gib = torch.cuda.get_device_properties(0).total_memory / GIB if cuda else 0.0
    print(f"device: {device}, {total_gib:.0f} GiB; torch {torch.__version__}; story: {story_path or 'built-in'}")
    print_matrix(args, matrix)
    print()
    print(TABLE_HEAD, flush=True)

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-engine-gpu-") as tmp_name:
        for config in matrix:
            try:
                result = measure(args, config, story, Path(tmp_name), torch)
            except Exception as exc:  # one configuration failing must not hide the others
                result = Result(config, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
                logging.getLogger(__name__).debug("configuration %s failed", config.name, exc_info=True)
                del exc
            result.left_gib = free_memory(torch)
            results.append(result)
            print_row(result)

    print()
    print("## engine_gpu results")
    print()
    print(TABLE_HEAD)
    for result in results:
        print_row(result)
    print()
    for result in results:
        if not result.error:
            print(f"- {result.config.name}: applied {result.applied}")
    print("- s/frame = render stage / frames drawn; it/s = denoising steps per second at the batch size used "
          "(frame 1 alone, then batches of --batch-size)")
    print("- first board s includes torch.compile's recompiles for batch shapes the build's warm-up did not cover")

    by_key = {r.config.key: r for r in results if not r.error}
    failed = [r.config.name for r in results if r.error]
    if "baseline" in by_key and "all-on" in by_key:
        base, on = by_key["baseline"], by_key["all-on"]
        speedup = base.board_s / on.board_s
        verdict = "PASS" if not failed and on.board_s <= base.board_s else "MISS"
        compiled = by_key.get("compile")
        extra = f", all on + compile {compiled.board_s:.2f} s ({base.board_s / compiled.board_s:.2f}x)" if compiled else ""
        print()
        print(f"RESULT engine_gpu: all on {on.board_s:.2f} s/board vs baseline {base.board_s:.2f} s/board "
              f"({speedup:.2f}x){extra}; peak VRAM all on {on.peak_boards_gib:.1f} GiB; "
              f"failed: {', '.join(failed) or 'none'} (target: all on <= baseline, none failed) {verdict}")
    else:
        print()
        print(f"RESULT engine_gpu: baseline and all-on not both measured; failed: {', '.join(failed) or 'none'} "
              f"(target: all on <= baseline, none failed) MISS")
    return results


if __name__ == "__main__":
    sys.exit(main())
