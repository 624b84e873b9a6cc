"""What the bot keeps on disk (bot/ops/storage.py): boards expire after keep_days, a short disk stops
new work and says so, a moderator can delete a board on request. Real SQLite, real folders."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from bot.app import _start_health, open_app
from bot.errors import BadRequest
from bot.messages import text
from bot.ops.storage import Retention
from bot.service import Requester, StoryOptions, StoryRequest, StoryService
from bot.store.records import FrameRow
from bot.store.store import Store
from tests.bot.ops.test_observability import scrape

DAY = 86_400.0
MOD = Requester(platform="console", user_id="local", chat_id="c")  # the default moderator
ALICE = Requester(platform="console", user_id="alice", chat_id="c")
STORY = "Aldar Kose tricks a greedy merchant at the bazaar."


class Clock:
    def __init__(self) -> None:
        self.now = time.time()  # near the files' own clock: stray folders are judged by mtime

    def __call__(self) -> float:
        return self.now


async def drawn_board(service: StoryService, who: Requester = ALICE, *, delivered: bool = True) -> int:
    """A finished job with its folder of files, as the worker leaves it."""
    job_id = (await service.submit(StoryRequest(who, STORY, StoryOptions(frames=2)))).job_id
    job = await service.store.claim("w", lease_seconds=60, max_running_per_user=9, max_attempts=3)
    assert job.id == job_id
    folder = service.config.storage.outputs / f"job-{job_id:06d}"
    folder.mkdir(parents=True)
    for name in ("frame_01.png", "frame_02.png", "grid.jpg", "report.json"):
        (folder / name).write_bytes(b"x" * 1000)
    rows = [FrameRow(idx=i, path=str(folder / f"frame_{i:02d}.png"), seed=i, prompt="p", attempts=1, identity=0.9,
                     accepted=True) for i in (1, 2)]
    await service.store.finish(job_id, "w", title="t", grid_path=str(folder / "grid.jpg"),
                               report_path=str(folder / "report.json"), frames=rows)
    if delivered:
        delivery = await service.store.delivery_for(job_id)
        await service.store.mark_delivered(delivery.id)
    return job_id


@pytest.fixture
async def aged(make_config):
    """A service whose store runs on a clock the test moves; keep_days = 30."""
    clock = Clock()
    config = make_config(storage={"keep_days": 30})
    store = await Store.open(config.storage.database, clock=clock)
    yield StoryService(store, config), clock
    await store.close()


async def test_boards_older_than_keep_days_go_with_their_rows_and_folders(aged):
    service, clock = aged
    old = await drawn_board(service)
    waiting = await drawn_board(service, delivered=False)  # its post is still pending: kept
    regenerated = await drawn_board(service)
    child = (await service.regenerate(ALICE, regenerated)).job_id  # queued: its parent is kept
    clock.now += 31 * DAY
    fresh = await drawn_board(service, MOD)
    outputs = service.config.storage.outputs

    removed = await Retention(service.store, service.config.storage).sweep()

    assert removed == 1
    assert await service.store.get_job(old) is None and await service.store.frames(old) == []
    assert not (outputs / f"job-{old:06d}").exists()
    for kept in (waiting, regenerated, child, fresh):
        assert await service.store.get_job(kept) is not None
    assert (outputs / f"job-{fresh:06d}" / "grid.jpg").is_file()
    assert await service.store._scalar("PRAGMA freelist_count") == 0  # vacuumed after the deletes
    with pytest.raises(BadRequest, match="err_not_found"):
        await service.status(ALICE, old)


async def test_idle_users_go_but_a_ban_outlives_the_rows(aged):
    service, clock = aged
    await service.store.touch_user("console", "quiet", "Quiet", None)
    await service.ban(MOD, "console", "troll")
    clock.now += 31 * DAY
    await Retention(service.store, service.config.storage).sweep()
    assert await service.store.get_user("console", "quiet") is None
    assert (await service.store.get_user("console", "troll")).banned


async def test_stray_job_folders_are_swept_but_a_folder_the_user_named_never_is(aged, tmp_path):
    service, clock = aged
    outputs = service.config.storage.outputs
    stray = outputs / "job-000099"  # a crash between deleting the row and the folder
    stray.mkdir(parents=True)
    (stray / "grid.jpg").write_bytes(b"x")
    long_ago = clock.now - 40 * DAY
    os.utime(stray, (long_ago, long_ago))
    mine = tmp_path / "my-boards"
    job_id = (await service.submit(StoryRequest(ALICE, STORY, StoryOptions(frames=2), out_dir=mine))).job_id
    await service.store.claim("w", lease_seconds=60, max_running_per_user=9, max_attempts=3)
    mine.mkdir()
    (mine / "grid.jpg").write_bytes(b"x")
    await service.store.finish(job_id, "w", title="t", grid_path=str(mine / "grid.jpg"),
                               report_path=str(mine / "report.json"), frames=[])
    await service.store.mark_delivered((await service.store.delivery_for(job_id)).id)
    clock.now += 31 * DAY

    await Retention(service.store, service.config.storage).sweep()

    assert not stray.exists()
    assert await service.store.get_job(job_id) is None  # the row expires like any other
    assert (mine / "grid.jpg").is_file()  # the CLI's folder is the user's


async def test_keep_days_zero_keeps_everything(make_config):
    config = make_config(storage={"keep_days": 0})
    clock = Clock()
    store = await Store.open(config.storage.database, clock=clock)
    try:
        service = StoryService(store, config)
        job_id = await drawn_board(service)
        clock.now += 3650 * DAY
        assert await Retention(store, config.storage).sweep() == 0
        assert await store.get_job(job_id) is not None
    finally:
        await store.close()


async def test_the_idle_worker_sweeps_on_its_own(make_config):
    config = make_config(storage={"keep_days": 0.00001})  # about a second
    async with open_app(config) as app:
        job_id = await drawn_board(app.service)
        folder = config.storage.outputs / f"job-{job_id:06d}"
        await asyncio.sleep(1.0)
        stop = asyncio.Event()
        running = asyncio.create_task(app.worker.run(stop))
        for _ in range(100):
            if not folder.exists():
                break
            await asyncio.sleep(0.05)
        stop.set()
        await running
        assert not folder.exists() and await app.store.get_job(job_id) is None


async def test_a_short_disk_claims_nothing_and_every_reply_says_why(make_config):
    config = make_config(storage={"min_free_mb": 10_000_000}, observability={"port": 0})  # 10 TB free: never
    async with open_app(config) as app:
        submitted = await app.service.submit(StoryRequest(ALICE, STORY, StoryOptions(frames=2)))
        assert await app.worker.run_once() is False  # nothing claimed
        status = await app.service.status(ALICE)
        overview = await app.service.queue_overview(MOD)
        server = await _start_health(app)
        try:
            code, body = await scrape(server.port, "/healthz")
        finally:
            await server.stop()
    paused = text("queue_paused_disk", "en")
    assert submitted.text.endswith("\n" + paused) and status.text.endswith("\n" + paused)
    assert overview.endswith("\n" + paused)
    assert status.job.status == "queued"
    disk = json.loads(body)["disk"]
    assert code == 503 and disk["ok"] is False and "under [storage] min_free_mb = 10000000" in disk["error"]


async def test_a_moderator_purges_a_board_on_request(aged):
    service, _ = aged
    job_id = await drawn_board(service)
    folder = service.config.storage.outputs / f"job-{job_id:06d}"
    with pytest.raises(BadRequest, match="err_moderators_only"):
        await service.purge(ALICE, job_id)
    active = (await service.submit(StoryRequest(ALICE, STORY))).job_id
    with pytest.raises(BadRequest) as err:
        await service.purge(MOD, active)
    assert err.value.message("en") == f"Job #{active} is still queued or running; cancel it first, then purge it."

    reply = await service.purge(MOD, job_id)

    assert reply == f"🗑 Job #{job_id} is deleted: its board, frames and records."
    assert not folder.exists() and await service.store.get_job(job_id) is None
    assert await service.store.delivery_for(job_id) is None
    with pytest.raises(BadRequest, match="err_not_found"):
        await service.purge(MOD, job_id)



async def test_a_character_picture_goes_once_no_job_names_it(aged):
    from bot.pictures import Upload

    service, clock = aged
    pictures = service.config.storage.outputs / "pictures"

    async def picture_job(colour) -> int:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
        return (await service.submit(StoryRequest(ALICE, STORY, picture=Upload.of_bytes(buffer.getvalue())))).job_id

    kept = await service.store.get_job(await picture_job((255, 0, 0)))
    purged = await service.store.get_job(await picture_job((0, 255, 0)))
    await service.store.delete_jobs([purged.id])  # its row is gone, as after a /purge or expiry
    stray = pictures / ("0" * 32 + ".png")  # stored for a /story that was then refused (a cap)
    stray.write_bytes(Path(kept.character_image).read_bytes())
    just_now = pictures / ("1" * 32 + ".png")  # a /story being queued at this moment
    just_now.write_bytes(stray.read_bytes())
    an_hour_ago = clock.now - 3601
    for path in (Path(kept.character_image), Path(purged.character_image), stray):
        os.utime(path, (an_hour_ago, an_hour_ago))

    await Retention(service.store, service.config.storage).sweep()

    assert sorted(pictures.iterdir()) == sorted([Path(kept.character_image), just_now])
