"""Telegram intake: how fast the running bot accepts ``/story`` commands from many users.

Target: >= 200 accepted commands/s and p99 per-command latency < 100 ms.

Set-up, per round: a fresh ``FakeTelegram`` (tests/fakes, the local fake Bot API) and the real
bot, ``bot.app.run_bot(config, stop=...)``, with only the Telegram adapter (python-telegram-bot
22, ``TELEGRAM`` token from ``Secrets``; ``telegram.base_url``/``base_file_url`` at the fake;
``poll_timeout_s`` 1; ``edit_interval_s`` left at its default), the preview renderer with 64x64
frames, SQLite and outputs in a temp dir, and ``queue.max_queued_per_user`` high.

Where the fake runs: by default (``--fake-process``) in a process of its own (multiprocessing,
spawn, its own event loop), as the real Bot API is: it injects the updates, records the timings
and watches for the acks there, and hands them back over a pipe once the last ack is in, so
none of its CPU is the bot process's (on a 2-core box it still competes for the cores). ``--fake-in-process`` is the old set-up: the fake, its
ack watcher (a 5 ms poll) and the bot share this one process and event loop. Either way the bot
(PTB, service, aiosqlite thread, worker, render thread) runs in this process.

N users (``--users``, private chats, one user each) send ``/story <text> --frames 1``. By default
all N updates are queued at once (a burst); ``--rate R`` spreads them at R users/s instead.
The worker is running too and draws each board (1 frame, 64x64) and posts it, as in
production; ``--no-worker`` swaps in an idle worker (inside this script only) to measure intake
alone.

Measured, from the fake's own clock (``time.time()`` in the fake's process):

* commands/s = N / (last acknowledgement ``sendMessage`` "Job #N is queued" arriving at the
  fake - first update injected);
* latency per command ("from hand-out", the figure judged against the target) = ack
  ``sendMessage`` arrival (``Call.at``) - the moment the fake handed the update out in a
  ``getUpdates`` response (recorded by a subclass of FakeTelegram here);
* latency from injection (what the user waits) = ack arrival - the moment the update was queued
  at the fake; it adds the wait for a ``getUpdates`` and for the batches ahead (PTB asks for at
  most 100 updates at a time, and the next batch is fetched once the one in hand is handled).
  In a burst the bot is bound by one core (the GIL), so the hand-out p99 comes out near
  batch size x CPU per command, and the injection p99 near N x CPU per command.

Measured in this (the bot's) process, first update injected -> last ack received back:

* CPU per accepted command = ``time.process_time()`` over the burst / accepted commands, split
  into the event-loop thread (``time.thread_time()``), the aiosqlite thread (its
  ``thread_time`` read on that thread) and the rest (render thread, other workers). With the
  fake in its own process this is the bot's own cost; with ``--fake-in-process`` it includes the
  fake's. The fake's own process CPU is printed too when it is separate.

Where the time goes (medians per command, from wrappers installed by this script): the
``service.submit`` call (SQLite: user upsert + enqueue + queue position), the ack send (PTB +
``AIORateLimiter`` + HTTP to the fake), ``service.set_status_ref`` (in memory), and the
whole handler; and the SQLite write transactions each ``/story`` handler opened (target: 1). The
bot's PTB settings that bound intake are printed: ``concurrent_updates`` (updates handled one
after another when 1) and the rate limiter's overall rate.

``--profile FILE``: cProfile on the event-loop thread and, with a second profiler, on the aiosqlite
thread, over each burst (first injection -> last ack; all rounds added up), both timed by the
thread's CPU clock (``time.thread_time``: waiting in epoll, on the SQL queue or for the GIL counts
nothing). Writes pstats to FILE (event loop) and FILE.sqlite (aiosqlite thread) and prints, per
command: own CPU time by package, the inclusive time of the steps of a /story (Update.de_json,
submit, the ack's reply_text, httpx, ...), and the event loop's cumulative top 40. The profiler
slows the bot 3-4x and inflates code made of many small calls (httpx, PTB's de_json) the most:
read its shares as a ranking, and the latency figures of a profiled run as not comparable.

What-if switches (patch names inside this process only; the project is unchanged, and the
RESULT line says when one is on, as it does for ``--fake-in-process`` and ``--profile``): ``--concurrent-updates K`` builds the Application with
``concurrent_updates(K)``; ``--no-rate-limit`` gives the adapter an ``AIORateLimiter`` with the
overall and per-group limits off.

    python bench/telegram_intake.py [--users 200] [--repeat 1] [--rate 0] [--no-worker]
        [--max-poll 0.2] [--timeout 40] [--concurrent-updates K] [--no-rate-limit]
        [--fake-process | --fake-in-process] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import cProfile
import dataclasses
import functools
import io
import logging
import math
import multiprocessing
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import adapters.telegram_bot as telegram_bot  # noqa: E402
import bot.app as bot_app  # noqa: E402
from bot.app import run_bot  # noqa: E402
from bot.config import AppConfig, Secrets  # noqa: E402
from bot.service import StoryService  # noqa: E402
from bot.store.store import Store  # noqa: E402
from bot.jobs.runner import JobRunner  # noqa: E402
from bench import sqlite_writes  # noqa: E402
from tests.fakes.telegram_server import FakeTelegram  # noqa: E402

TARGET_RATE = 200.0
TARGET_P99_MS = 100.0
STORY = "Aldar Kose tricks a greedy merchant at the bazaar and rides away on his horse."
ACK_MARK = "is queued"
FIRST_USER = 500_000
TOKEN = "123:BENCH"


class TimedFake(FakeTelegram):
    """FakeTelegram that remembers when each update was queued and first handed out by getUpdates."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.served_at: dict[int, float] = {}
        self.injected_at: dict[int, float] = {}
        self.last_update_id = -1

    def _enqueue(self, payload):
        update = super()._enqueue(payload)
        self.injected_at[update["update_id"]] = time.time()
        self.last_update_id = update["update_id"]
        return update

    async def _get_updates(self, params, request):
        result = await super()._get_updates(params, request)
        now = time.time()
        for update in result:
            self.served_at.setdefault(update["update_id"], now)
        return result


# -- the burst, run on the fake's side (this loop, or the fake's own process) ----------------------
@dataclass
class Burst:
    """What the fake saw of one burst, from its own clock (plain data: it crosses a pipe)."""

    t_first: float  # first update injected
    acks: dict[int, float]  # chat -> its ack sendMessage arrived
    served: dict[int, float]  # chat -> its update handed out by getUpdates (missing: never handed out)
    injected: dict[int, float]  # chat -> its update queued
    errors: list[str]
    methods: dict[str, int]  # requests the fake received between first injection and last ack
    worker_posts: int
    fake_cpu_s: float  # process_time of the fake's side over the burst (its own process: only the fake)


async def run_burst(fake: TimedFake, chats: list[int], rate: float, timeout: float) -> Burst:
    """Inject one /story per chat (all at once, or ``rate`` per second), then wait for the acks."""
    cpu0 = time.process_time()
    update_of: dict[int, int] = {}
    t_first = time.time()
    for i, chat in enumerate(chats):
        if rate > 0:
            delay = t_first + i / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
        fake.send_message(f"/story {STORY} --frames 1", chat_id=chat, user_id=chat, username=f"u{chat}")
        update_of[chat] = fake.last_update_id
    acks, errors = await collect_acks(fake, set(chats), timeout)
    last = max((c.at for c in acks.values()), default=time.time())
    window = [c for c in fake.calls if t_first <= c.at <= last]
    methods: dict[str, int] = {}
    for c in window:
        methods[c.method] = methods.get(c.method, 0) + 1
    return Burst(
        t_first=t_first, acks={chat: call.at for chat, call in acks.items()},
        served={chat: fake.served_at[u] for chat, u in update_of.items() if u in fake.served_at},
        injected={chat: fake.injected_at[u] for chat, u in update_of.items()},
        errors=errors, methods=methods, worker_posts=methods.get("sendPhoto", 0),
        fake_cpu_s=time.process_time() - cpu0,
    )


async def collect_acks(fake: FakeTelegram, chats: set[int], timeout: float):
    """Scan new calls as they arrive: the first 'is queued' sendMessage per chat is its ack;
    any other sendMessage to a chat still waiting is an error reply."""
    acks, errors, seen = {}, [], 0
    deadline = time.monotonic() + timeout
    while len(acks) < len(chats) and time.monotonic() < deadline:
        calls = fake.calls
        for call in calls[seen:]:
            if call.method != "sendMessage":
                continue
            chat = call.params.get("chat_id")
            if chat not in chats or chat in acks:
                continue
            text = str(call.params.get("text", ""))
            if call.status == 200 and ACK_MARK in text:
                acks[chat] = call
            else:
                errors.append(f"chat {chat}: {call.status} {text[:80]!r}")
        seen = len(calls)
        await asyncio.sleep(0.005)
    return acks, errors


# -- where the fake runs --------------------------------------------------------------------------
class InProcessFake:
    """--fake-in-process: the fake serves from this process's event loop, next to the bot."""

    label = "in this process (same event loop as the bot)"

    async def start(self, max_poll_s: float) -> None:
        self.fake = await TimedFake(max_poll_s=max_poll_s).start()
        self.base_url, self.base_file_url = self.fake.base_url, self.fake.base_file_url

    async def polled(self) -> bool:
        return bool(self.fake.calls_to("getUpdates"))

    async def burst(self, chats: list[int], rate: float, timeout: float) -> Burst:
        return await run_burst(self.fake, chats, rate, timeout)

    async def stop(self) -> None:
        await self.fake.stop()


def fake_process_main(conn, max_poll_s: float) -> None:
    """Entry point of the fake's own process: serve, and answer the bench's requests on ``conn``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s fake %(name)s: %(message)s")
    asyncio.run(_serve_fake(conn, max_poll_s))


async def _serve_fake(conn, max_poll_s: float) -> None:
    fake = await TimedFake(max_poll_s=max_poll_s).start()
    loop = asyncio.get_running_loop()
    reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-pipe")
    conn.send(("ok", (fake.base_url, fake.base_file_url)))
    try:
        while True:
            try:
                op, *params = await loop.run_in_executor(reader, conn.recv)
            except EOFError:  # the bench went away
                return
            try:
                if op == "polled":
                    reply = bool(fake.calls_to("getUpdates"))
                elif op == "burst":
                    reply = dataclasses.asdict(await run_burst(fake, *params))
                elif op == "stop":
                    await fake.stop()
                    conn.send(("ok", None))
                    return
                else:
                    raise ValueError(f"unknown request {op!r}")
            except Exception as exc:  # noqa: BLE001 - reported to the bench, which raises it
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
                continue
            conn.send(("ok", reply))
    finally:
        await fake.stop()
        reader.shutdown(wait=False)


class SeparateFake:
    """--fake-process (default): the fake in a spawned process with its own event loop; the bench
    talks to it over a Pipe, read on a thread of its own here (blocked in poll: no CPU)."""

    label = "own process (spawn, own event loop)"

    async def start(self, max_poll_s: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-pipe")
        self._proc = ctx.Process(target=fake_process_main, args=(child, max_poll_s), name="fake-telegram",
                                 daemon=True)
        self._proc.start()
        child.close()
        try:
            self.base_url, self.base_file_url = await self._reply(60)
        except BaseException:
            await self.stop()
            raise

    async def _reply(self, timeout: float):
        def wait():
            if not self._conn.poll(timeout):
                raise TimeoutError(f"the fake's process did not answer within {timeout:g} s")
            return self._conn.recv()

        status, value = await asyncio.get_running_loop().run_in_executor(self._reader, wait)
        if status != "ok":
            raise RuntimeError(f"fake process: {value}")
        return value

    async def _call(self, op: str, *params, timeout: float = 30):
        self._conn.send((op, *params))
        return await self._reply(timeout)

    async def polled(self) -> bool:
        return await self._call("polled")

    async def burst(self, chats: list[int], rate: float, timeout: float) -> Burst:
        return Burst(**await self._call("burst", chats, rate, timeout, timeout=timeout + 30))

    async def stop(self) -> None:
        try:
            if self._proc.is_alive():
                await self._call("stop", timeout=10)
        except (OSError, EOFError, TimeoutError, RuntimeError) as exc:
            logging.getLogger(__name__).warning("fake process did not stop cleanly: %s", exc)
        finally:
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
            self._conn.close()
            self._reader.shutdown(wait=False)


# -- the bot's side ---------------------------------------------------------------------------------
@dataclass
class Probes:
    """Per-command timings from wrappers around project methods (seconds)."""

    submit: list[float] = field(default_factory=list)
    submit_end: dict[str, float] = field(default_factory=dict)  # chat id -> time.time() at submit return
    status_ref: list[float] = field(default_factory=list)
    handler: list[float] = field(default_factory=list)
    writes: list[int] = field(default_factory=list)  # SQLite write transactions per /story handler
    adapters: list = field(default_factory=list)
    stores: list = field(default_factory=list)


@contextlib.contextmanager
def instrumented(probes: Probes, args: argparse.Namespace):
    """Wrap StoryService.submit/set_status_ref and TelegramAdapter._story for timing, capture the
    adapter and the store, and apply the what-if switches. Everything is restored on exit."""
    saved = []

    def patch(owner, name, value):
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    submit, set_ref = StoryService.submit, StoryService.set_status_ref
    story, init = telegram_bot.TelegramAdapter._story, telegram_bot.TelegramAdapter.__init__
    store_init = Store.__init__

    @functools.wraps(submit)
    async def timed_submit(self, request):
        t0 = time.perf_counter()
        result = await submit(self, request)
        probes.submit.append(time.perf_counter() - t0)
        probes.submit_end[request.requester.chat_id] = time.time()
        return result

    @functools.wraps(set_ref)
    def timed_set_ref(self, job_id, ref):
        t0 = time.perf_counter()
        set_ref(self, job_id, ref)
        probes.status_ref.append(time.perf_counter() - t0)

    @functools.wraps(story)
    async def timed_story(self, update, requester, lang):
        t0 = time.perf_counter()
        with sqlite_writes.command() as writes:
            try:
                return await story(self, update, requester, lang)
            finally:
                probes.handler.append(time.perf_counter() - t0)
                probes.writes.append(writes[0])

    @functools.wraps(init)
    def capturing_init(self, *a, **kw):
        init(self, *a, **kw)
        probes.adapters.append(self)

    @functools.wraps(store_init)
    def capturing_store_init(self, *a, **kw):
        store_init(self, *a, **kw)
        probes.stores.append(self)

    patch(StoryService, "submit", timed_submit)
    patch(StoryService, "set_status_ref", timed_set_ref)
    patch(telegram_bot.TelegramAdapter, "_story", timed_story)
    patch(telegram_bot.TelegramAdapter, "__init__", capturing_init)
    patch(Store, "__init__", capturing_store_init)
    if args.no_worker:
        patch(bot_app, "JobRunner", IdleRunner)
    try:
        with sqlite_writes.counting(Store):
            yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


class IdleRunner(JobRunner):
    """--no-worker: recovers at start-up like the real one, then claims nothing until stop."""

    async def run(self, stop: asyncio.Event | None = None, *, burst: bool = False) -> int:
        if stop is not None:
            await stop.wait()
        return 0


class Profiler:
    """--profile: one cProfile for the event-loop thread, one for the aiosqlite thread (cProfile
    sees only the thread that enabled it); both add up over the rounds. Their clock is the
    thread's CPU time (``time.thread_time``), so waits (epoll, the SQL queue, the GIL) count zero."""

    def __init__(self) -> None:
        self.loop = cProfile.Profile(time.thread_time)
        self.sqlite = cProfile.Profile(time.thread_time)
        self.commands = 0


@dataclass
class Cpu:
    """CPU seconds of this process over one burst."""

    process: float = math.nan
    loop_thread: float = math.nan
    sqlite_thread: float = math.nan


class CpuMeter:
    def __init__(self, store: Store | None, profiler: Profiler | None) -> None:
        self.conn = getattr(store, "_conn", None)  # the aiosqlite Connection: runs callables on its thread
        self.profiler = profiler
        self.cpu = Cpu()

    async def _on_sqlite_thread(self, fn):
        if self.conn is None:
            return math.nan
        return await self.conn._execute(fn)

    async def start(self) -> None:
        if self.profiler:
            await self._on_sqlite_thread(self.profiler.sqlite.enable)
        self._sqlite0 = await self._on_sqlite_thread(time.thread_time)
        self._process0, self._loop0 = time.process_time(), time.thread_time()
        if self.profiler:
            self.profiler.loop.enable()

    async def stop(self) -> None:
        if self.profiler:
            self.profiler.loop.disable()
        self.cpu.process = time.process_time() - self._process0
        self.cpu.loop_thread = time.thread_time() - self._loop0
        self.cpu.sqlite_thread = await self._on_sqlite_thread(time.thread_time) - self._sqlite0
        if self.profiler:
            await self._on_sqlite_thread(self.profiler.sqlite.disable)


def make_config(tmp: Path, fake, args: argparse.Namespace) -> AppConfig:
    telegram = {"base_url": fake.base_url, "base_file_url": fake.base_file_url, "poll_timeout_s": 1}
    if args.no_rate_limit:  # [telegram] overall_max_rate / group_max_rate = 0: no caps
        telegram.update(overall_max_rate=0, group_max_rate=0)
    if args.concurrent_updates:
        telegram["concurrent_updates"] = args.concurrent_updates
    config = AppConfig.model_validate({
        "storage": {"database": tmp / "bot.sqlite3", "outputs": tmp / "outputs"},
        "engine": {"renderer": "preview", "width": 64, "height": 64},
        "queue": {"max_queued_per_user": 1000, "poll_interval_s": 0.05},
        "telegram": telegram,
    })
    return config.model_copy(update={"secrets": Secrets(telegram_token=TOKEN)})


@dataclass
class Round:
    users: int
    wall_s: float
    latencies_ms: list[float]  # ack arrival - update handed out by getUpdates
    from_injection_ms: list[float]  # ack arrival - update queued at the fake
    missing: int
    errors: list[str]
    probes: Probes
    ack_gaps_ms: list[float]
    send_ms: list[float]  # submit return -> ack sendMessage at the fake (PTB + rate limiter + HTTP)
    worker_posts: int
    methods: dict[str, int]  # requests the fake received between first injection and last ack
    concurrent_updates: int | None
    overall_rate: float | None
    cpu: Cpu
    fake_cpu_s: float | None  # the fake's process over the burst (None: it shares this process)

    @property
    def accepted(self) -> int:
        return self.users - self.missing


async def until_polling(fake, task: asyncio.Task, timeout: float = 20) -> None:
    """The bot is up when its first getUpdates has arrived at the fake."""
    deadline = time.monotonic() + timeout
    while not await fake.polled():
        if task.done():
            task.result()
            raise RuntimeError("run_bot returned before polling Telegram")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bot sent no getUpdates within {timeout:g} s")
        await asyncio.sleep(0.02)


async def one_round(args: argparse.Namespace, tmp: Path, profiler: Profiler | None) -> Round:
    fake = SeparateFake() if args.fake_process else InProcessFake()
    await fake.start(args.max_poll)
    try:
        config = make_config(tmp, fake, args)
        probes = Probes()
        stop = asyncio.Event()
        with instrumented(probes, args):
            task = asyncio.create_task(run_bot(config, stop=stop))
            try:
                await until_polling(fake, task)
                chats = [FIRST_USER + i for i in range(args.users)]
                meter = CpuMeter(probes.stores[0] if probes.stores else None, profiler)
                await meter.start()
                burst = await fake.burst(chats, args.rate, args.timeout)
                await meter.stop()
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=45)
    finally:
        await fake.stop()

    latencies = [(at - burst.served[chat]) * 1000 for chat, at in burst.acks.items() if chat in burst.served]
    from_injection = [(at - burst.injected[chat]) * 1000 for chat, at in burst.acks.items()]
    ack_times = sorted(burst.acks.values())
    last = ack_times[-1] if ack_times else time.time()
    adapter = probes.adapters[0] if probes.adapters else None
    limiter = adapter.app.bot.rate_limiter if adapter else None
    if profiler:
        profiler.commands += len(burst.acks)
    return Round(
        users=args.users, wall_s=last - burst.t_first, latencies_ms=latencies, from_injection_ms=from_injection,
        missing=len(chats) - len(burst.acks), errors=burst.errors, probes=probes,
        ack_gaps_ms=[(b - a) * 1000 for a, b in zip(ack_times, ack_times[1:])],
        send_ms=[(at - probes.submit_end[str(chat)]) * 1000 for chat, at in burst.acks.items()
                 if str(chat) in probes.submit_end],
        worker_posts=burst.worker_posts, methods=burst.methods,
        concurrent_updates=adapter.app.concurrent_updates if adapter else None,
        overall_rate=getattr(getattr(limiter, "_base_limiter", None), "max_rate", None) if limiter else None,
        cpu=meter.cpu, fake_cpu_s=burst.fake_cpu_s if args.fake_process else None,
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def med_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else math.nan


def per_cmd_ms(seconds: float, commands: int) -> float:
    return seconds * 1000 / commands if commands else math.nan


# -- profile report ---------------------------------------------------------------------------------
PACKAGES = (  # (label, test on the pstats key's file name / function name); first match wins
    ("PTB objects (de_json, to_dict, TelegramObject)",
     lambda f, n: "/telegram/" in f and "/telegram/ext/" not in f and "/telegram/request/" not in f
     and not f.endswith("/telegram/_bot.py")),
    ("PTB Bot + request (_bot.py, ExtBot, request/, rate limiter)",
     lambda f, n: f.endswith(("/telegram/_bot.py", "/telegram/ext/_extbot.py", "/telegram/ext/_aioratelimiter.py"))
     or "/telegram/request/" in f),
    ("PTB ext (Application, handlers, update processor)", lambda f, n: "/telegram/ext/" in f),
    ("httpx / httpcore / h11 / anyio",
     lambda f, n: any(p in f for p in ("/httpx/", "/httpcore/", "/h11/", "/anyio/", "/sniffio/"))),
    ("project: adapters/", lambda f, n: f.startswith(str(REPO / "adapters"))),
    ("project: bot/", lambda f, n: f.startswith(str(REPO / "bot"))),
    ("project: engine/ (render thread: not profiled)", lambda f, n: f.startswith(str(REPO / "engine"))),
    ("bench probes", lambda f, n: f.startswith(str(REPO / "bench"))),
    ("aiosqlite (Python side)", lambda f, n: "/aiosqlite/" in f),
    ("sqlite3 (C: execute, fetch)", lambda f, n: "sqlite3" in n or "/sqlite3/" in f),
    ("asyncio + selectors + socket I/O",
     lambda f, n: "/asyncio/" in f or f.endswith("/selectors.py") or "select." in n or "socket" in n
     or "_asyncio." in n or "asyncio" in n),
    ("json", lambda f, n: "/json/" in f or "_json" in n or "json" in n),
    ("logging", lambda f, n: "/logging/" in f),
    ("pydantic", lambda f, n: "/pydantic" in f),
    ("other stdlib / builtins (callers unknown)", lambda f, n: True),
)


def by_package(stats: pstats.Stats) -> dict[str, float]:
    """Own (tottime) seconds per package group. A builtin or small stdlib helper (the last group:
    isinstance, dict.get, contextlib, urllib.parse, ...) is charged to the groups of its callers,
    in proportion to the time each caller spent in it (up to three levels up)."""
    label_of = {key: next(label for label, test in PACKAGES if test(key[0], key[2])) for key in stats.stats}
    other = PACKAGES[-1][0]
    totals: dict[str, float] = {}

    def charge(key, seconds: float, depth: int) -> None:
        label = label_of.get(key, other)
        callers = stats.stats[key][4] if key in stats.stats else {}
        spent = sum(c[2] for c in callers.values())
        if label != other or depth == 3 or spent <= 0:
            totals[label] = totals.get(label, 0.0) + seconds
            return
        for caller, c in callers.items():
            charge(caller, seconds * c[2] / spent, depth + 1)

    for key, (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        charge(key, tottime, 0)
    return totals


STEPS = (  # (label, file name ending, function, caller's (file ending, function) or None: every caller)
    ("PTB Update.de_json (the getUpdates batches)", "/telegram/_update.py", "de_json", None),
    ("ExtBot.get_updates (polls: request + Update.de_json)", "/telegram/ext/_extbot.py", "get_updates", None),
    ("PTB dispatch: BaseUpdateProcessor.process_update (all below)", "/telegram/ext/_baseupdateprocessor.py",
     "process_update", None),
    ("TelegramAdapter._story (submit + ack)", "/adapters/telegram_bot.py", "_story", None),
    ("StoryService.submit (loop side of the SQL)", "/bot/service.py", "submit", None),
    ("Store._run (every SQL round trip, loop side)", "/bot/store/store.py", "_run", None),
    ("ack: Message.reply_text (PTB + rate limiter + httpx + parse)", "/telegram/_message.py", "reply_text", None),
    ("ack: Message.de_json of the reply (+ its reply_to_message)", "/telegram/_message.py", "de_json",
     ("/telegram/_bot.py", "_send_message")),
    ("HTTPXRequest.do_request (httpx, every request)", "/telegram/request/_httpxrequest.py", "do_request", None),
    ("asyncio: BaseEventLoop._run_once own time + epoll", "/asyncio/base_events.py", "_run_once", "own+select"),
)


def inclusive(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Inclusive seconds of the STEPS found in ``stats`` (names that are not there are left out)."""
    rows = []
    for label, ending, name, caller in STEPS:
        keys = [k for k in stats.stats if k[0].endswith(ending) and k[2] == name]
        if not keys:
            continue
        if caller == "own+select":
            seconds = sum(stats.stats[k][2] for k in keys) + sum(
                v[3] for k, v in stats.stats.items() if k[2] == "<method 'poll' of 'select.epoll' objects>")
        elif caller is None:
            seconds = sum(stats.stats[k][3] for k in keys)
        else:
            seconds = sum(c[3] for k in keys for ck, c in stats.stats[k][4].items()
                          if ck[0].endswith(caller[0]) and ck[2] == caller[1])
        rows.append((label, seconds))
    return rows


def print_profile(profiler: Profiler, path: Path) -> None:
    n = profiler.commands
    loop = pstats.Stats(profiler.loop)
    loop.dump_stats(str(path))
    sqlite_path = path.with_name(path.name + ".sqlite")
    sqlite = None
    if profiler.sqlite.getstats():
        sqlite = pstats.Stats(profiler.sqlite)
        sqlite.dump_stats(str(sqlite_path))
    print()
    print(f"profile ({n} accepted commands; cProfile's own overhead included): pstats of the event-loop "
          f"thread in {path}" + (f", of the aiosqlite thread in {sqlite_path}" if sqlite else ""))
    for title, stats in (("event-loop thread", loop), ("aiosqlite thread", sqlite)):
        if stats is None:
            continue
        totals = by_package(stats)
        print(f"  {title}: {per_cmd_ms(stats.total_tt, n):.3f} ms/command profiled, own time by package:")
        for label, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
            if seconds * 1000 / max(n, 1) >= 0.005:
                print(f"    {label:<62} {per_cmd_ms(seconds, n):7.3f} ms  {100 * seconds / stats.total_tt:5.1f} %")
    print("  event-loop thread, inclusive time of the steps of one /story (rows overlap; ms/command profiled):")
    for label, seconds in inclusive(loop):
        print(f"    {label:<62} {per_cmd_ms(seconds, n):7.3f} ms  {100 * seconds / loop.total_tt:5.1f} %")
    out = io.StringIO()
    pstats.Stats(profiler.loop, stream=out).strip_dirs().sort_stats("cumulative").print_stats(40)
    print()
    print("  event-loop thread, cumulative top 40:")
    print("\n".join("  " + line for line in out.getvalue().strip("\n").splitlines()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--users", type=int, default=200, help="simulated users, one /story each (default 200)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds, each a fresh fake + bot + database (default 1; a round takes 5-10 s)")
    parser.add_argument("--rate", type=float, default=0.0, help="users arriving per second; 0 = all at once (default 0)")
    parser.add_argument("--no-worker", action="store_true", help="idle worker: measure intake without boards being drawn")
    parser.add_argument("--max-poll", type=float, default=0.2, help="the fake's getUpdates cap, s (default 0.2)")
    parser.add_argument("--timeout", type=float, default=40.0, help="give up waiting for acks after this, s (default 40)")
    parser.add_argument("--concurrent-updates", type=int, default=0, metavar="K",
                        help="what-if: ApplicationBuilder().concurrent_updates(K) (default: as the adapter builds it)")
    parser.add_argument("--no-rate-limit", action="store_true",
                        help="what-if: AIORateLimiter with overall/group limits off (default: as the adapter builds it)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--fake-process", dest="fake_process", action="store_true", default=True,
                       help="run the fake Bot API in a process of its own, so its CPU is not the bot's (default)")
    where.add_argument("--fake-in-process", dest="fake_process", action="store_false",
                       help="the old set-up: the fake shares this process and event loop with the bot")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="cProfile the bot over each burst; pstats to FILE (event loop) and FILE.sqlite "
                             "(aiosqlite thread), summary printed (slows the bot: latencies not comparable)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.repeat < 1 or args.rate < 0 or args.concurrent_updates < 0:
        parser.error("--users and --repeat must be >= 1, --rate and --concurrent-updates >= 0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    profiler = Profiler() if args.profile else None

    rounds = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-tg-intake-") as tmp_name:
            rounds.append(asyncio.run(one_round(args, Path(tmp_name), profiler)))

    first = rounds[0]
    where_label = SeparateFake.label if args.fake_process else InProcessFake.label
    print(f"users {args.users}, arrival {'burst' if args.rate == 0 else f'{args.rate:g}/s'}, "
          f"worker {'idle (--no-worker)' if args.no_worker else 'drawing boards (1 frame, 64x64)'}, "
          f"fake max_poll_s {args.max_poll:g}, poll_timeout_s 1, edit_interval_s default")
    print(f"fake Bot API: {where_label}{'; PROFILED (latencies inflated)' if profiler else ''}")
    print(f"PTB Application: concurrent_updates = {first.concurrent_updates} "
          f"({'updates handled one at a time' if first.concurrent_updates == 1 else 'concurrent'}); "
          f"AIORateLimiter overall rate = {first.overall_rate if first.overall_rate else 'off'} requests/s "
          f"(every request with a chat_id: acks, status edits, board photos)")
    print()
    print(f"{'':>5} {'':>6} {'':>7} {'':>7} {'from hand-out':>26} {'from injection':>17}")
    print(f"{'round':>5} {'users':>6} {'wall s':>7} {'cmd/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'CPU ms/cmd':>10} {'missing':>7} {'errors':>6} {'boards':>6}")

    def row(label, users, wall, accepted, lat, inj, cpu_s, missing, errors, boards):
        rate = accepted / wall if wall > 0 else math.nan
        print(f"{label:>5} {users:>6} {wall:>7.2f} {rate:>7.1f} {percentile(lat, 50):>8.1f} "
              f"{percentile(lat, 99):>8.1f} {max(lat, default=math.nan):>8.1f} {percentile(inj, 50):>8.1f} "
              f"{percentile(inj, 99):>8.1f} {per_cmd_ms(cpu_s, accepted):>10.2f} {missing:>7} {errors:>6} {boards:>6}")
        return rate

    for i, r in enumerate(rounds, 1):
        row(i, r.users, r.wall_s, r.accepted, r.latencies_ms, r.from_injection_ms, r.cpu.process, r.missing,
            len(r.errors), r.worker_posts)
    pooled = [x for r in rounds for x in r.latencies_ms]
    accepted = sum(r.accepted for r in rounds)
    rate = row("all", accepted, sum(r.wall_s for r in rounds), accepted, pooled,
               [x for r in rounds for x in r.from_injection_ms], sum(r.cpu.process for r in rounds),
               sum(r.missing for r in rounds), sum(len(r.errors) for r in rounds), sum(r.worker_posts for r in rounds))
    p99 = percentile(pooled, 99)
    p99_injection = percentile([x for r in rounds for x in r.from_injection_ms], 99)
    print("(from hand-out: ack - getUpdates answer carrying the update; from injection: ack - update queued at the "
          "fake; CPU: this process over the burst, per accepted command; boards = sendPhoto posts by the worker "
          "before the last ack, i.e. competing for the same loop and limiter)")

    def cpu_ms(pick) -> float:
        return per_cmd_ms(sum(pick(r) for r in rounds), accepted)

    cpu_process = cpu_ms(lambda r: r.cpu.process)
    print()
    print("CPU per accepted command over the burst (ms, all rounds):")
    owner = "this process: the bot alone" if args.fake_process else "this process: bot + fake + ack watcher"
    print(f"  {owner:<60} {cpu_process:8.3f}")
    print(f"    event-loop thread (PTB, httpx, handlers, service)          {cpu_ms(lambda r: r.cpu.loop_thread):8.3f}")
    print(f"    aiosqlite thread (SQL)                                     {cpu_ms(lambda r: r.cpu.sqlite_thread):8.3f}")
    rest = cpu_ms(lambda r: r.cpu.process - r.cpu.loop_thread - r.cpu.sqlite_thread)
    print(f"    other threads (render thread, to_thread, pipe reader)      {rest:8.3f}")
    if args.fake_process:
        print(f"  the fake's own process (aiohttp server + ack watcher)        "
              f"{cpu_ms(lambda r: r.fake_cpu_s or 0.0):8.3f}")

    probes = [r.probes for r in rounds]
    send_ms = [x for r in rounds for x in r.send_ms]
    print()
    print("where the time goes, per command (median ms, all rounds):")
    print(f"  service.submit (SQLite: user read + enqueue + queue_position)  {med_ms([x for p in probes for x in p.submit]):8.2f}")
    print(f"  ack send (submit return -> sendMessage at the fake)            {statistics.median(send_ms) if send_ms else math.nan:8.2f}")
    print(f"  service.set_status_ref (in memory)                             {med_ms([x for p in probes for x in p.status_ref]):8.2f}")
    print(f"  whole /story handler                                           {med_ms([x for p in probes for x in p.handler]):8.2f}")
    writes = [x for p in probes for x in p.writes]
    print(f"  SQLite write transactions per /story handler (target 1)        {statistics.median(writes) if writes else math.nan:8.0f}"
          f" (max {max(writes, default=0)})")
    gaps = [g for r in rounds for g in r.ack_gaps_ms]
    print(f"  gap between consecutive acks                                   {statistics.median(gaps) if gaps else math.nan:8.2f}"
          f" (mean {statistics.fmean(gaps) if gaps else math.nan:.2f})")
    methods: dict[str, int] = {}
    for r in rounds:
        for name, n in r.methods.items():
            methods[name] = methods.get(name, 0) + n
    limited = sum(n for name, n in methods.items() if name not in ("getUpdates", "answerCallbackQuery"))
    print(f"  requests at the fake, first injection -> last ack: "
          f"{', '.join(f'{k} {v}' for k, v in sorted(methods.items(), key=lambda kv: -kv[1]))}; "
          f"{limited / accepted if accepted else math.nan:.2f} chat requests per accepted command")
    errors = [e for r in rounds for e in r.errors]
    for e in errors[:5]:
        print(f"  error reply: {e}")
    if profiler:
        print_profile(profiler, args.profile)

    what_if = []
    if args.concurrent_updates:
        what_if.append(f"concurrent_updates={args.concurrent_updates}")
    if args.no_rate_limit:
        what_if.append("no rate limiter")
    if args.no_worker:
        what_if.append("idle worker")
    if args.rate:
        what_if.append(f"arrival {args.rate:g}/s")
    if not args.fake_process:
        what_if.append("fake in-process")
    if profiler:
        what_if.append("profiled")
    ok = rate >= TARGET_RATE and p99 < TARGET_P99_MS and not errors and not any(r.missing for r in rounds)
    tag = f" [{', '.join(what_if)}]" if what_if else ""
    print()
    print(f"RESULT telegram_intake: {rate:.1f} cmd/s, p99 {p99:.1f} ms (target >= {TARGET_RATE:.0f}/s, "
          f"p99 < {TARGET_P99_MS:.0f} ms){tag} {'PASS' if ok else 'MISS'}; from injection p99 {p99_injection:.1f} ms, "
          f"CPU {cpu_process:.2f} ms/command ({'bot only' if args.fake_process else 'bot + fake'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
