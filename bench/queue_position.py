"""How long `/status` takes to answer with a long queue: queue positions in SQL, against the old replay.

Target: `/status` (``StoryService.status``, queue position included) answers in < 5 ms with
100k jobs queued.

Set-up: a real SQLite file in a temp dir, filled with N queued jobs from N/5 users (the
default per-user cap), half of them served before, so both branches of the position query
run. The user asking holds the last job in the round-robin order, the slowest to place.
For each N two figures, medians in one process (--repeat calls, and a fifth as many replays):

* ``status``: the whole ``/status`` call through the service (user upsert, latest job, its
  position in SQL), what a user waits for;
* ``replay``: the old way, every queued row loaded and the round robin replayed in Python
  (``tests/round_robin.py``, kept as the tests' oracle), for the before/after ratio.

    python bench/queue_position.py [--sizes 1000,10000,100000] [--repeat 50]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.config import AppConfig, StorageSettings  # noqa: E402
from bot.service import Requester, StoryService  # noqa: E402
from bot.store.store import Store  # noqa: E402
from tests.round_robin import round_robin_order  # noqa: E402

TARGET_MS = 5.0
JOBS_PER_USER = 5


def fill(path: Path, jobs: int) -> None:
    """N queued jobs, JOBS_PER_USER per user, written straight to SQLite (the triggers keep the counts)."""
    users = max(1, jobs // JOBS_PER_USER)
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO users (id, platform, platform_user_id, first_seen, last_seen, last_claimed_at)"
            " VALUES (?, 'bench', ?, 0, 0, ?)",
            [(u + 1, str(u + 1), float(u) if u % 2 else None) for u in range(users)])
        conn.executemany(
            "INSERT INTO jobs (user_id, platform, chat_id, kind, story, mode, frames, seed, created_at)"
            " VALUES (?, 'bench', 'c', 'story', 'Aldar Kose rides', 'simple', 8, 1, 0)",
            [(j % users + 1,) for j in range(jobs)])


def median_ms(timings: list[float]) -> float:
    return statistics.median(timings) * 1000


async def measure(jobs: int, repeat: int, root: Path) -> tuple[float, float]:
    config = AppConfig(storage=StorageSettings(database=root / f"q{jobs}.sqlite3", outputs=root / "out"))
    await (await Store.open(config.storage.database)).close()  # migrate, then fill with plain sqlite3
    fill(config.storage.database, jobs)
    store = await Store.open(config.storage.database)
    try:
        service = StoryService(store, config)
        order = round_robin_order(await store.queued_entries())
        last = await store.get_job(order[-1])
        owner = await store.user_by_id(last.user_id)
        asker = Requester(platform="bench", user_id=owner.platform_user_id, chat_id="c")
        latest = await store.latest_job(owner.id)
        expected = order.index(latest.id) + 1
        # one block each: a replay reads every row and would evict the index pages /status reads
        status, replay = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            view = await service.status(asker)
            status.append(time.perf_counter() - started)
            if view.position != expected:
                raise SystemExit(f"SQL position {view.position} != replayed {expected} at {jobs} jobs")
        for _ in range(max(3, repeat // 5)):
            started = time.perf_counter()
            round_robin_order(await store.queued_entries()).index(latest.id)
            replay.append(time.perf_counter() - started)
        return median_ms(status), median_ms(replay)
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="queued jobs, comma-separated")
    parser.add_argument("--repeat", type=int, default=50, help="calls timed per size (the replay too)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in sizes:
            status_ms, replay_ms = await measure(jobs, args.repeat, Path(tmp))
            print(f"RESULT queue_position: {jobs} queued: /status {status_ms:.2f} ms, "
                  f"replay {replay_ms:.1f} ms ({replay_ms / status_ms:.0f}x)")
    verdict = "PASS" if status_ms < TARGET_MS else "MISS"
    print(f"RESULT queue_position: largest queue ({sizes[-1]}): /status {status_ms:.2f} ms, target < {TARGET_MS} ms"
          f" {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
