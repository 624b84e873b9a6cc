"""Event-loop lag while boards render on the worker's engine thread.

Target: p99 event-loop lag < 50 ms while the worker renders (chat heartbeats and
interaction acks must keep flowing; Discord drops a client whose loop stalls).

Set-up: ``open_app(config)`` with SQLite and outputs in a temp dir, the preview renderer at the
default 768x768 frames with ``render.preview_delay_s`` small (default 0.05 s per frame) so the
engine thread alternates Pillow work with "GPU" sleeps. A recording gateway is registered on
``app.router`` for platform "bench". Jobs go in through ``app.service.submit`` and are drained
by ``app.worker.run(burst=True)``, while a probe coroutine on the same loop measures

    t0 = perf_counter(); await asyncio.sleep(0.005); lag = perf_counter() - t0 - 0.005

Three phases are probed:

1. idle        the loop with nothing else to do (the probe's own noise floor);
2. worker      the real path: jobs rendered on the worker's single engine thread;
3. blocking    the same ``engine.run`` called directly ON the loop for one board: proof that
               the probe sees a blocked loop. The ratio blocking-max / worker-p99 is printed.

The RESULT line checks the worker phase's p99 over all --repeat rounds pooled.

    python bench/loop_lag.py [--repeat 3] [--jobs 3] [--delay 0.05] [--story PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.app import open_app  # noqa: E402
from bot.config import AppConfig, QueueSettings, StorageSettings  # noqa: E402
from bot.chat_port import BoardDelivery, JobUpdate  # noqa: E402
from bot.service import Requester, StoryOptions, StoryRequest  # noqa: E402
from engine.settings import RenderSettings  # noqa: E402
from engine.storyboard import BoardRequest  # noqa: E402

TARGET_MS = 50.0
PROBE_SLEEP_S = 0.005
DEFAULT_STORY = REPO.parent / "shared" / "stories" / "en_merchant.txt"


class RecordingGateway:
    """ChatGateway for platform "bench": counts notes, keeps deliveries."""

    def __init__(self) -> None:
        self.updates: list[JobUpdate] = []
        self.deliveries: list[BoardDelivery] = []

    async def notify(self, update: JobUpdate) -> None:
        self.updates.append(update)

    async def deliver(self, delivery: BoardDelivery) -> None:
        self.deliveries.append(delivery)


class Probe:
    """Measures how late ``asyncio.sleep(PROBE_SLEEP_S)`` wakes up, until stopped."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(PROBE_SLEEP_S)
            self.lags_ms.append(max(0.0, (time.perf_counter() - t0 - PROBE_SLEEP_S) * 1000))

    async def __aenter__(self) -> Probe:
        self._task = asyncio.create_task(self._loop())
        await asyncio.sleep(0)  # let the probe take its first sample before the work starts
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await self._task


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> tuple[int, float, float, float, float]:
    return len(values), percentile(values, 50), percentile(values, 99), max(values), statistics.fmean(values)


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, list[list[float]]]:
    story = args.story.read_text(encoding="utf-8")
    config = AppConfig(
        storage=StorageSettings(database=tmp / "bot.sqlite3", outputs=tmp / "outputs"),
        engine=RenderSettings(width=768, height=768, preview_delay_s=args.delay),
        queue=QueueSettings(max_queued_per_user=max(5, args.jobs)),
    )
    phases: dict[str, list[list[float]]] = {"idle": [], "worker": [], "blocking": []}
    async with open_app(config) as app:
        gateway = RecordingGateway()
        app.router.register("bench", gateway)
        requester = Requester(platform="bench", user_id="u", chat_id="c")
        settings = app.engine.settings.render
        print(f"frames {settings.width}x{settings.height}, preview_delay_s {settings.preview_delay_s}, "
              f"{args.jobs} job(s) x {config.story.default_frames} frames per round, {args.repeat} round(s); "
              f"sys.getswitchinterval() = {sys.getswitchinterval() * 1000:.1f} ms")
        seed = 0
        for round_no in range(args.repeat):
            async with Probe() as idle:
                await asyncio.sleep(0.5)
            phases["idle"].append(idle.lags_ms)

            for _ in range(args.jobs):
                await app.service.submit(StoryRequest(requester, story, StoryOptions(seed=seed)))
                seed += 1
            delivered_before = len(gateway.deliveries)
            t0 = time.perf_counter()
            async with Probe() as worker:
                processed = await app.worker.run(burst=True)
            wall = time.perf_counter() - t0
            phases["worker"].append(worker.lags_ms)
            delivered = len(gateway.deliveries) - delivered_before
            print(f"round {round_no + 1}: worker processed {processed} job(s), {delivered} delivered, "
                  f"{wall:.2f} s, {len(worker.lags_ms)} probe samples")
            if delivered != args.jobs:
                print(f"  warning: expected {args.jobs} deliveries, got {delivered}")

            async with Probe() as blocking:
                await asyncio.sleep(0.02)
                # Deliberately wrong: the engine ON the loop thread, as a contrast.
                app.engine.run(BoardRequest(story, frames=config.story.default_frames, seed=10_000 + round_no),
                               tmp / f"blocking-{round_no}")
                await asyncio.sleep(0.02)
            phases["blocking"].append(blocking.lags_ms)
        print(f"progress notes received: {len(gateway.updates)}")
    return phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of (idle, worker, blocking) (default 3)")
    parser.add_argument("--jobs", type=int, default=3, help="jobs submitted per round (default 3)")
    parser.add_argument("--delay", type=float, default=0.05, help="render.preview_delay_s, s per frame (default 0.05)")
    parser.add_argument("--story", type=Path, default=DEFAULT_STORY, help=f"story file (default {DEFAULT_STORY})")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.jobs < 1:
        parser.error("--repeat and --jobs must be >= 1")

    with tempfile.TemporaryDirectory(prefix="bench-loop-lag-") as tmp_name:
        phases = asyncio.run(bench(args, Path(tmp_name)))

    print()
    print(f"{'phase':<10} {'round':>5} {'samples':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}")
    pooled: dict[str, tuple] = {}
    for phase, rounds in phases.items():
        for i, lags in enumerate(rounds, 1):
            n, p50, p99, mx, mean = summary(lags)
            print(f"{phase:<10} {i:>5} {n:>8} {p50:>8.2f} {p99:>8.2f} {mx:>8.2f} {mean:>8.2f}")
        pooled[phase] = summary([lag for lags in rounds for lag in lags])
        n, p50, p99, mx, mean = pooled[phase]
        print(f"{phase:<10} {'all':>5} {n:>8} {p50:>8.2f} {p99:>8.2f} {mx:>8.2f} {mean:>8.2f}")

    worker_p99 = pooled["worker"][2]
    blocking_max = pooled["blocking"][3]
    ratio = blocking_max / worker_p99 if worker_p99 > 0 else math.inf
    print()
    print(f"blocking max / worker p99 = {blocking_max:.1f} ms / {worker_p99:.2f} ms = {ratio:.0f}x "
          f"(the probe does see a blocked loop)")
    verdict = "PASS" if worker_p99 < TARGET_MS else "MISS"
    print()
    print(f"RESULT loop_lag: worker p99 {worker_p99:.2f} ms, p50 {pooled['worker'][1]:.2f} ms, "
          f"max {pooled['worker'][3]:.2f} ms (target p99 < {TARGET_MS:.0f} ms) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
