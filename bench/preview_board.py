"""Preview board latency: story text -> written grid, on a CPU box with the preview renderer.

Target: a preview board (default 768x768 frames, 8 frames = config's story.default_frames)
is written in < 2 s wall time, median over --repeat runs, through the real service path.

Three ways are timed:

(a) engine      ``build_engine(EngineSettings())`` once, then
                ``engine.run(BoardRequest(story, frames=F, seed=i), out_dir)`` per run.
(b) run_story   ``bot.app.run_story(config, story, StoryOptions(frames=F, seed=i), out_dir)``
                per run: opens a fresh app each time (SQLite open + migrate, engine build),
                submits through the service, claims through the queue, renders on the
                worker's engine thread and delivers. This is what ``python -m bot story`` does.
(c) warm app    one ``open_app`` kept open; per run: ``service.submit`` + ``worker.run(burst=True)``
                until the grid is delivered (a running bot's latency, without start-up).

The target is checked on the median of (b), the slowest honest path. The per-stage
timings printed come from each run's ``report.json`` ("timings"), median across runs.

Everything is written under a ``tempfile.TemporaryDirectory``; nothing is downloaded.

    python bench/preview_board.py [--repeat 5] [--story PATH] [--frames 8]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.app import open_app, run_story  # noqa: E402
from bot.config import AppConfig, StorageSettings  # noqa: E402
from bot.chat_port import BoardDelivery, JobUpdate  # noqa: E402
from bot.service import Requester, StoryOptions, StoryRequest  # noqa: E402
from engine.build import build_engine  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402
from engine.storyboard import BoardRequest  # noqa: E402

TARGET_S = 2.0
DEFAULT_STORY = REPO.parent / "shared" / "stories" / "en_merchant.txt"
STAGES = ("plan", "prompts", "render", "validate", "grid", "report", "total")


class _Recorder:
    """A ChatGateway that keeps deliveries in memory."""

    def __init__(self) -> None:
        self.delivered: dict[int, BoardDelivery] = {}

    async def notify(self, update: JobUpdate) -> None:
        pass

    async def deliver(self, delivery: BoardDelivery) -> None:
        self.delivered[delivery.job_id] = delivery


def _config(root: Path) -> AppConfig:
    return AppConfig(storage=StorageSettings(database=root / "bot.sqlite3", outputs=root / "outputs"))


def _check_written(grid: Path) -> None:
    if not grid.is_file() or grid.stat().st_size == 0:
        raise RuntimeError(f"no grid was written at {grid}")


def _timings(report_path: Path) -> dict[str, float]:
    return json.loads(report_path.read_text(encoding="utf-8"))["timings"]


def bench_engine(story: str, frames: int | None, repeat: int, tmp: Path) -> tuple[list[float], list[dict], int]:
    engine = build_engine(EngineSettings())
    walls, stages, n_frames = [], [], 0
    for i in range(repeat):
        out = tmp / f"engine-{i}"
        t0 = time.perf_counter()
        board = engine.run(BoardRequest(story, frames=frames, seed=i), out)
        walls.append(time.perf_counter() - t0)
        _check_written(board.grid_path)
        stages.append(_timings(board.report_path))
        n_frames = len(board.frames)
    return walls, stages, n_frames


def bench_run_story(story: str, frames: int | None, repeat: int, tmp: Path) -> tuple[list[float], list[dict], int]:
    walls, stages, n_frames = [], [], 0
    for i in range(repeat):
        root = tmp / f"service-{i}"
        config = _config(root)
        t0 = time.perf_counter()
        delivery = asyncio.run(
            run_story(config, story, StoryOptions(frames=frames, seed=i), root / "board", progress=io.StringIO())
        )
        walls.append(time.perf_counter() - t0)
        _check_written(delivery.grid_path)
        stages.append(_timings(delivery.report_path))
        n_frames = len(delivery.frame_paths)
    return walls, stages, n_frames


async def _warm(story: str, frames: int | None, repeat: int, root: Path) -> tuple[list[float], list[dict], int]:
    walls, stages, n_frames = [], [], 0
    config = _config(root)
    async with open_app(config) as app:
        gateway = _Recorder()
        app.router.register("bench", gateway)
        requester = Requester(platform="bench", user_id="u", chat_id="c")
        for i in range(repeat):
            t0 = time.perf_counter()
            submitted = await app.service.submit(StoryRequest(requester, story, StoryOptions(frames=frames, seed=i)))
            await app.worker.run(burst=True)
            walls.append(time.perf_counter() - t0)
            delivery = gateway.delivered[submitted.job_id]
            _check_written(delivery.grid_path)
            stages.append(_timings(delivery.report_path))
            n_frames = len(delivery.frame_paths)
    return walls, stages, n_frames


def bench_warm(story: str, frames: int | None, repeat: int, tmp: Path) -> tuple[list[float], list[dict], int]:
    return asyncio.run(_warm(story, frames, repeat, tmp / "warm"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per path (default 5)")
    parser.add_argument("--story", type=Path, default=DEFAULT_STORY, help=f"story file (default {DEFAULT_STORY})")
    parser.add_argument(
        "--frames", type=int, default=AppConfig().story.default_frames,
        help="frames per board for every path (default: config story.default_frames = %(default)s; "
        "0 = let the planner decide in (a), config default in (b)/(c))",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    story = args.story.read_text(encoding="utf-8")
    frames = args.frames or None
    settings = EngineSettings()
    print(f"story: {args.story} ({len(story)} chars); frames requested: {frames or 'planner/config default'}; "
          f"frame size {settings.render.width}x{settings.render.height}; repeat {args.repeat}")

    results: dict[str, tuple[list[float], list[dict], int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-preview-") as tmp_name:
        tmp = Path(tmp_name)
        results["(a) engine.run"] = bench_engine(story, frames, args.repeat, tmp)
        results["(b) run_story"] = bench_run_story(story, frames, args.repeat, tmp)
        results["(c) warm app"] = bench_warm(story, frames, args.repeat, tmp)

    print()
    print(f"{'path':<16} {'frames':>6} {'median s':>9} {'max s':>7} {'min s':>7}")
    for name, (walls, _, n) in results.items():
        print(f"{name:<16} {n:>6} {statistics.median(walls):>9.3f} {max(walls):>7.3f} {min(walls):>7.3f}")

    print()
    print("per-stage timings from report.json (median s across runs)")
    print(f"{'path':<16} " + " ".join(f"{s:>8}" for s in STAGES) + f" {'untimed':>8} {'overhead':>9}")
    for name, (walls, stages, _) in results.items():
        med = {s: statistics.median(t[s] for t in stages) if all(s in t for t in stages) else None for s in STAGES}
        untimed = statistics.median(t["total"] - sum(t.get(s, 0.0) for s in STAGES[:-1]) for t in stages)
        overhead = statistics.median(walls) - med["total"]
        cells = " ".join(f"{med[s]:>8.3f}" if med[s] is not None else f"{'absent':>8}" for s in STAGES)
        print(f"{name:<16} {cells} {untimed:>8.3f} {overhead:>9.3f}")
    print("(untimed = engine 'total' minus the named stages: mostly the per-frame checkpoint writes,"
          " frame_NN.png + frame_NN.json, which no stage timer covers)")
    print("(absent = the key is missing from report.json's timings)")
    print("(overhead = median wall - median engine 'total': service, queue, SQLite, thread hop, delivery;"
          " for (b) also app start-up)")

    figure = statistics.median(results["(b) run_story"][0])
    worst = max(results["(b) run_story"][0])
    verdict = "PASS" if figure < TARGET_S else "MISS"
    print()
    print(f"RESULT preview_board: median {figure:.3f} s, max {worst:.3f} s via run_story "
          f"(target < {TARGET_S:.1f} s) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
