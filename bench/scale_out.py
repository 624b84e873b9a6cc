"""Scale-out through arq: boards per minute with 1, 2 and 4 GPU worker processes, and Redis's cost per job.

Targets: throughput (boards per minute) >= 1.8x the 1-worker figure with 2 workers, >= 3.5x with 4.

Set-up (``tests.scale_harness``): one real ``redis-server`` on a free loopback port; for each worker
count N a fresh folder (SQLite database, outputs, config.toml, worker logs) and a config with
``engine.backend = "arq"``, the preview renderer at 96x96 and ``preview_delay_s`` = --frame-delay (a
sleep standing in for the GPU's time per frame), its own ``[arq] queue_name`` (so health keys of the
previous round's workers are not counted) and ``[queue] max_queued_per_user`` high enough for every
board. Per round:

1. start N ``python -m bot --config CFG worker --name gpu-K`` processes; wait until N are live
   (``bot.render.arq_link.live_workers``); not timed;
2. open the bot in this process (``bot.app.open_app``) and submit --boards boards of --frames frames
   through ``app.service.submit``, round-robin over --users users: ``[queue] max_running_per_user``
   stays at its default 1, so one user alone could never keep more than one worker busy;
3. start the bot's worker loop (``app.worker.run``) and time until every job is ``done`` in SQLite
   (``app.store.finish`` is wrapped to record when each job's finish returns); throughput =
   boards / that wall time;
4. stop the workers and the bot.

Orchestration overhead per job = (claim -> done, as the bot sees it: ``app.store.claim`` returns ->
``app.store.finish`` returns) - (the engine's own run time on the worker, ``report["timings"]["total"]``
in the job's report.json). It holds the wire encoding, Redis round trips, both sides' polling
(``[arq] poll_interval_s`` 0.05 s here) and writing the files on the bot host. Median and p90 per round.

The simulated GPU time is a sleep, so N workers overlap it even on a 2-core box; the Pillow work of
96x96 preview frames is small next to it.

Exit status 0 whatever the figures measure (without redis-server it prints "no redis-server: …; nothing
measured" and exits 0, like engine_gpu without CUDA); 2 for bad arguments; 1 when a round fails (a worker exits, --timeout); 130 on Ctrl-C (workers and redis-server are stopped first).

    python bench/scale_out.py [--workers 1,2,4] [--boards 16] [--frames 4] [--frame-delay 0.25] [--users N]
    python bench/scale_out.py --quick          # 8 boards of 2 frames, 1, 2 and 4 workers: about 10 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.app import open_app  # noqa: E402
from bot.chat_port import BoardDelivery, JobUpdate  # noqa: E402
from bot.config import ENV_PREFIX, load_config  # noqa: E402
from bot.render.arq_link import live_workers  # noqa: E402
from bot.service import Requester, StoryOptions, StoryRequest  # noqa: E402
from tests.scale_harness import REDIS_SERVER, RedisServer, WorkerProcess, scale_config, wait_until  # noqa: E402

TARGET_RATIO_2 = 1.8  # throughput with 2 workers / with 1
TARGET_RATIO_4 = 3.5  # throughput with 4 workers / with 1
NO_REDIS = "no redis-server: scale_out needs Debian's redis-server (apt-get install redis-server); nothing measured"
TARGETS = {2: TARGET_RATIO_2, 4: TARGET_RATIO_4}
STORY = ("Aldar Kose tricks a greedy merchant at the bazaar. He borrows the merchant's fine horse for a moment. "
         "He rides away across the steppe at sunset, laughing. The merchant runs after him in the dust.")
WORKER_START_TIMEOUT_S = 60.0


class CountingGateway:
    """ChatGateway for platform "bench": counts notes and deliveries, sends nothing anywhere."""

    def __init__(self) -> None:
        self.updates = 0
        self.deliveries: list[int] = []

    async def notify(self, update: JobUpdate) -> None:
        self.updates += 1

    async def deliver(self, delivery: BoardDelivery) -> None:
        self.deliveries.append(delivery.job_id)


@dataclass
class Round:
    workers: int
    boards: int
    startup_s: float = 0.0  # worker processes started -> all live (not in the wall time)
    wall_s: float = math.nan  # worker loop started -> last job done in SQLite
    overheads_ms: list[float] = field(default_factory=list)
    engine_s: list[float] = field(default_factory=list)  # report["timings"]["total"] per job
    drawn_by: dict[str, int] = field(default_factory=dict)  # worker name -> boards it drew

    @property
    def per_minute(self) -> float:
        return self.boards / self.wall_s * 60.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


async def run_round(n: int, args: argparse.Namespace, redis: RedisServer, folder: Path) -> Round:
    folder.mkdir(parents=True)
    per_user = max(5, math.ceil(args.boards / args.users))
    config_path = scale_config(folder, redis.url, frame_delay_s=args.frame_delay,
                               queue={"max_queued_per_user": per_user},
                               arq={"queue_name": f"bench-scale-{n}w"})
    result = Round(n, args.boards)
    workers = [WorkerProcess(f"gpu-{i + 1}", config_path, folder) for i in range(n)]
    try:
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        async with open_app(load_config(config_path, {})) as app:
            gateway = CountingGateway()
            app.router.register("bench", gateway)
            port = app.port

            async def live() -> bool:
                for worker in workers:
                    if worker.process.poll() is not None:
                        raise RuntimeError(f"worker {worker.name} exited with {worker.process.returncode}: "
                                           f"{worker.log_text()[-1500:]}")
                return await live_workers(port.redis, port.settings) >= n

            await wait_until(live, WORKER_START_TIMEOUT_S, f"{n} live render workers")
            result.startup_s = time.perf_counter() - started

            claimed_at: dict[int, float] = {}
            done_at: dict[int, float] = {}
            all_done = asyncio.Event()
            claim, finish = app.store.claim, app.store.finish

            async def timed_claim(*a, **kw):
                job = await claim(*a, **kw)
                if job is not None:
                    claimed_at.setdefault(job.id, time.perf_counter())
                return job

            async def timed_finish(job_id: int, *a, **kw):
                stored = await finish(job_id, *a, **kw)
                if stored:
                    done_at[job_id] = time.perf_counter()
                    if len(done_at) == args.boards:
                        all_done.set()
                return stored

            app.store.claim, app.store.finish = timed_claim, timed_finish
            users = [Requester(platform="bench", user_id=f"user-{k + 1}", chat_id=f"chat-{k + 1}")
                     for k in range(args.users)]
            job_ids = []
            for i in range(args.boards):
                request = StoryRequest(users[i % len(users)], STORY, StoryOptions(frames=args.frames, seed=i))
                job_ids.append((await app.service.submit(request)).job_id)

            stop = asyncio.Event()
            t0 = time.perf_counter()
            loop_task = asyncio.create_task(app.worker.run(stop))
            try:
                waiting = asyncio.create_task(all_done.wait())
                finished, _ = await asyncio.wait({waiting, loop_task}, timeout=args.timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                if loop_task in finished:
                    loop_task.result()  # raises what crashed it
                    raise RuntimeError("the bot's worker loop ended before every job was done")
                if not finished:
                    raise TimeoutError(f"{len(done_at)} of {args.boards} jobs done after {args.timeout:g} s "
                                       f"with {n} worker(s); worker logs in {folder}")
            finally:
                stop.set()
                app.worker.request_shutdown()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(loop_task, timeout=30)
            result.wall_s = max(done_at.values()) - t0

            for job_id in job_ids:
                job = await app.store.get_job(job_id)
                if job.status != "done":
                    raise RuntimeError(f"job {job_id} is {job.status}, not done")
                report = json.loads(Path(job.report_path).read_text(encoding="utf-8"))
                engine_s = report["timings"]["total"]
                result.engine_s.append(engine_s)
                result.overheads_ms.append((done_at[job_id] - claimed_at[job_id] - engine_s) * 1000)
                name = report.get("worker", {}).get("name", "?")
                result.drawn_by[name] = result.drawn_by.get(name, 0) + 1
    finally:
        for worker in workers:  # SIGTERM to all first, then wait for each
            if worker.process is not None and worker.process.poll() is None:
                worker.process.terminate()
        for worker in workers:
            worker.stop()
    return result


async def bench(args: argparse.Namespace, tmp: Path) -> list[Round]:
    redis = RedisServer(tmp / "redis")
    redis.start()
    rounds: list[Round] = []
    try:
        for n in args.workers:
            result = await run_round(n, args, redis, tmp / f"round-{n}w")
            rounds.append(result)
            spread = ", ".join(f"{name} {count}" for name, count in sorted(result.drawn_by.items()))
            print(f"{n} worker(s): {result.boards} boards in {result.wall_s:.2f} s "
                  f"(workers live after {result.startup_s:.1f} s, not timed); drawn by: {spread}", flush=True)
    finally:
        redis.stop()
    return rounds


def parse_workers(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected worker counts like 1,2,4, got {text!r}") from None
    if not counts or any(c < 1 or c > 32 for c in counts):
        raise argparse.ArgumentTypeError(f"worker counts must be within 1..32, got {text!r}")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=parse_workers, default=None,
                        help="worker counts, one round each (default 1,2,4); "
                        "the ratios are to the first round")
    parser.add_argument("--boards", type=int, default=None, help="boards per round (default 16; --quick 8)")
    parser.add_argument("--frames", type=int, default=None, help="frames per board, 1..12 (default 4; --quick 2)")
    parser.add_argument("--frame-delay", type=float, default=0.25,
                        help="simulated GPU seconds per frame ([engine] preview_delay_s; default 0.25)")
    parser.add_argument("--users", type=int, default=None,
                        help="users the boards are spread over, round-robin (default: 4, or the largest worker "
                        "count if higher)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="give up on a round after S seconds of rendering (default 300)")
    parser.add_argument("--quick", action="store_true", help="8 boards of 2 frames")
    args = parser.parse_args(argv)
    args.workers = args.workers or [1, 2, 4]
    args.boards = args.boards if args.boards is not None else (8 if args.quick else 16)
    args.frames = args.frames if args.frames is not None else (2 if args.quick else 4)
    args.users = args.users if args.users is not None else max(4, *args.workers)
    if args.boards < 1:
        parser.error("--boards must be >= 1")
    if not 1 <= args.frames <= 12:
        parser.error("--frames must be within 1..12")
    if not 0.0 <= args.frame_delay <= 60.0:
        parser.error("--frame-delay must be within 0..60")
    if args.users < 1:
        parser.error("--users must be >= 1")
    if math.ceil(args.boards / args.users) > 1000:
        parser.error("--boards / --users must be <= 1000 ([queue] max_queued_per_user)")
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if REDIS_SERVER is None:
        print(NO_REDIS)
        return 0
    # the bot and its workers must use the config written here: no REDIS_URL or ALDAR__ overrides
    for var in [v for v in os.environ if v.startswith(ENV_PREFIX) or v == "REDIS_URL"]:
        del os.environ[var]
    gpu_s = args.frames * args.frame_delay
    print(f"{args.boards} boards x {args.frames} frames of 96x96 per round, {args.frame_delay:g} s simulated GPU "
          f"per frame = {gpu_s:g} s per board; {args.users} users round-robin (max_running_per_user 1); "
          f"worker counts {','.join(map(str, args.workers))}; redis-server {REDIS_SERVER}; {os.cpu_count()} CPUs",
          flush=True)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scale-out-") as tmp_name:
            rounds = asyncio.run(bench(args, Path(tmp_name)))
    except KeyboardInterrupt:  # the workers and redis-server were stopped on the way out
        print("scale_out: interrupted", file=sys.stderr)
        return 130

    base = rounds[0]
    print()
    print(f"{'workers':>7} {'wall s':>8} {'boards/min':>10} {'ratio':>7} {'target':>7}  {'verdict':<12} "
          f"{'ideal/min':>9} {'engine s p50':>12} {'overhead ms p50':>15} {'p90':>7}")
    verdicts: dict[int, bool] = {}
    for r in rounds:
        ratio = r.per_minute / base.per_minute
        target = TARGETS.get(r.workers) if base.workers == 1 else None
        if target is not None:
            verdicts[r.workers] = ratio >= target
            target_text, verdict = f">= {target:g}x", "OK" if ratio >= target else "BELOW TARGET"
        else:
            target_text, verdict = "-", "-"
        ideal = r.workers * 60.0 / gpu_s if gpu_s > 0 else math.inf
        print(f"{r.workers:>7} {r.wall_s:>8.2f} {r.per_minute:>10.1f} {ratio:>6.2f}x {target_text:>7}  {verdict:<12} "
              f"{ideal:>9.1f} {statistics.median(r.engine_s):>12.3f} {statistics.median(r.overheads_ms):>15.0f} "
              f"{percentile(r.overheads_ms, 90):>7.0f}")
    print()
    print(f"simulated GPU time per board: {args.frames} frames x {args.frame_delay:g} s = {gpu_s:g} s "
          "(ideal/min = workers x 60 / that)")
    print("engine s: report['timings']['total'] on the worker; overhead: (claim -> done on the bot) - engine s")
    print(f"bench wall time {time.perf_counter() - started:.1f} s (worker start-ups included)")

    one = next((r for r in rounds if r.workers == 1), None)
    versus = "" if base.workers == 1 else f" vs {base.workers}"
    parts = [f"{r.workers} workers {r.per_minute / base.per_minute:.2f}x{versus}" for r in rounds if r is not base]
    if one is not None:
        overhead = (f"overhead per job at 1 worker p50 {statistics.median(one.overheads_ms):.0f} ms, "
                    f"p90 {percentile(one.overheads_ms, 90):.0f} ms")
    else:
        overhead = "overhead per job: no 1-worker round"
    targets = ", ".join(f">= {t:g}x at {n}" for n, t in TARGETS.items() if n in verdicts) or "none judged"
    passed = bool(verdicts) and all(verdicts.values())
    print()
    base_label = f"{base.workers} worker{'s' if base.workers > 1 else ''}"
    print(f"RESULT scale_out: {base_label} {base.per_minute:.1f} boards/min; {'; '.join(parts) or 'no other round'}; "
          f"{overhead} (targets {targets}) {'PASS' if passed else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
