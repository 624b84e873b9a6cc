"""Telegram intake: how fast the running bot accepts ``/story`` commands from many users.

Target: >= 200 accepted commands/s and p99 per-command latency < 100 ms.

Set-up, per round: a fresh ``FakeTelegram`` (tests/fakes, the local fake Bot API) and the real
bot, ``bot.app.run_bot(config, stop=...)``, with only the Telegram adapter (python-telegram-bot
22, ``TELEGRAM`` token from ``Secrets``; ``telegram.base_url``/``base_file_url`` at the fake;
``poll_timeout_s`` 1; ``edit_interval_s`` left at its default), the preview renderer with 64x64
frames, SQLite and outputs in a temp dir, and ``queue.max_queued_per_user`` high. Everything runs
in this one process and event loop: fake server, PTB, service, SQLite thread and worker.

N users (``--users``, private chats, one user each) send ``/story <text> --frames 1``. By default
all N updates are queued at once (a burst); ``--rate R`` spreads them at R users/s instead.
The worker is running too and draws each board (1 frame, 64x64) and posts it, as in
production; ``--no-worker`` swaps in an idle worker (inside this script only) to measure intake
alone.

Measured, from the fake's own clock (``time.time()``):

* commands/s = N / (last acknowledgement ``sendMessage`` "Job #N is queued" arriving at the
  fake - first update injected);
* latency per command = ack ``sendMessage`` arrival (``Call.at``) - the moment the fake handed the
  update out in a ``getUpdates`` response (recorded by a subclass of FakeTelegram here).

Where the time goes (medians per command, from wrappers installed by this script): the
``service.submit`` call (SQLite: user upsert + enqueue + queue position), the ack send (PTB +
``AIORateLimiter`` + HTTP to the fake), ``service.set_status_ref`` (in memory), and the
whole handler; and the SQLite write transactions each ``/story`` handler opened (target: 1). The bot's PTB settings that bound intake are printed: ``concurrent_updates``
(updates handled one after another when 1) and the rate limiter's overall rate.

What-if switches (patch names inside this process only; the project is unchanged, and the
RESULT line says when one is on): ``--concurrent-updates K`` builds the Application with
``concurrent_updates(K)``; ``--no-rate-limit`` gives the adapter an ``AIORateLimiter`` with the
overall and per-group limits off.

    python bench/telegram_intake.py [--users 200] [--repeat 1] [--rate 0] [--no-worker]
        [--max-poll 0.2] [--timeout 40] [--concurrent-updates K] [--no-rate-limit]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import math
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
    """FakeTelegram that remembers when each update was first handed out by getUpdates."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.served_at: dict[int, float] = {}

    async def _get_updates(self, params, request):
        result = await super()._get_updates(params, request)
        now = time.time()
        for update in result:
            self.served_at.setdefault(update["update_id"], now)
        return result


@dataclass
class Probes:
    """Per-command timings from wrappers around project methods (seconds)."""

    submit: list[float] = field(default_factory=list)
    submit_end: dict[str, float] = field(default_factory=dict)  # chat id -> time.time() at submit return
    status_ref: list[float] = field(default_factory=list)
    handler: list[float] = field(default_factory=list)
    writes: list[int] = field(default_factory=list)  # SQLite write transactions per /story handler
    adapters: list = field(default_factory=list)


@contextlib.contextmanager
def instrumented(probes: Probes, args: argparse.Namespace):
    """Wrap StoryService.submit/set_status_ref and TelegramAdapter._story for timing, capture the
    adapter, and apply the what-if switches. Everything is restored on exit."""
    saved = []

    def patch(owner, name, value):
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    submit, set_ref = StoryService.submit, StoryService.set_status_ref
    story, init = telegram_bot.TelegramAdapter._story, telegram_bot.TelegramAdapter.__init__

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

    patch(StoryService, "submit", timed_submit)
    patch(StoryService, "set_status_ref", timed_set_ref)
    patch(telegram_bot.TelegramAdapter, "_story", timed_story)
    patch(telegram_bot.TelegramAdapter, "__init__", capturing_init)
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


def make_config(tmp: Path, fake: FakeTelegram, args: argparse.Namespace) -> AppConfig:
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
    latencies_ms: list[float]
    missing: int
    errors: list[str]
    probes: Probes
    ack_gaps_ms: list[float]
    send_ms: list[float]  # submit return -> ack sendMessage at the fake (PTB + rate limiter + HTTP)
    worker_posts: int
    methods: dict[str, int]  # requests the fake received between first injection and last ack
    concurrent_updates: int | None
    overall_rate: float | None


async def one_round(args: argparse.Namespace, tmp: Path) -> Round:
    fake = await TimedFake(max_poll_s=args.max_poll).start()
    config = make_config(tmp, fake, args)
    probes = Probes()
    stop = asyncio.Event()
    with instrumented(probes, args):
        task = asyncio.create_task(run_bot(config, stop=stop))
        try:
            # the bot is up when its first getUpdates has arrived
            await fake.wait_for(lambda f: f.calls_to("getUpdates") or task.done(), timeout=20)
            if task.done():
                task.result()
            chats = [FIRST_USER + i for i in range(args.users)]
            update_of: dict[int, int] = {}
            t_first = time.time()
            for i, chat in enumerate(chats):
                if args.rate > 0:
                    delay = t_first + i / args.rate - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                fake.send_message(f"/story {STORY} --frames 1", chat_id=chat, user_id=chat, username=f"u{chat}")
                update_of[chat] = fake.pending_updates[-1]["update_id"] if fake.pending_updates else -1
            acks, errors = await collect_acks(fake, set(chats), args.timeout)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=45)
    await fake.stop()

    latencies = []
    for chat, call in acks.items():
        served = fake.served_at.get(update_of[chat])
        if served is not None:
            latencies.append((call.at - served) * 1000)
    ack_times = sorted(c.at for c in acks.values())
    last = ack_times[-1] if ack_times else time.time()
    window = [c for c in fake.calls if t_first <= c.at <= last]
    worker_posts = sum(1 for c in window if c.method == "sendPhoto")
    methods: dict[str, int] = {}
    for c in window:
        methods[c.method] = methods.get(c.method, 0) + 1
    adapter = probes.adapters[0] if probes.adapters else None
    limiter = adapter.app.bot.rate_limiter if adapter else None
    return Round(
        users=args.users, wall_s=last - t_first, latencies_ms=latencies, missing=len(chats) - len(acks),
        errors=errors, probes=probes, ack_gaps_ms=[(b - a) * 1000 for a, b in zip(ack_times, ack_times[1:])],
        send_ms=[(call.at - probes.submit_end[str(chat)]) * 1000 for chat, call in acks.items()
                 if str(chat) in probes.submit_end],
        worker_posts=worker_posts, methods=methods,
        concurrent_updates=adapter.app.concurrent_updates if adapter else None,
        overall_rate=getattr(getattr(limiter, "_base_limiter", None), "max_rate", None) if limiter else None,
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


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def med_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--users", type=int, default=200, help="simulated users, one /story each (default 200)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds, each a fresh fake + bot + database (default 1; one default round takes ~25 s)")
    parser.add_argument("--rate", type=float, default=0.0, help="users arriving per second; 0 = all at once (default 0)")
    parser.add_argument("--no-worker", action="store_true", help="idle worker: measure intake without boards being drawn")
    parser.add_argument("--max-poll", type=float, default=0.2, help="the fake's getUpdates cap, s (default 0.2)")
    parser.add_argument("--timeout", type=float, default=40.0, help="give up waiting for acks after this, s (default 40)")
    parser.add_argument("--concurrent-updates", type=int, default=0, metavar="K",
                        help="what-if: ApplicationBuilder().concurrent_updates(K) (default: as the adapter builds it)")
    parser.add_argument("--no-rate-limit", action="store_true",
                        help="what-if: AIORateLimiter with overall/group limits off (default: as the adapter builds it)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.repeat < 1 or args.rate < 0 or args.concurrent_updates < 0:
        parser.error("--users and --repeat must be >= 1, --rate and --concurrent-updates >= 0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    rounds = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-tg-intake-") as tmp_name:
            rounds.append(asyncio.run(one_round(args, Path(tmp_name))))

    first = rounds[0]
    print(f"users {args.users}, arrival {'burst' if args.rate == 0 else f'{args.rate:g}/s'}, "
          f"worker {'idle (--no-worker)' if args.no_worker else 'drawing boards (1 frame, 64x64)'}, "
          f"fake max_poll_s {args.max_poll:g}, poll_timeout_s 1, edit_interval_s default")
    print(f"PTB Application: concurrent_updates = {first.concurrent_updates} "
          f"({'updates handled one at a time' if first.concurrent_updates == 1 else 'concurrent'}); "
          f"AIORateLimiter overall rate = {first.overall_rate if first.overall_rate else 'off'} requests/s "
          f"(every request with a chat_id: acks, status edits, board photos)")
    print()
    print(f"{'round':>5} {'users':>6} {'wall s':>7} {'cmd/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'missing':>7} {'errors':>6} {'boards':>6}")
    for i, r in enumerate(rounds, 1):
        rate = (r.users - r.missing) / r.wall_s if r.wall_s > 0 else math.nan
        print(f"{i:>5} {r.users:>6} {r.wall_s:>7.2f} {rate:>7.1f} {percentile(r.latencies_ms, 50):>8.1f} "
              f"{percentile(r.latencies_ms, 99):>8.1f} {max(r.latencies_ms, default=math.nan):>8.1f} "
              f"{r.missing:>7} {len(r.errors):>6} {r.worker_posts:>6}")
    pooled = [x for r in rounds for x in r.latencies_ms]
    accepted = sum(r.users - r.missing for r in rounds)
    wall = sum(r.wall_s for r in rounds)
    rate = accepted / wall if wall > 0 else math.nan
    p99 = percentile(pooled, 99)
    print(f"{'all':>5} {accepted:>6} {wall:>7.2f} {rate:>7.1f} {percentile(pooled, 50):>8.1f} {p99:>8.1f} "
          f"{max(pooled, default=math.nan):>8.1f} {sum(r.missing for r in rounds):>7} "
          f"{sum(len(r.errors) for r in rounds):>6} {sum(r.worker_posts for r in rounds):>6}")
    print("(boards = sendPhoto posts by the worker before the last ack, i.e. competing for the same loop and limiter)")

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

    what_if = []
    if args.concurrent_updates:
        what_if.append(f"concurrent_updates={args.concurrent_updates}")
    if args.no_rate_limit:
        what_if.append("no rate limiter")
    if args.no_worker:
        what_if.append("idle worker")
    if args.rate:
        what_if.append(f"arrival {args.rate:g}/s")
    ok = rate >= TARGET_RATE and p99 < TARGET_P99_MS and not errors and not any(r.missing for r in rounds)
    tag = f" [{', '.join(what_if)}]" if what_if else ""
    print()
    print(f"RESULT telegram_intake: {rate:.1f} cmd/s, p99 {p99:.1f} ms (target >= {TARGET_RATE:.0f}/s, "
          f"p99 < {TARGET_P99_MS:.0f} ms){tag} {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
