"""The SQLite store and its durable, fair queue, on a real database file."""

from __future__ import annotations

import random
import sqlite3

import pytest

from bot.quotas import Caps, Refused
from bot.store.records import FrameRow, NewJob
from bot.store.schema import SCHEMA_VERSION
from bot.store.store import Store
from tests.round_robin import round_robin_order


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_job(user_id: int, story: str = "Aldar Kose rides") -> NewJob:
    return NewJob(user_id=user_id, platform="console", chat_id="c", language="en", kind="story",
                  story=story, mode="simple", frames=6, seed=1)


def caps(per_user: int | None = 50, *, total: int = 10_000, per_chat: int | None = None,
         per_day: int | None = None, regen_renders: int | None = None, since: float = 0.0) -> Caps:
    return Caps(queued_total=total, queued_per_user=per_user, queued_per_chat=per_chat, jobs_per_day=per_day,
                regen_renders_per_day=regen_renders, since=since)


async def add_user(store: Store, name: str) -> int:
    return (await store.touch_user("console", name, name, None)).id


async def test_fresh_database_is_migrated_with_safe_pragmas(tmp_path):
    store = await Store.open(tmp_path / "a.sqlite3")
    try:
        assert await store.schema_version() == SCHEMA_VERSION
        assert (await store._scalar("PRAGMA journal_mode")) == "wal"
        assert (await store._scalar("PRAGMA foreign_keys")) == 1
        assert (await store._scalar("PRAGMA busy_timeout")) == 5000
    finally:
        await store.close()
    reopened = await Store.open(tmp_path / "a.sqlite3")  # migrating twice is a no-op
    assert await reopened.schema_version() == SCHEMA_VERSION
    await reopened.close()


async def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer than this code"):
        await Store.open(path)


async def test_foreign_keys_are_enforced(store):
    with pytest.raises(sqlite3.IntegrityError):
        await store.enqueue(new_job(user_id=999), caps=caps(5))


async def test_one_users_twenty_jobs_do_not_starve_another(store):
    alice, bob = await add_user(store, "alice"), await add_user(store, "bob")
    for i in range(20):
        assert await store.enqueue(new_job(alice, f"story {i}"), caps=caps(50))
    bob_job = await store.enqueue(new_job(bob), caps=caps(50))

    claimed = []
    for _ in range(2):
        job = await store.claim("w", lease_seconds=60, max_running_per_user=5, max_attempts=3)
        claimed.append(job.id)
    assert bob_job in claimed


async def test_predicted_positions_match_the_real_claim_order(store):
    users = [await add_user(store, name) for name in ("a", "b", "c")]
    rng = random.Random(7)
    for _ in range(15):
        await store.enqueue(new_job(rng.choice(users)), caps=caps(50))
    # serve two jobs first, so users carry different last-claimed times
    for _ in range(2):
        job = await store.claim("w", lease_seconds=60, max_running_per_user=50, max_attempts=3)
        await store.finish(job.id, "w", title="t", grid_path="g", report_path="r", frames=[])

    predicted = round_robin_order(await store.queued_entries())
    actual = []
    while job := await store.claim("w", lease_seconds=60, max_running_per_user=50, max_attempts=3):
        actual.append(job.id)
    assert actual == predicted
    assert len(actual) == 13


async def test_enqueue_refuses_past_the_per_user_limit(store):
    alice = await add_user(store, "alice")
    assert await store.enqueue(new_job(alice), caps=caps(2))
    assert await store.enqueue(new_job(alice), caps=caps(2))
    assert await store.enqueue(new_job(alice), caps=caps(2)) == Refused("queued_per_user", 2)
    assert await store.count_jobs() == 2
    assert (await store.user_by_id(alice)).jobs_submitted == 2


async def test_max_running_per_user_holds_back_a_second_job(store):
    alice = await add_user(store, "alice")
    await store.enqueue(new_job(alice), caps=caps(5))
    await store.enqueue(new_job(alice), caps=caps(5))
    first = await store.claim("w1", lease_seconds=60, max_running_per_user=1, max_attempts=3)
    assert first is not None
    assert await store.claim("w2", lease_seconds=60, max_running_per_user=1, max_attempts=3) is None


async def test_an_expired_lease_is_claimed_again_and_then_given_up(tmp_path):
    clock = Clock()
    store = await Store.open(tmp_path / "lease.sqlite3", clock=clock)
    try:
        alice = await add_user(store, "alice")
        job_id = await store.enqueue(new_job(alice), caps=caps(5))
        await store.claim("dead-worker", lease_seconds=10, max_running_per_user=1, max_attempts=2)
        clock.now += 5
        assert await store.claim("w2", lease_seconds=10, max_running_per_user=1, max_attempts=2) is None
        clock.now += 6  # lease expired: the dead worker's job is resumed
        again = await store.claim("w2", lease_seconds=10, max_running_per_user=1, max_attempts=2)
        assert (again.id, again.attempts, again.lease_owner) == (job_id, 2, "w2")
        assert not await store.finish(job_id, "dead-worker", title="t", grid_path="g", report_path="r", frames=[])

        clock.now += 11  # died again: two attempts used up
        assert await store.claim("w3", lease_seconds=10, max_running_per_user=1, max_attempts=2) is None
        given_up = await store.fail_exhausted(max_attempts=2)
        assert [j.id for j in given_up] == [job_id]
        row = await store.get_job(job_id)
        assert (row.status, row.error_type) == ("failed", "AttemptsExhausted")
    finally:
        await store.close()


async def test_cancel_stops_a_queued_job_and_flags_a_running_one(store):
    alice = await add_user(store, "alice")
    running = await store.enqueue(new_job(alice), caps=caps(5))
    queued = await store.enqueue(new_job(alice), caps=caps(5))
    await store.claim("w", lease_seconds=60, max_running_per_user=1, max_attempts=3)

    assert (await store.request_cancel(queued)).status == "cancelled"
    flagged = await store.request_cancel(running)
    assert (flagged.status, flagged.cancel_requested) == ("running", True)
    assert await store.request_cancel(queued) is None  # already over
    assert await store.claim("w", lease_seconds=60, max_running_per_user=5, max_attempts=3) is None


async def test_finish_queues_one_delivery_and_it_counts_once(store):
    alice = await add_user(store, "alice")
    job_id = await store.enqueue(new_job(alice), caps=caps(5))
    await store.claim("w", lease_seconds=60, max_running_per_user=1, max_attempts=3)
    frames = [FrameRow(idx=1, path="f1.png", seed=5, prompt="p", attempts=1, identity=None, accepted=True)]
    assert await store.finish(job_id, "w", title="T", grid_path="g.png", report_path="r.json", frames=frames)

    [delivery] = await store.pending_deliveries()
    assert delivery.job_id == job_id
    await store.mark_delivered(delivery.id)
    await store.mark_delivered(delivery.id)  # a second call changes nothing
    assert await store.pending_deliveries() == []
    assert (await store.user_by_id(alice)).boards_delivered == 1
    assert [f.path for f in await store.frames(job_id)] == ["f1.png"]


async def test_a_released_job_goes_back_to_the_queue(store):
    alice = await add_user(store, "alice")
    job_id = await store.enqueue(new_job(alice), caps=caps(5))
    await store.claim("w", lease_seconds=60, max_running_per_user=1, max_attempts=1)
    assert await store.release(job_id, "w")
    again = await store.claim("w", lease_seconds=60, max_running_per_user=1, max_attempts=1)
    assert (again.id, again.attempts) == (job_id, 2)


async def test_ban_cancels_queued_jobs(store):
    alice = await add_user(store, "alice")
    await store.enqueue(new_job(alice), caps=caps(5))
    await store.enqueue(new_job(alice), caps=caps(5))
    assert await store.set_banned(alice, True, "spam") == 2
    assert await store.count_jobs(status="cancelled") == 2
    user = await store.user_by_id(alice)
    assert (user.banned, user.ban_reason) == (True, "spam")


async def test_writes_cancelled_at_any_point_leave_no_transaction_open(store):
    """A heartbeat cancelled mid-write must not leave a transaction open for the next writer."""
    import asyncio

    alice = await add_user(store, "alice")
    job_id = await store.enqueue(new_job(alice), caps=caps(5))
    await store.claim("w", lease_seconds=60, max_running_per_user=1, max_attempts=3)
    for delay in range(40):
        task = asyncio.create_task(store.renew_lease(job_id, "w", 60))
        for _ in range(delay % 8):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert await store.count_refusal(alice) is None  # the next write works
    assert (await store.user_by_id(alice)).refusals == 40


async def test_a_v1_database_is_migrated_keeping_its_rows(tmp_path):
    from bot.store.schema import MIGRATIONS, split_sql

    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as conn:
        for statement in split_sql(MIGRATIONS[0]):
            conn.execute(statement)
        conn.execute("PRAGMA user_version=1")
        conn.execute("INSERT INTO users (platform, platform_user_id, first_seen, last_seen) VALUES ('t', 'u', 1, 1)")
        conn.execute("""INSERT INTO jobs (user_id, platform, chat_id, kind, story, mode, seed, created_at)
                        VALUES (1, 't', 'c', 'story', 'Aldar Kose rides', 'simple', 3, 1)""")
    store = await Store.open(path)
    try:
        assert await store.schema_version() == SCHEMA_VERSION == 6
        job = await store.get_job(1)
        assert (job.story, job.status, job.status_ref) == ("Aldar Kose rides", "queued", None)
        assert (job.character_image, job.lora) == (None, True)  # v5: an old job has no picture and keeps the LoRA
        assert job.aspect == "1:1"  # v6: an old job's frames were square
        assert await store.queue_position(1) == 1  # v4 counted the job already waiting
        assert await store.enqueue(new_job(1), caps=caps(1)) == Refused("queued_per_user", 1)
        assert (await store.claim("w", lease_seconds=30, max_running_per_user=1, max_attempts=3)).id == 1
        await store.renew_lease(1, "w", 30, status_ref="42:7")
        assert (await store.get_job(1)).status_ref == "42:7"
    finally:
        await store.close()


async def test_a_commit_that_fails_leaves_no_transaction_open_for_the_next_write(store):
    alice, _ = await add_user(store, "alice"), await add_user(store, "bob")
    # a write statement left open on the connection (a RETURNING cursor not read to its end) holds
    # every COMMIT back, even across a ROLLBACK, until the cursor is closed
    await store._conn.execute("BEGIN IMMEDIATE")
    held = await store._conn.execute("UPDATE users SET refusals = refusals RETURNING id")
    await store._conn.execute("ROLLBACK")
    with pytest.raises(sqlite3.OperationalError, match="SQL statements in progress"):
        await store.count_refusal(alice)
    await held.close()
    await store.count_refusal(alice)  # the failed write was rolled back: no transaction is left open
    assert (await store.user_by_id(alice)).refusals == 1


def chat_job(user_id: int, chat: str, kind: str = "story", renders: int = 18) -> NewJob:
    return NewJob(user_id=user_id, platform="console", chat_id=chat, language="en", kind=kind,
                  story="Aldar Kose rides", mode="simple", frames=6, seed=1, renders=renders)


async def test_sql_queue_positions_agree_with_the_replayed_round_robin(store):
    """Random submits, claims, cancels, releases and bans: every queued job's position in SQL is
    its place in the order the pure replay predicts."""
    rng = random.Random(3)
    users = [await add_user(store, f"u{i}") for i in range(6)]
    running: list[int] = []
    for step in range(120):
        action = rng.random()
        if action < 0.55:
            await store.enqueue(new_job(rng.choice(users)), caps=caps(50))
        elif action < 0.75:
            job = await store.claim("w", lease_seconds=60, max_running_per_user=50, max_attempts=3)
            if job is not None:
                running.append(job.id)
        elif action < 0.85 and running:
            await store.release(running.pop(rng.randrange(len(running))), "w")
        elif action < 0.95:
            queued = [e.job_id for e in await store.queued_entries()]
            if queued:
                await store.request_cancel(rng.choice(queued))
        else:
            await store.set_banned(rng.choice(users), True, None)
        predicted = round_robin_order(await store.queued_entries())
        assert await store.count_queued() == len(predicted)
        positions = [await store.queue_position(job_id) for job_id in predicted]
        assert positions == list(range(1, len(predicted) + 1)), f"step {step}"
    assert await store.queue_position(running[0] if running else 10_000) is None


async def test_the_global_cap_counts_every_users_waiting_jobs(store):
    users = [await add_user(store, f"u{i}") for i in range(4)]
    outcomes = [await store.enqueue(new_job(users[i % 4]), caps=caps(5, total=6)) for i in range(10)]
    assert sum(isinstance(o, int) for o in outcomes) == 6
    assert outcomes[6:] == [Refused("queued_total", 6)] * 4
    await store.claim("w", lease_seconds=60, max_running_per_user=5, max_attempts=3)
    assert isinstance(await store.enqueue(new_job(users[0]), caps=caps(5, total=6)), int)  # a slot freed


async def test_the_per_chat_cap_counts_every_member(store):
    alice, bob = await add_user(store, "alice"), await add_user(store, "bob")
    assert isinstance(await store.enqueue(chat_job(alice, "group"), caps=caps(per_chat=2)), int)
    assert isinstance(await store.enqueue(chat_job(bob, "group"), caps=caps(per_chat=2)), int)
    assert await store.enqueue(chat_job(bob, "group"), caps=caps(per_chat=2)) == Refused("queued_per_chat", 2)
    assert isinstance(await store.enqueue(chat_job(bob, "elsewhere"), caps=caps(per_chat=2)), int)


async def test_the_daily_quota_is_a_rolling_day_and_says_when_a_slot_frees(tmp_path):
    clock = Clock(100_000.0)
    store = await Store.open(tmp_path / "day.sqlite3", clock=clock)
    try:
        alice = await add_user(store, "alice")
        for _ in range(3):
            assert isinstance(await store.enqueue(new_job(alice), caps=caps(per_day=3, since=clock.now - 86_400)), int)
            clock.now += 600
        refused = await store.enqueue(new_job(alice), caps=caps(per_day=3, since=clock.now - 86_400))
        assert refused == Refused("jobs_per_day", 3, retry_at=100_000.0 + 86_400)
        clock.now = 100_000.0 + 86_400 + 1  # the first job left the window
        assert isinstance(await store.enqueue(new_job(alice), caps=caps(per_day=3, since=clock.now - 86_400)), int)
    finally:
        await store.close()


async def test_the_regeneration_budget_counts_worst_case_renders_of_regenerations_only(store):
    alice = await add_user(store, "alice")
    budget = caps(per_user=None, regen_renders=40)
    assert isinstance(await store.enqueue(chat_job(alice, "c", "story", renders=36), caps=budget), int)
    assert isinstance(await store.enqueue(chat_job(alice, "c", "regen_board", renders=36), caps=budget), int)
    refused = await store.enqueue(chat_job(alice, "c", "regen_board", renders=36), caps=budget)
    assert refused == Refused("regen_renders_per_day", 40, used=36, cost=36)
    assert isinstance(await store.enqueue(chat_job(alice, "c", "regen_frame", renders=3), caps=budget), int)
