"""Scale-out through arq on a real redis-server: the bot host keeps SQLite, ``python -m bot worker``
processes draw the boards (preview frames with a simulated GPU delay per frame)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from PIL import Image

from bot.messages import text
from bot.service import Requester, StoryOptions, StoryRequest
from tests.helpers import ALICE, BOB, WORKER_STORY
from tests.round_robin import round_robin_order
from tests.scale.conftest import running_bot
from tests.scale_harness import scale_config, wait_until

CAROL = Requester(platform="test", user_id="carol", chat_id="chat-c")


async def submit(bot, who: Requester, frames: int, seed: int) -> int:
    submitted = await bot.app.service.submit(StoryRequest(who, WORKER_STORY, StoryOptions(frames=frames, seed=seed)))
    return submitted.job_id


def report_of(job) -> dict:
    return json.loads(Path(job.report_path).read_text(encoding="utf-8"))


async def run_ten_jobs(tmp_path, redis_server, start_worker, **arq) -> tuple:
    """10 jobs from 3 users on two workers; returns the jobs, their claim order, the fair order and the peak
    number of jobs in flight at once."""
    config_path = scale_config(tmp_path, redis_server.url, frame_delay_s=0.15, arq=arq)
    start_worker("gpu-a", config_path)
    start_worker("gpu-b", config_path)
    async with running_bot(config_path) as bot:
        await bot.wait_for_workers(2)
        plan = [ALICE] * 4 + [BOB] * 3 + [CAROL] * 3
        job_ids = [await submit(bot, who, frames=2, seed=i) for i, who in enumerate(plan)]
        fair_order = round_robin_order(await bot.app.store.queued_entries())
        peak = 0

        async def watch_in_flight() -> None:
            nonlocal peak
            while True:
                peak = max(peak, bot.app.worker.in_flight)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch_in_flight())
        bot.start_worker_loop()
        await bot.wait_for_status(job_ids, "done")
        await wait_until(lambda: len(bot.gateway.deliveries) >= len(job_ids), 10, "every board posted")
        watcher.cancel()
        jobs = [await bot.job(j) for j in job_ids]
    return bot, jobs, fair_order, peak


async def test_ten_jobs_from_three_users_spread_over_two_workers_in_fair_order(tmp_path, redis_server, start_worker):
    bot, jobs, fair_order, peak = await run_ten_jobs(tmp_path, redis_server, start_worker)

    job_ids = [job.id for job in jobs]
    assert sorted(d.job_id for d in bot.gateway.deliveries) == job_ids  # each board posted once
    for delivery in bot.gateway.deliveries:
        with Image.open(delivery.grid_path) as grid:
            assert grid.width > 96 and grid.height > 96
        assert len(delivery.frame_paths) == 2 and all(p.is_file() for p in delivery.frame_paths)
    drawn_by = {report_of(job)["worker"]["name"] for job in jobs}
    assert drawn_by == {"gpu-a", "gpu-b"}
    assert peak == 2  # max_in_flight = 0: as many at once as there are live workers
    assert bot.claimed == fair_order  # fairness between users is what one local worker gives
    assert all(bot.updates(j, "rendering") for j in job_ids)  # progress came back through Redis


async def test_max_in_flight_caps_the_jobs_sent_to_redis(tmp_path, redis_server, start_worker):
    bot, jobs, fair_order, peak = await run_ten_jobs(tmp_path, redis_server, start_worker, max_in_flight=1)

    assert peak == 1
    assert [job.status for job in jobs] == ["done"] * 10
    assert bot.claimed == fair_order


async def test_a_worker_killed_mid_job_leaves_it_to_the_other_and_it_is_posted_once(
        tmp_path, redis_server, start_worker):
    config_path = scale_config(tmp_path, redis_server.url, frame_delay_s=0.4)
    workers = {name: start_worker(name, config_path) for name in ("gpu-a", "gpu-b")}
    async with running_bot(config_path) as bot:
        await bot.wait_for_workers(2)
        job_id = await submit(bot, ALICE, frames=4, seed=7)
        bot.start_worker_loop()

        def holder() -> str | None:
            return next((n for n, w in workers.items() if "try 1 on" in w.log_text()), None)

        victim = await wait_until(holder, 30, "a worker to take the job")
        await bot.wait_for_frame(job_id, 2)
        workers[victim].kill()
        await bot.wait_for_status([job_id], "done")
        await wait_until(lambda: bot.gateway.deliveries, 10, "the board to be posted")
        await asyncio.sleep(0.5)  # a second post, if there were one, would come now
        job = await bot.job(job_id)

    survivor = next(name for name in workers if name != victim)
    assert [d.job_id for d in bot.gateway.deliveries] == [job_id]
    assert report_of(job)["worker"] == {"name": survivor, "try": 2}
    assert len(report_of(job)["frames"]) == 4
    assert "try 2 on" in workers[survivor].log_text()
    assert job.attempts == 1  # one SQLite claim: the retry happened between the workers


async def test_jobs_wait_in_sqlite_while_redis_is_down_and_finish_when_it_returns(
        tmp_path, redis_server, start_worker):
    config_path = scale_config(tmp_path, redis_server.url, frame_delay_s=0.05)
    worker = start_worker("gpu-a", config_path)
    async with running_bot(config_path) as bot:
        await bot.wait_for_workers(1)
        bot.start_worker_loop()
        redis_server.stop()
        job_ids = [await submit(bot, ALICE, frames=2, seed=1), await submit(bot, BOB, frames=2, seed=2)]

        waiting = text("engine_unavailable", "en", job=job_ids[0])
        await wait_until(lambda: all(bot.updates(j, "waiting") for j in job_ids), 15, "the waiting notes")
        await asyncio.sleep(1.0)  # long enough for a claim, were the worker wrongly claiming
        assert [(await bot.job(j)).status for j in job_ids] == ["queued", "queued"]
        assert bot.claimed == []

        redis_server.start()
        await bot.wait_for_status(job_ids, "done", timeout=60)
        await wait_until(lambda: len(bot.gateway.deliveries) == 2, 10, "both boards posted")

    assert bot.updates(job_ids[0], "waiting")[0].text == waiting
    assert "the drawing engine is unavailable" in waiting
    assert sorted(d.job_id for d in bot.gateway.deliveries) == job_ids
    assert worker.process.poll() is None  # the worker waited the outage out
    assert "Redis is back" in worker.log_text()


async def test_cancel_stops_a_running_remote_job_within_a_step(tmp_path, redis_server, start_worker):
    config_path = scale_config(tmp_path, redis_server.url, frame_delay_s=0.4)
    worker = start_worker("gpu-a", config_path)
    async with running_bot(config_path) as bot:
        await bot.wait_for_workers(1)
        job_id = await submit(bot, ALICE, frames=8, seed=3)
        bot.start_worker_loop()
        await bot.wait_for_frame(job_id, 2)
        await bot.app.service.cancel(ALICE, job_id)
        drawn_at_cancel = max(u.frame or 0 for u in bot.updates(job_id, "rendering"))
        await bot.wait_for_status([job_id], "cancelled", timeout=20)
        await wait_until(lambda: "aborted" in worker.log_text(), 10, "the worker to report the abort")

        after = await submit(bot, BOB, frames=1, seed=4)  # the worker is free again
        await bot.wait_for_status([after], "done", timeout=30)

    last_frame = max(u.frame or 0 for u in bot.updates(job_id, "rendering"))
    assert last_frame <= drawn_at_cancel + 1  # it stopped at the next step, not at the end of the board
    assert bot.updates(job_id, "cancelled")[-1].text == text("job_cancelled", "en", job=job_id)
    assert [d.job_id for d in bot.gateway.deliveries] == [after]


async def test_a_result_over_the_bound_fails_the_job_cleanly_on_either_side(tmp_path, redis_server, start_worker):
    tiny = {"max_result_mb": 0.005}  # 5 KB: smaller than any board
    strict_worker = scale_config(tmp_path, redis_server.url, frame_delay_s=0.0, name="worker-strict.toml",
                                 arq={**tiny, "queue_name": "strict"})
    strict_bot = scale_config(tmp_path, redis_server.url, frame_delay_s=0.0, name="bot-strict.toml",
                              arq={**tiny, "queue_name": "lenient"})
    lenient_worker = scale_config(tmp_path, redis_server.url, frame_delay_s=0.0, name="worker-lenient.toml",
                                  arq={"queue_name": "lenient"})
    start_worker("strict", strict_worker)
    start_worker("lenient", lenient_worker)
    outcomes = {}
    for name, bot_config in (("worker refuses", strict_worker), ("bot refuses", strict_bot)):
        async with running_bot(bot_config) as bot:
            await bot.wait_for_workers(1)
            job_id = await submit(bot, ALICE, frames=2, seed=5)
            bot.start_worker_loop()
            await bot.wait_for_status([job_id], "failed", timeout=30)
            outcomes[name] = (await bot.job(job_id), bot.updates(job_id, "failed"), list(bot.gateway.deliveries))

    for name, (job, failed, deliveries) in outcomes.items():
        assert job.error_type == "ResultTooLarge", name
        assert "([arq] max_result_mb)" in job.error_message and "over the limit of 5.1 KB" in job.error_message
        assert failed and job.error_message in failed[-1].text  # the user is told why
        assert deliveries == []
