"""Small helpers shared by tests that look at what a user would see."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw

from bot.chat_port import BoardDelivery, JobUpdate
from bot.jobs.runner import JobRunner
from bot.render.local import LocalEngine
from bot.service import Requester, StoryOptions, StoryRequest, StoryService
from engine.rendering.grid import PAPER


def _long_runs(flags: list[bool]) -> list[tuple[int, int]]:
    """(start, length) of runs of True at least half as long as the longest run."""
    runs, pos = [], 0
    for value, group in itertools.groupby(flags):
        length = len(list(group))
        if value:
            runs.append((pos, length))
        pos += length
    longest = max((length for _, length in runs), default=0)
    return [(start, length) for start, length in runs if length >= longest / 2]


def count_panels(grid_path: Path) -> tuple[int, int]:
    """(columns, rows) of picture panels on a storyboard sheet, found from its pixels.

    Panels are the long runs of non-paper pixels; gutters, margins, titles, captions
    and number badges are paper or short runs. Rows are counted down a vertical line
    a little inside the first panel, columns across the middle of the first row.
    """
    with Image.open(grid_path) as img:
        image = img.convert("RGB")
    width, height = image.size
    pixels = image.load()

    def is_ink(x: int, y: int) -> bool:
        return any(abs(a - b) > 6 for a, b in zip(pixels[x, y], PAPER, strict=True))

    # the first line from a third of the way down that crosses a panel (not a gutter or a caption's paper)
    probe_y, first_x = next((y, x) for y in range(height // 3, height) for x in [next(
        (x for x in range(width) if is_ink(x, y)), None)] if x is not None)
    rows = _long_runs([is_ink(first_x + 20, y) for y in range(height)])
    top, panel_height = rows[0]
    columns = _long_runs([is_ink(x, top + panel_height // 2) for x in range(width)])
    return len(columns), len(rows)


ALICE = Requester(platform="test", user_id="alice", chat_id="chat-a")
BOB = Requester(platform="test", user_id="bob", chat_id="chat-b")
WORKER_STORY = "Aldar Kose tricks a greedy merchant at the bazaar. He rides away across the steppe at sunset."


class RecordingGateway:
    """A ``ChatGateway`` (the worker's own protocol) that records what a chat would be sent."""

    def __init__(self, fail_deliveries: int = 0) -> None:
        self.updates: list[JobUpdate] = []
        self.deliveries: list[BoardDelivery] = []
        self.fail_deliveries = fail_deliveries

    async def notify(self, update: JobUpdate) -> None:
        self.updates.append(update)

    async def deliver(self, delivery: BoardDelivery) -> None:
        if self.fail_deliveries:
            self.fail_deliveries -= 1
            raise ConnectionError("chat unreachable")
        self.deliveries.append(delivery)


class Rig:
    """A worker, its service and its one engine thread on a real store, for burst-mode tests."""

    def __init__(self, config, store, engine, gateway):
        self.config, self.store, self.gateway = config, store, gateway
        self.service = StoryService(store, config)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.engine = engine
        self.worker = self.new_worker(engine)

    def new_worker(self, engine):
        return JobRunner(store=self.store, port=LocalEngine(engine, self.executor), gateway=self.gateway,
                      config=self.config, status_refs=self.service.status_refs)

    async def submit(self, who=ALICE, story=WORKER_STORY, **options):
        return (await self.service.submit(StoryRequest(who, story, StoryOptions(**options)))).job_id


async def db_rows(config, sql: str) -> list[tuple]:
    """Rows of a query on the bot's database, read through the real store."""
    from bot.store.store import Store

    store = await Store.open(config.storage.database)
    try:
        async with store._conn.execute(sql) as cursor:
            return [tuple(r) for r in await cursor.fetchall()]
    finally:
        await store.close()


async def loop_lag_while(work, interval: float = 0.01) -> tuple[list[float], float]:
    """Run ``work`` (a coroutine) while probing the event loop: how late each ``sleep(interval)``
    woke up. Returns the lags and the seconds ``work`` took."""
    import asyncio
    import time

    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(interval)
            lags.append(time.perf_counter() - start - interval)

    probe_task = asyncio.create_task(probe())
    started = time.perf_counter()
    try:
        await work
    finally:
        elapsed = time.perf_counter() - started
        done.set()
        await probe_task
    return lags, elapsed


def draw_character(path: Path, index: int, size: tuple[int, int] = (80, 64)) -> Path:
    """A synthetic 'character': a red face with a yellow hat, moved a little per picture."""
    picture = Image.new("RGB", size, (235, 235, 225))
    draw = ImageDraw.Draw(picture)
    x = 12 + 4 * index
    draw.ellipse((x, 18, x + 36, 58), fill=(200, 40, 40))
    draw.polygon([(x - 4, 20), (x + 18, 2 + index), (x + 40, 20)], fill=(230, 200, 20))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


@contextlib.asynccontextmanager
async def bot_running(config, *, ready=None):
    """``run_bot`` in a task for the block, stopped and awaited after it; ``ready`` (a coroutine
    function) is awaited first, e.g. until a fake platform sees the bot connected."""
    from bot.app import run_bot

    stop = asyncio.Event()
    task = asyncio.create_task(run_bot(config, stop=stop))
    try:
        if ready is not None:
            await ready()
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
