"""Flood: one user sends 1,000 ``/story`` at once while five others send one each.

Everything goes the way chat messages go (``ConsoleAdapter.handle_line`` -> ``StoryService``
-> SQLite), all at the same time on one event loop. Then one worker (preview renderer, one
64x64 frame per job) draws the queue in burst mode. The assertions are on the replies users
read, on the rows in SQLite, on the order the worker claims jobs, and on the process's memory.
"""

from __future__ import annotations

import asyncio
import re
import resource
import threading
import time

import psutil

from adapters.console import ConsoleAdapter
from bot.messages import text
from bot.store.store import Store
from engine.build import build_engine
from tests.helpers import WORKER_STORY, RecordingGateway, Rig, db_rows
from tests.round_robin import round_robin_order

FLOOD = 1000
OTHERS = 5
RSS_GROWTH_LIMIT = 200 * 1024 * 1024  # generous: the flood itself needs a few MB
TIME_LIMIT_S = 60.0
QUEUED = re.compile(r"🧾 Job #(\d+) is queued, position (\d+)\. I will post the storyboard here\.")


class PeakRss:
    """Samples this process's RSS on a thread every few ms; ``peak - baseline`` is the growth."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self._process = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self.baseline = self.peak = self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MB"


async def test_one_user_flooding_cannot_crowd_out_the_others(make_config, figures):
    config = make_config(engine={"renderer": "preview", "width": 64, "height": 64})
    quota = config.queue.max_queued_per_user
    store = await Store.open(config.storage.database)
    rig = Rig(config, store, build_engine(config.engine_settings()), RecordingGateway())
    try:
        flooder = ConsoleAdapter(rig.service, user_id="flooder")
        others = [ConsoleAdapter(rig.service, user_id=f"user{i}") for i in range(1, OTHERS + 1)]
        line = f"/story {WORKER_STORY} --frames 1"
        burst = [flooder] * FLOOD
        for i, adapter in enumerate(others):  # the others arrive in the middle of the burst
            burst.insert((i + 1) * FLOOD // (OTHERS + 1), adapter)

        # -- the flood: every message at once -------------------------------------------------------
        ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        with PeakRss() as rss:
            replies = await asyncio.gather(*(adapter.handle_line(line) for adapter in burst))
        elapsed = time.perf_counter() - started
        ru_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        by_user: dict[str, list[str]] = {}
        for adapter, reply in zip(burst, replies, strict=True):
            by_user.setdefault(adapter.requester.user_id, []).append(reply)

        # what the flooder reads: `quota` acknowledgements, then the clear quota message, nothing else
        quota_full = text("err_queue_full", "en", max=quota)
        assert quota_full == f"You already have {quota} job(s) waiting. Please wait for one to finish."
        flood_replies = by_user["flooder"]
        accepted = [r for r in flood_replies if QUEUED.fullmatch(r)]
        refused = [r for r in flood_replies if r == quota_full]
        assert len(accepted) == quota, accepted
        assert len(refused) == FLOOD - quota
        assert len(accepted) + len(refused) == FLOOD, {r for r in flood_replies if r not in accepted + refused}

        # what each other user reads: one acknowledgement, at a position a fair queue can keep
        promised: dict[str, int] = {}
        for adapter in others:
            [reply] = by_user[adapter.requester.user_id]
            match = QUEUED.fullmatch(reply)
            assert match, reply
            promised[adapter.requester.user_id] = int(match.group(2))
            assert promised[adapter.requester.user_id] <= OTHERS + 1, reply

        # SQLite: the flooder has at most `quota` jobs, counted once each; every other user has one
        owners = dict(await db_rows(config, "SELECT j.id, u.platform_user_id FROM jobs j "
                                            "JOIN users u ON u.id = j.user_id ORDER BY j.id"))
        per_user = {user: sum(o == user for o in owners.values()) for user in set(owners.values())}
        assert per_user["flooder"] <= quota
        assert per_user == {"flooder": quota, **{a.requester.user_id: 1 for a in others}}
        assert await db_rows(config, "SELECT jobs_submitted FROM users WHERE platform_user_id = 'flooder'") == [
            (quota,)]
        assert await flooder.handle_line("/mystats") == text(
            "mystats", "en", submitted=quota, delivered=0, refusals=0, queued=quota, remaining=0)

        # -- the worker: claim order ----------------------------------------------------------------
        predicted = round_robin_order(await store.queued_entries())
        processed = await rig.worker.run(burst=True)
        assert processed == quota + OTHERS
        claimed = [d.job_id for d in rig.gateway.deliveries]  # one worker, one job at a time: claim order
        claim_owners = [owners[job_id] for job_id in claimed]
        assert claimed == predicted  # the order the service's positions are computed from is the real one
        assert await db_rows(config, "SELECT status, COUNT(*) FROM jobs GROUP BY status") == [
            ("done", quota + OTHERS)]

        # Fairness bound. claim() orders by: users never served first (last_claimed_at IS NULL), then
        # the least recently served user, then the oldest job id. Before the first claim nobody has
        # been served, so each of the 6 users' oldest job is taken once, in job-id order, before any
        # user gets a second one: the first OTHERS + 1 claims are the flooder's oldest job and each
        # other user's job, in some order, and the flooder's 2nd..quota-th jobs come after all of them.
        first_round = claim_owners[: OTHERS + 1]
        assert sorted(first_round) == sorted(["flooder"] + [a.requester.user_id for a in others]), claim_owners
        assert claim_owners[OTHERS + 1:] == ["flooder"] * (quota - 1), claim_owners
        second_flooder_claim = [i for i, o in enumerate(claim_owners) if o == "flooder"][1]
        for adapter in others:
            user = adapter.requester.user_id
            assert claim_owners.index(user) < second_flooder_claim
            assert claim_owners.index(user) + 1 == promised[user]  # the position we told the user was true

        # after the queue drained the flooder may queue again: the quota is on waiting jobs only
        assert QUEUED.fullmatch(await flooder.handle_line(line))
    finally:
        await store.close()
        rig.executor.shutdown(wait=True)

    assert elapsed < TIME_LIMIT_S
    assert rss.growth < RSS_GROWTH_LIMIT, f"RSS grew by {_mb(rss.growth)} during the flood"

    figures("flood: messages in the burst", f"{FLOOD} from one user + {OTHERS} from {OTHERS} others")
    figures("flood: submission throughput", f"{len(burst) / elapsed:.0f} msg/s ({len(burst)} in {elapsed:.2f} s)")
    figures("flood: flooder accepted / refused (quota)", f"{len(accepted)} / {len(refused)} (quota {quota})")
    figures("flood: claim order", ", ".join(claim_owners))
    figures("flood: positions promised to the others", ", ".join(f"{u} {p}" for u, p in promised.items()))
    figures("flood: peak RSS / growth during the flood", f"{_mb(rss.peak)} / {_mb(rss.growth)}")
    figures("flood: ru_maxrss before / after the flood", f"{_mb(ru_before * 1024)} / {_mb(ru_after * 1024)}")
