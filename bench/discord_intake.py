"""Discord intake: how fast the running bot acknowledges ``/story`` slash commands from many users.

Target: p99 defer latency < 200 ms with 100 interactions arriving at once (Discord drops an
interaction that is not answered within 3 s).

Set-up, per round: a fresh ``FakeDiscord`` (tests/fakes, the local fake REST + gateway; discord.py
pointed at it with ``point_discord_here`` and put back with ``restore`` afterwards) and the real
bot, ``bot.app.run_bot(config, stop=...)``, with only the Discord adapter (discord.py 2.x,
``discord_token`` from ``Secrets``; ``[discord] api_base``/``gateway_url`` at the fake, commands
synced to the fake's guild, ``guild_ready_timeout_s`` 0.05, ``edit_interval_s`` left at its
default), the preview renderer with 64x64 frames, SQLite and outputs in a temp dir, and
``queue.max_queued_per_user`` and ``max_queued_per_chat`` high (every user writes in one
channel). Everything runs in this one process and event loop: fake server, discord.py,
service, SQLite thread and worker.

N distinct users (``--interactions``) each run ``/story text:<story> frames:6`` (6 is the
command's minimum); all N INTERACTION_CREATE events are dispatched at once
(``asyncio.gather`` of ``fake.slash``). The worker runs too and draws each board (6 frames, 64x64)
and posts it, as in production; ``--no-worker`` swaps in an idle worker (inside this script only)
to measure intake alone.

Measured, from the fake's own clock (``time.monotonic()``):

* interactions/s = N / (last deferred callback (type 5) arriving at the fake - first
  INTERACTION_CREATE dispatched);
* defer latency per interaction = ``fake.callback_latency``: dispatch -> callback arrival;
* queued latency per interaction: dispatch -> the ``PATCH .../messages/@original`` whose content
  says "is queued" arriving at the fake.

Where the time goes (medians per interaction, from wrappers this script installs around project
methods; the project is unchanged): dispatch -> handler start (gateway frame, discord.py parsing,
CommandTree task), the defer round trip (handler start -> ``service.submit`` start), the
``service.submit`` call (SQLite), the "queued" edit round trip, ``service.set_status_ref``; and
how many handlers were in flight at once (is discord.py handling interactions concurrently?).
The REST requests the fake received in the intake window are counted by route.

Read the numbers with two facts in mind. The fake serves from the bot's own event loop, so its
request handling is charged to the bot. And discord.py opens one TCP connection per concurrent
request (``TCPConnector(limit=0)``), while the fake listens with aiohttp's default backlog of 128:
a burst of more than about 128 interactions has SYNs dropped and retried after the kernel's 1 s,
which shows as a ~1 s step in defer latency. ``--backlog 2048`` removes that artefact.

    python bench/discord_intake.py [--interactions 100] [--repeat 3] [--no-worker]
        [--heartbeat-ms 250] [--timeout 30] [--backlog B]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import math
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import adapters.discord_bot as discord_bot  # noqa: E402
import bot.app as bot_app  # noqa: E402
import tests.fakes.discord_server as discord_server  # noqa: E402
from bot.app import run_bot  # noqa: E402
from bot.config import AppConfig, Secrets  # noqa: E402
from bot.service import StoryService  # noqa: E402
from bot.jobs.runner import JobRunner  # noqa: E402
from tests.fakes.discord_server import APP_ID, CHANNEL_ID, GUILD_ID, FakeDiscord  # noqa: E402

TARGET_P99_MS = 200.0
STORY = "Aldar Kose tricks a greedy merchant at the bazaar and rides away on his horse."
ACK_MARK = "is queued"
FIRST_USER = 1_400_000_000_000_000_000
TOKEN = "MTMwMDAwMDAwMDAwMDAwMDAwMQ.GfAkEx.fake-bot-token-for-bench"
_WEBHOOK_ORIGINAL = re.compile(rf"^/webhooks/{APP_ID}/(?P<token>[^/]+)/messages/@original$")


@dataclass
class Probes:
    """Per-user timestamps (time.monotonic(), the fake's clock) from wrappers around project methods."""

    handler_start: dict[str, float] = field(default_factory=dict)
    handler_end: dict[str, float] = field(default_factory=dict)
    submit_start: dict[str, float] = field(default_factory=dict)
    submit_end: dict[str, float] = field(default_factory=dict)
    ref_start: dict[str, float] = field(default_factory=dict)
    ref_end: dict[str, float] = field(default_factory=dict)
    job_user: dict[int, str] = field(default_factory=dict)


class ErrorLog(logging.Handler):
    """Every WARNING or worse logged while the bot runs."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class NoVoiceNotes(logging.Filter):
    """discord.py warns at start-up that voice libraries are missing; the bot has no voice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


class IdleRunner(JobRunner):
    """--no-worker: recovers at start-up like the real one, then claims nothing until stop."""

    async def run(self, stop: asyncio.Event | None = None, *, burst: bool = False) -> int:
        if stop is not None:
            await stop.wait()
        return 0


@contextlib.contextmanager
def instrumented(probes: Probes, args: argparse.Namespace):
    """Wrap DiscordAdapter.story and StoryService.submit/set_status_ref for timing, and swap in the
    idle worker for --no-worker. Everything is restored on exit."""
    saved = []

    def patch(owner, name, value):
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    story = discord_bot.DiscordAdapter.story
    submit, set_ref = StoryService.submit, StoryService.set_status_ref

    @functools.wraps(story)
    async def timed_story(self, interaction, text, options):
        user = str(interaction.user.id)
        probes.handler_start[user] = time.monotonic()
        try:
            return await story(self, interaction, text, options)
        finally:
            probes.handler_end[user] = time.monotonic()

    @functools.wraps(submit)
    async def timed_submit(self, request):
        user = request.requester.user_id
        probes.submit_start[user] = time.monotonic()
        result = await submit(self, request)
        probes.submit_end[user] = time.monotonic()
        probes.job_user[result.job_id] = user
        return result

    @functools.wraps(set_ref)
    def timed_set_ref(self, job_id, ref):
        user = probes.job_user.get(job_id, f"job{job_id}")
        probes.ref_start[user] = time.monotonic()
        set_ref(self, job_id, ref)
        probes.ref_end[user] = time.monotonic()

    patch(discord_bot.DiscordAdapter, "story", timed_story)
    patch(StoryService, "submit", timed_submit)
    patch(StoryService, "set_status_ref", timed_set_ref)
    if args.no_worker:
        patch(bot_app, "JobRunner", IdleRunner)
    if args.backlog:
        patch(discord_server.web, "TCPSite", functools.partial(discord_server.web.TCPSite, backlog=args.backlog))
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def make_config(tmp: Path, fake: FakeDiscord) -> AppConfig:
    config = AppConfig.model_validate({
        "storage": {"database": tmp / "bot.sqlite3", "outputs": tmp / "outputs"},
        "engine": {"renderer": "preview", "width": 64, "height": 64},
        "queue": {"max_queued_per_user": 1000, "max_queued_per_chat": 1000, "poll_interval_s": 0.05},
        "discord": {"api_base": fake.api_base, "gateway_url": fake.gateway_url, "guild_ids": [str(GUILD_ID)],
                    "guild_ready_timeout_s": 0.05},
    })
    return config.model_copy(update={"secrets": Secrets(discord_token=TOKEN)})


@dataclass
class Round:
    n: int
    wall_s: float  # first dispatch -> last deferred callback
    defer_ms: list[float]
    queued_ms: list[float]
    missing_defer: int
    missing_queued: int
    bad: list[str]  # callbacks that were not a defer, error edits, failed requests
    warnings: list[str]
    probes: Probes
    routes: dict[str, int]  # requests at the fake from first dispatch to the last "queued" edit
    max_in_flight: int
    heartbeat_max_gap_ms: float
    dispatch_spread_ms: float  # first -> last INTERACTION_CREATE sent
    late_queued: int  # "queued" edits that landed after a worker progress edit of the same message
    boards_in_window: int
    boards_in_channel: int  # boards posted as a channel message (no status ref when the job finished)
    boards_total: int
    dispatch_to_handler_ms: list[float]  # INTERACTION_CREATE sent -> /story handler entered


def _route_name(path: str, method: str) -> str:
    if path.startswith("/interactions/"):
        return f"{method} /interactions/:id/:token/callback"
    if path.startswith("/webhooks/"):
        return f"{method} " + re.sub(r"/\d{5,}", "/:id", re.sub(r"^/webhooks/\d+/[^/]+", "/webhooks/:app/:token", path))
    return f"{method} " + re.sub(r"/\d{5,}", "/:id", path)


async def one_round(args: argparse.Namespace, tmp: Path) -> Round:
    probes = Probes()
    with instrumented(probes, args):  # --backlog applies to the fake's listening socket
        fake = await FakeDiscord(heartbeat_interval_ms=args.heartbeat_ms).start()
    fake.point_discord_here()  # remembers discord.py's own endpoints; restored below
    config = make_config(tmp, fake)
    handler = ErrorLog()
    logging.getLogger().addHandler(handler)
    stop = asyncio.Event()
    iids: list[int] = []
    try:
        with instrumented(probes, args):
            task = asyncio.create_task(run_bot(config, stop=stop))
            try:
                await fake.wait_for(lambda f: (f.commands(GUILD_ID) and f.connected) or task.done(), timeout=20)
                if task.done():
                    task.result()
                await asyncio.sleep(0.1)  # let start-up settle (READY, guild, first heartbeat)
                hb_before = len(fake.heartbeats)
                users = [FIRST_USER + i for i in range(args.interactions)]
                iids = list(await asyncio.gather(*(
                    fake.slash("story", {"text": STORY, "frames": 6}, user_id=u) for u in users)))
                await wait_acks(fake, iids, args.timeout)
                heartbeats = fake.heartbeats[max(0, hb_before - 1):]
                # the worker keeps drawing; let in-flight posts finish before counting boards
                await asyncio.sleep(0.2)
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=45)
    finally:
        logging.getLogger().removeHandler(handler)
        fake.restore()
        await fake.stop()
    return summarise(fake, iids, probes, handler, heartbeats)


async def wait_acks(fake: FakeDiscord, iids: list[int], timeout: float) -> None:
    """Until every interaction has its callback and a "queued" (or any) edit of its original."""
    deadline = time.monotonic() + timeout
    tokens = {fake.interaction(i).token for i in iids}
    while time.monotonic() < deadline:
        edited = {m["token"] for c in fake.calls if c.method == "PATCH" and (m := _WEBHOOK_ORIGINAL.match(c.path))}
        if all(fake.callback(i) for i in iids) and tokens <= edited:
            return
        await asyncio.sleep(0.01)


def summarise(fake: FakeDiscord, iids: list[int], probes: Probes, errlog: ErrorLog, heartbeats: list[float]) -> Round:
    records = [fake.interaction(i) for i in iids]
    by_token = {r.token: r for r in records}
    bad: list[str] = []
    defer_ms, callbacks = [], []
    for r in records:
        if r.callback_at is None:
            continue
        if r.callback_type != 5:
            bad.append(f"interaction {r.id}: callback type {r.callback_type} {str(r.callback_data)[:80]}")
        defer_ms.append((r.callback_at - r.dispatched_at) * 1000)
        callbacks.append(r.callback_at)
    queued_at: dict[str, float] = {}
    for c in fake.calls:
        m = _WEBHOOK_ORIGINAL.match(c.path) if c.method == "PATCH" else None
        if m is None or m["token"] not in by_token or m["token"] in queued_at:
            continue
        content = str((c.json or {}).get("content", ""))
        if c.status == 200 and ACK_MARK in content:
            queued_at[m["token"]] = c.at
        else:
            bad.append(f"first edit of interaction {by_token[m['token']].id}: {c.status} {content[:80]!r}")
            queued_at[m["token"]] = math.nan
    queued_ms = [(queued_at[r.token] - r.dispatched_at) * 1000 for r in records
                 if not math.isnan(queued_at.get(r.token, math.nan))]
    bad += [f"{c.route} -> {c.status}" for c in fake.calls if c.status >= 400]

    t_first = min(r.dispatched_at for r in records)
    t_last_dispatch = max(r.dispatched_at for r in records)
    t_last_defer = max(callbacks) if callbacks else math.nan
    t_end = max([t for t in queued_at.values() if not math.isnan(t)], default=t_last_defer)
    window = [c for c in fake.calls if t_first <= c.at <= t_end]
    routes: dict[str, int] = {}
    for c in window:
        name = _route_name(c.path, c.method)
        routes[name] = routes.get(name, 0) + 1

    # "queued" edits that arrived after a worker progress edit of the same original (by message id)
    late = 0
    for r in records:
        at = queued_at.get(r.token)
        if r.original_id is None or at is None or math.isnan(at):
            continue
        path = f"/messages/{r.original_id}"
        if any(c.method == "PATCH" and c.path.endswith(path) and c.at < at for c in fake.calls):
            late += 1

    boards = [c for c in fake.calls if c.method == "POST" and c.status == 200 and any(
        n.startswith("grid.") for n in c.filenames.values())]
    boards_in_channel = sum(1 for c in boards if c.path == f"/channels/{CHANNEL_ID}/messages")

    dispatch_to_handler = [(probes.handler_start[str(r.user_id)] - r.dispatched_at) * 1000 for r in records
                           if str(r.user_id) in probes.handler_start]
    intervals = sorted((probes.handler_start[u], probes.handler_end[u]) for u in probes.handler_start
                       if u in probes.handler_end)
    max_in_flight, ends = 0, []
    for start, end in intervals:
        ends = [e for e in ends if e > start] + [end]
        max_in_flight = max(max_in_flight, len(ends))
    gaps = [(b - a) * 1000 for a, b in zip(heartbeats, heartbeats[1:])]
    return Round(
        n=len(iids), wall_s=t_last_defer - t_first, defer_ms=defer_ms, queued_ms=queued_ms,
        missing_defer=sum(1 for r in records if r.callback_at is None),
        missing_queued=sum(1 for r in records if r.token not in queued_at),
        bad=bad, warnings=[f"{rec.levelname} {rec.name}: {rec.getMessage()}" for rec in errlog.records],
        probes=probes, routes=routes, max_in_flight=max_in_flight,
        heartbeat_max_gap_ms=max(gaps, default=math.nan), dispatch_spread_ms=(t_last_dispatch - t_first) * 1000,
        late_queued=late, boards_in_window=sum(1 for c in boards if c.at <= t_end), boards_in_channel=boards_in_channel,
        boards_total=len(boards), dispatch_to_handler_ms=dispatch_to_handler,
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def med_ms(pairs: list[tuple[dict[str, float], dict[str, float]]]) -> float:
    """Median of end - start over every user present in both dicts, all rounds, in ms."""
    values = [(end[u] - start[u]) * 1000 for start, end in pairs for u in start if u in end]
    return statistics.median(values) if values else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--interactions", type=int, default=100,
                        help="concurrent /story interactions, one distinct user each (default 100)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds, each a fresh fake + bot + database (default 3; one default round takes ~1 s)")
    parser.add_argument("--no-worker", action="store_true", help="idle worker: measure intake without boards being drawn")
    parser.add_argument("--heartbeat-ms", type=int, default=250,
                        help="the fake gateway's heartbeat interval; the largest gap shows loop stalls (default 250)")
    parser.add_argument("--backlog", type=int, default=0, metavar="B",
                        help="what-if: the fake's listen backlog (default: aiohttp's 128); discord.py opens one "
                             "connection per concurrent request (TCPConnector(limit=0)), so a burst over the "
                             "backlog has SYNs dropped and retried after ~1 s")
    parser.add_argument("--timeout", type=float, default=30.0, help="give up waiting for acks after this, s (default 30)")
    args = parser.parse_args(argv)
    if args.interactions < 1 or args.repeat < 1 or args.heartbeat_ms < 50:
        parser.error("--interactions and --repeat must be >= 1, --heartbeat-ms >= 50")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("discord.client").addFilter(NoVoiceNotes())

    rounds = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-dc-intake-") as tmp_name:
            rounds.append(asyncio.run(one_round(args, Path(tmp_name))))

    import discord

    print(f"interactions {args.interactions} (distinct users, dispatched at once), "
          f"worker {'idle (--no-worker)' if args.no_worker else 'drawing boards (6 frames, 64x64)'}, "
          f"discord.py {discord.__version__}, edit_interval_s default, fake heartbeat {args.heartbeat_ms} ms")
    print()
    print(f"{'round':>5} {'n':>5} {'wall s':>7} {'acks/s':>8} {'defer p50':>9} {'p99':>7} {'max':>7} "
          f"{'queued p50':>10} {'p99':>7} {'max':>7} {'missing':>7} {'bad':>4} {'in-flight':>9} {'hb gap':>7}")
    for i, r in enumerate(rounds, 1):
        rate = (r.n - r.missing_defer) / r.wall_s if r.wall_s > 0 else math.nan
        print(f"{i:>5} {r.n:>5} {r.wall_s:>7.3f} {rate:>8.1f} {percentile(r.defer_ms, 50):>9.1f} "
              f"{percentile(r.defer_ms, 99):>7.1f} {max(r.defer_ms, default=math.nan):>7.1f} "
              f"{percentile(r.queued_ms, 50):>10.1f} {percentile(r.queued_ms, 99):>7.1f} "
              f"{max(r.queued_ms, default=math.nan):>7.1f} {r.missing_defer + r.missing_queued:>7} {len(r.bad):>4} "
              f"{r.max_in_flight:>9} {r.heartbeat_max_gap_ms:>7.0f}")
    defer = [x for r in rounds for x in r.defer_ms]
    queued = [x for r in rounds for x in r.queued_ms]
    acked = sum(r.n - r.missing_defer for r in rounds)
    wall = sum(r.wall_s for r in rounds)
    rate = acked / wall if wall > 0 else math.nan
    p99 = percentile(defer, 99)
    print(f"{'all':>5} {sum(r.n for r in rounds):>5} {wall:>7.3f} {rate:>8.1f} {percentile(defer, 50):>9.1f} "
          f"{p99:>7.1f} {max(defer, default=math.nan):>7.1f} {percentile(queued, 50):>10.1f} "
          f"{percentile(queued, 99):>7.1f} {max(queued, default=math.nan):>7.1f} "
          f"{sum(r.missing_defer + r.missing_queued for r in rounds):>7} {sum(len(r.bad) for r in rounds):>4} "
          f"{max(r.max_in_flight for r in rounds):>9} {max(r.heartbeat_max_gap_ms for r in rounds):>7.0f}")
    print("(ms from INTERACTION_CREATE sent; wall = first dispatch -> last deferred callback; in-flight = most "
          "/story handlers running at once; hb gap = largest heartbeat gap during the burst, ms)")

    p = [r.probes for r in rounds]
    print()
    print("where the time goes, per interaction (median ms, all rounds):")
    print(f"  dispatch spread (first -> last INTERACTION_CREATE sent)         "
          f"{statistics.median([r.dispatch_spread_ms for r in rounds]):8.2f}")
    to_handler = [x for r in rounds for x in r.dispatch_to_handler_ms]
    print(f"  dispatch -> handler start (gateway, discord.py parse, task)     "
          f"{statistics.median(to_handler) if to_handler else math.nan:8.2f} (max {max(to_handler, default=math.nan):.2f})")
    print(f"  defer round trip (handler start -> service.submit start)        "
          f"{med_ms([(x.handler_start, x.submit_start) for x in p]):8.2f}")
    print(f"  service.submit (SQLite: user upsert + enqueue + queue position) "
          f"{med_ms([(x.submit_start, x.submit_end) for x in p]):8.2f}")
    print(f"  'queued' edit round trip (submit end -> set_status_ref start)   "
          f"{med_ms([(x.submit_end, x.ref_start) for x in p]):8.2f}")
    print(f"  service.set_status_ref (in memory)                              "
          f"{med_ms([(x.ref_start, x.ref_end) for x in p]):8.2f}")
    print(f"  whole /story handler                                            "
          f"{med_ms([(x.handler_start, x.handler_end) for x in p]):8.2f}")
    routes: dict[str, int] = {}
    for r in rounds:
        for name, n in r.routes.items():
            routes[name] = routes.get(name, 0) + n
    total = sum(routes.values())
    print(f"  REST requests at the fake, first dispatch -> last 'queued' edit: {total} "
          f"({total / acked if acked else math.nan:.2f} per interaction)")
    for name, n in sorted(routes.items(), key=lambda kv: -kv[1]):
        print(f"    {n:>6}  {name}")
    if not args.no_worker:
        print(f"  boards posted: {sum(r.boards_total for r in rounds)} in all, "
              f"{sum(r.boards_in_window for r in rounds)} during intake, "
              f"{sum(r.boards_in_channel for r in rounds)} as channel messages (job done before its status ref "
              f"was stored); 'queued' edits landing after a worker progress edit: "
              f"{sum(r.late_queued for r in rounds)}")
    problems = [b for r in rounds for b in r.bad] + [w for r in rounds for w in r.warnings]
    for line in problems[:8]:
        print(f"  problem: {line}")
    if len(problems) > 8:
        print(f"  ... and {len(problems) - 8} more")

    missing = sum(r.missing_defer + r.missing_queued for r in rounds)
    ok = p99 < TARGET_P99_MS and not missing and not any(r.bad for r in rounds) and args.interactions >= 100
    tag = " [idle worker]" if args.no_worker else ""
    if args.backlog:
        tag += f" [fake backlog {args.backlog}]"
    if args.interactions < 100:
        tag += f" [only {args.interactions} concurrent]"
    print()
    print(f"RESULT discord_intake: {rate:.1f} interactions/s, p99 defer {p99:.1f} ms "
          f"(target p99 < {TARGET_P99_MS:.0f} ms under 100 concurrent){tag} {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
