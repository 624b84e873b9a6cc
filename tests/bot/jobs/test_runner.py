"""The worker on a real store and a real engine (preview renderer), in burst mode.

The chat side is a recording ``ChatGateway``: the worker's own protocol, so the
assertions are on what a chat would have been sent and on the rows in SQLite.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from engine.build import build_engine
from engine.limits import frame_size
from engine.planning.offline.planner import OfflinePlanner
from engine.storyboard import StoryEngine
from tests.helpers import ALICE, BOB, RecordingGateway, loop_lag_while

STORY = "Aldar Kose tricks a greedy merchant at the bazaar. He rides away across the steppe at sunset."


class ExplodingPlanner(OfflinePlanner):
    """Fails on stories that mention 'explode', to show a failing job does not stop the worker."""

    def plan(self, story, *, shots=None, seed=0):
        if "explode" in story:
            raise RuntimeError("planner exploded")
        return super().plan(story, shots=shots, seed=seed)


async def close(rig):
    await rig.store.close()


async def test_a_job_is_drawn_stored_and_delivered_once(rig_factory):
    rig = await rig_factory()
    job_id = await rig.submit(frames=6, seed=3)
    assert await rig.worker.run(burst=True) == 1

    job = await rig.store.get_job(job_id)
    assert job.status == "done" and job.title
    [delivery] = rig.gateway.deliveries
    assert delivery.job_id == job_id and delivery.chat_id == "chat-a"
    assert delivery.grid_path.is_file() and delivery.report_path.is_file()
    assert [p.name for p in delivery.frame_paths] == [f"frame_{i:02d}.png" for i in range(1, 7)]
    assert f"#{job_id}" in delivery.text
    assert (await rig.store.delivery_for(job_id)).status == "sent"
    assert (await rig.store.user_by_id(job.user_id)).boards_delivered == 1
    frames = await rig.store.frames(job_id)
    assert [f.seed for f in frames] == [(3 + i * 7919) % 2**32 for i in range(1, 7)]
    await close(rig)


async def test_progress_goes_to_the_owning_chat_in_order(rig_factory):
    rig = await rig_factory()
    job_id = await rig.submit(frames=3)
    await rig.worker.run(burst=True)
    stages = [(u.stage, u.frame) for u in rig.gateway.updates]
    assert stages == [
        ("planning", None),
        ("rendering", 1), ("validating", 1),
        ("rendering", 2), ("validating", 2),
        ("rendering", 3), ("validating", 3),
        ("composing", None),
    ]
    assert all(u.job_id == job_id and u.chat_id == "chat-a" for u in rig.gateway.updates)
    assert rig.gateway.updates[1].text == f"🎨 Job #{job_id}: drawing frame 1 of 3…"
    await close(rig)


async def test_a_failing_job_is_recorded_and_the_worker_moves_on(make_config, rig_factory):
    config = make_config()
    engine = build_engine(config.engine_settings())
    broken = StoryEngine(planner=ExplodingPlanner(config.planner), renderer=engine.renderer,
                         validator=engine.validator, settings=engine.settings)
    rig = await rig_factory(story_engine=broken)
    bad = await rig.submit(story="Aldar Kose watches the pot explode")
    good = await rig.submit(who=BOB)
    assert await rig.worker.run(burst=True) == 2

    failed = await rig.store.get_job(bad)
    assert (failed.status, failed.error_type, failed.error_message) == ("failed", "RuntimeError", "planner exploded")
    [note] = [u for u in rig.gateway.updates if u.stage == "failed"]
    assert note.chat_id == "chat-a" and f"#{bad}" in note.text and "RuntimeError" in note.text
    assert "Traceback" not in note.text
    assert (await rig.store.get_job(good)).status == "done"
    assert [d.job_id for d in rig.gateway.deliveries] == [good]
    await close(rig)


async def test_the_event_loop_stays_responsive_while_a_board_renders(rig_factory):
    delay = 0.3  # per frame, on the engine thread
    rig = await rig_factory(engine={"width": 256, "height": 256, "preview_delay_s": delay})
    await rig.submit(frames=4)
    lags, elapsed = await loop_lag_while(rig.worker.run(burst=True), interval=0.01)

    assert elapsed >= 4 * delay  # the render really ran while we probed
    assert len(lags) > 50
    # A blocked loop would show a lag of at least one frame's delay (0.3 s).
    assert max(lags) < delay / 2, f"max lag {max(lags):.3f}s, median {statistics.median(lags):.4f}s"
    await close(rig)


async def test_cancel_stops_a_running_job_at_the_next_frame(rig_factory):
    rig = await rig_factory(engine={"preview_delay_s": 0.25}, queue={"lease_seconds": 1.0})
    job_id = await rig.submit(frames=8)
    worker_task = asyncio.create_task(rig.worker.run(burst=True))
    while not any(u.stage == "rendering" for u in rig.gateway.updates):
        await asyncio.sleep(0.02)
    reply = await rig.service.cancel(ALICE, job_id)
    assert "will stop" in reply
    await asyncio.wait_for(worker_task, timeout=10)

    job = await rig.store.get_job(job_id)
    assert (job.status, job.error_type) == ("cancelled", "Cancelled")
    assert rig.gateway.deliveries == []
    assert rig.gateway.updates[-1].stage == "cancelled"
    drawn = {u.frame for u in rig.gateway.updates if u.stage == "rendering"}
    assert len(drawn) < 8
    await close(rig)


async def test_regenerating_one_frame_keeps_the_others(rig_factory):
    rig = await rig_factory()
    parent = await rig.submit(frames=6, seed=11)
    await rig.worker.run(burst=True)
    child = (await rig.service.regenerate(ALICE, parent, frame=3)).job_id
    await rig.worker.run(burst=True)

    parent_job, child_job = await rig.store.get_job(parent), await rig.store.get_job(child)
    assert (child_job.kind, child_job.parent_id, child_job.redo_frame, child_job.status) == (
        "regen_frame", parent, 3, "done")
    old, new = await rig.store.frames(parent), await rig.store.frames(child)
    assert [f.seed for f in old if f.idx != 3] == [f.seed for f in new if f.idx != 3]
    assert old[2].seed != new[2].seed
    for before, after in zip(old, new, strict=True):
        diff = ImageChops.difference(Image.open(before.path).convert("RGB"), Image.open(after.path).convert("RGB"))
        assert (diff.getbbox() is None) == (before.idx != 3), before.idx
    assert parent_job.grid_path != child_job.grid_path
    assert [d.job_id for d in rig.gateway.deliveries] == [parent, child]
    await close(rig)


async def test_regenerating_the_whole_board_uses_a_new_seed(rig_factory):
    rig = await rig_factory()
    parent = await rig.submit(frames=6, seed=11)
    await rig.worker.run(burst=True)
    child = (await rig.service.regenerate(ALICE, parent)).job_id
    await rig.worker.run(burst=True)
    job = await rig.store.get_job(child)
    assert (job.kind, job.status, job.frames) == ("regen_board", "done", 6)
    assert job.seed != 11
    await close(rig)


async def test_shutdown_returns_the_job_and_a_restart_resumes_its_frames(rig_factory):
    rig = await rig_factory(engine={"preview_delay_s": 0.15})
    job_id = await rig.submit(frames=6)
    worker_task = asyncio.create_task(rig.worker.run())
    while sum(u.stage == "validating" for u in rig.gateway.updates) < 2:
        await asyncio.sleep(0.02)
    rig.worker.request_shutdown()
    await asyncio.wait_for(worker_task, timeout=10)
    assert (await rig.store.get_job(job_id)).status == "queued"

    restarted = rig.new_worker(rig.engine)
    await restarted.run(burst=True)
    job = await rig.store.get_job(job_id)
    assert (job.status, job.attempts) == ("done", 2)
    report = json.loads(Path(job.report_path).read_text(encoding="utf-8"))
    reused = [f["index"] for f in report["frames"] if f["reused"]]
    assert len(reused) >= 2 and reused == list(range(1, len(reused) + 1))
    assert len(rig.gateway.deliveries) == 1
    await close(rig)


async def test_an_undelivered_result_is_posted_once_after_a_restart(rig_factory):
    gateway = RecordingGateway(fail_deliveries=1)
    rig = await rig_factory(gateway=gateway)
    job_id = await rig.submit(frames=2)
    await rig.worker.run(burst=True)
    assert gateway.deliveries == []
    assert (await rig.store.delivery_for(job_id)).status == "pending"

    await rig.worker.start_up()  # what a restarted bot does first
    await rig.worker.start_up()
    assert [d.job_id for d in gateway.deliveries] == [job_id]
    assert (await rig.store.delivery_for(job_id)).status == "sent"
    await close(rig)


class DiesMidSend(RecordingGateway):
    """Posts the board, then the process 'dies' before the bot hears back (kill -9 mid-send)."""

    async def deliver(self, delivery):
        await super().deliver(delivery)
        raise asyncio.CancelledError  # nothing after the post runs: no mark, no error record


async def test_a_delivery_cut_off_mid_send_is_counted_said_and_posted_again(rig_factory, caplog):
    gateway = DiesMidSend()
    rig = await rig_factory(gateway=gateway)
    job_id = await rig.submit(frames=2)
    with pytest.raises(asyncio.CancelledError):
        await rig.worker.run_once()
    delivery = await rig.store.delivery_for(job_id)
    assert delivery.status == "pending" and delivery.sending_since is not None

    restarted = RecordingGateway()
    rig.gateway = restarted  # the process that starts next, with its own connection to the chat
    rig.worker = rig.new_worker(rig.engine)
    with caplog.at_level(logging.WARNING, logger="bot.jobs.delivery"):
        await rig.worker.start_up()
    delivery = await rig.store.delivery_for(job_id)
    assert delivery.status == "sent" and delivery.interrupted == 1 and delivery.sending_since is None
    assert [d.job_id for d in restarted.deliveries] == [job_id]
    assert "cut off mid-send; posting again" in caplog.text
    assert rig.worker.metrics.interrupted._value.get() == 1
    await close(rig)


async def test_a_plain_undelivered_result_is_not_called_interrupted(rig_factory):
    rig = await rig_factory(gateway=RecordingGateway(fail_deliveries=1))
    job_id = await rig.submit(frames=2)
    await rig.worker.run(burst=True)
    await rig.worker.start_up()
    assert (await rig.store.delivery_for(job_id)).interrupted == 0
    await close(rig)


class HeldGateway(RecordingGateway):
    """Holds every post until released, like a slow chat server."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    async def deliver(self, delivery):
        self.entered.set()
        await self.release.wait()
        await super().deliver(delivery)


async def test_an_idle_retry_never_posts_a_board_that_its_job_is_still_posting(rig_factory):
    gateway = HeldGateway()
    rig = await rig_factory(gateway=gateway)
    job_id = await rig.submit(frames=2)
    job_task = asyncio.create_task(rig.worker.run_once())
    await asyncio.wait_for(gateway.entered.wait(), timeout=30)
    # what the idle loop does every queue.delivery_retry_s; a second post would wait on the held chat
    retry = asyncio.create_task(rig.worker.deliver_pending())
    await asyncio.wait({retry}, timeout=2)
    gateway.release.set()
    await asyncio.wait_for(retry, timeout=30)
    await asyncio.wait_for(job_task, timeout=30)
    assert [d.job_id for d in gateway.deliveries] == [job_id]
    delivery = await rig.store.delivery_for(job_id)
    assert (delivery.status, delivery.interrupted) == ("sent", 0)
    await close(rig)


async def test_two_retries_at_once_post_a_waiting_board_once(rig_factory):
    gateway = RecordingGateway(fail_deliveries=1)
    rig = await rig_factory(gateway=gateway)
    job_id = await rig.submit(frames=2)
    await rig.worker.run(burst=True)  # the first post fails: the board waits
    await asyncio.gather(rig.worker.deliver_pending(), rig.worker.deliver_pending())
    assert [d.job_id for d in gateway.deliveries] == [job_id]
    assert (await rig.store.delivery_for(job_id)).status == "sent"
    await close(rig)


async def test_the_bot_builds_its_engine_on_the_thread_that_renders(make_config, monkeypatch):
    """A compiled UNet's warm-up records CUDA graphs per thread: it must happen where boards are drawn,
    not on the event loop (which is not held while models load, either)."""
    import threading

    import bot.app
    from bot.app import open_app

    built_on: list[str] = []

    def recording_build(*args, **kwargs):
        built_on.append(threading.current_thread().name)
        return build_engine(*args, **kwargs)

    monkeypatch.setattr(bot.app, "build_engine", recording_build)
    async with open_app(make_config()) as app:
        drawn_on = await asyncio.get_running_loop().run_in_executor(app.executor,
                                                                    lambda: threading.current_thread().name)
    assert built_on == [drawn_on] and drawn_on.startswith("engine")


async def test_a_wide_board_and_its_regenerated_frame_keep_the_boards_shape(rig_factory):
    rig = await rig_factory(story={"default_aspect": "9:16"})
    parent = await rig.submit(frames=4, seed=5, aspect="16:9")
    default = await rig.submit(frames=1, seed=5)
    await rig.worker.run(burst=True)
    child = (await rig.service.regenerate(ALICE, parent, frame=2)).job_id
    await rig.worker.run(burst=True)
    sizes = {job: {Image.open(f.path).size for f in await rig.store.frames(job)} for job in (parent, default, child)}
    wide, tall = frame_size("16:9", 128 * 128), frame_size("9:16", 128 * 128)
    assert sizes == {parent: {wide}, default: {tall}, child: {wide}}
    report = json.loads(Path((await rig.store.get_job(child)).report_path).read_text(encoding="utf-8"))
    assert report["aspect"] == "16:9"
    await close(rig)
