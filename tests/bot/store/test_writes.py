"""What writes to SQLite and what does not: a command that only looks writes nothing, an idle
worker poll writes nothing, and an accepted /story costs one write transaction (user row and
job together). Writes are counted at ``Store._write``, the one door every write goes through."""

from __future__ import annotations

import contextlib

import pytest

from bot.service import StoryOptions, StoryRequest
from bot.store.store import Store
from tests.helpers import ALICE, RecordingGateway, db_rows


@pytest.fixture
def writes(monkeypatch):
    """The number of write transactions opened so far, as a one-item list."""
    tally = [0]
    original = Store._write

    def counted(self):
        tally[0] += 1
        return original(self)

    monkeypatch.setattr(Store, "_write", counted)
    return tally


async def test_a_new_users_first_story_is_one_write_and_makes_their_row(rig_factory, writes):
    rig = await rig_factory()
    before = writes[0]
    submitted = await rig.service.submit(StoryRequest(ALICE, "Aldar Kose rides to the bazaar", StoryOptions(frames=2)))
    assert writes[0] - before == 1
    assert await db_rows(rig.config, "SELECT platform_user_id, display_name, jobs_submitted FROM users") == [
        (ALICE.user_id, ALICE.display_name, 1)]
    assert await db_rows(rig.config, "SELECT id, user_id, status FROM jobs") == [(submitted.job_id, 1, "queued")]
    await rig.store.close()


async def test_looking_writes_nothing_not_even_a_users_row(rig_factory, writes):
    rig = await rig_factory()
    before = writes[0]
    with contextlib.suppress(Exception):  # a stranger has no jobs: /status says so
        await rig.service.status(ALICE)
    stats = await rig.service.mystats(ALICE)
    assert "0" in stats.text
    assert writes[0] == before
    assert await db_rows(rig.config, "SELECT COUNT(*) FROM users") == [(0,)]
    await rig.store.close()


async def test_an_existing_users_status_and_stats_write_nothing(rig_factory, writes):
    rig = await rig_factory()
    job_id = await rig.submit(frames=2)
    seen = await db_rows(rig.config, "SELECT last_seen FROM users")
    before = writes[0]
    assert (await rig.service.status(ALICE, job_id)).job.id == job_id
    await rig.service.mystats(ALICE)
    assert writes[0] == before
    assert await db_rows(rig.config, "SELECT last_seen FROM users") == seen
    await rig.store.close()


async def test_idle_polls_write_nothing(rig_factory, writes):
    rig = await rig_factory()
    before = writes[0]
    for _ in range(5):
        assert not await rig.worker.run_once()
    assert writes[0] == before
    await rig.store.close()


async def test_a_refused_story_from_a_new_user_still_counts_the_refusal(rig_factory, writes):
    rig = await rig_factory(story={"banned_terms": ["dragon"]})
    with pytest.raises(Exception, match="err_banned_terms"):
        await rig.service.submit(StoryRequest(ALICE, "Aldar Kose rides a dragon", StoryOptions()))
    assert await db_rows(rig.config, "SELECT platform_user_id, refusals FROM users") == [(ALICE.user_id, 1)]
    assert await db_rows(rig.config, "SELECT COUNT(*) FROM jobs") == [(0,)]
    await rig.store.close()


class RowReadingGateway(RecordingGateway):
    """Also reads the job row's status_ref as each progress note goes out."""

    def __init__(self) -> None:
        super().__init__()
        self.store: Store | None = None
        self.persisted: list[str | None] = []

    async def notify(self, update) -> None:
        await super().notify(update)
        self.persisted.append((await self.store.get_job(update.job_id)).status_ref)


async def test_the_status_message_reaches_the_worker_in_memory_and_the_job_row_with_a_heartbeat(rig_factory):
    gateway = RowReadingGateway()
    rig = await rig_factory(gateway=gateway, engine={"preview_delay_s": 0.3}, queue={"cancel_poll_s": 0.05})
    gateway.store = rig.store
    job_id = await rig.submit(frames=3)
    rig.service.set_status_ref(job_id, "chat-a:77")
    await rig.worker.run(burst=True)
    assert {u.status_ref for u in rig.gateway.updates} == {"chat-a:77"}  # every progress note edits that message
    assert gateway.persisted[0] is None and gateway.persisted[-1] == "chat-a:77"  # a restart would find it
    assert rig.gateway.deliveries[0].status_ref == "chat-a:77"
    assert await db_rows(rig.config, f"SELECT status_ref FROM jobs WHERE id = {job_id}") == [(None,)]  # delivered
    assert rig.service.status_refs.get(job_id) is None
    await rig.store.close()


async def test_a_finished_board_is_posted_from_memory_and_a_retried_one_from_the_store(rig_factory, monkeypatch):
    rig = await rig_factory(gateway=RecordingGateway(fail_deliveries=1))
    await rig.submit(frames=2)
    reads: list[str] = []
    for name in ("frames", "user_by_id", "delivery_for"):
        original = getattr(Store, name)

        async def spy(self, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return await _original(self, *args, **kwargs)

        monkeypatch.setattr(Store, name, spy)
    await rig.worker.run(burst=True)  # the first post fails: the chat is down
    assert reads == [] and rig.gateway.deliveries == []
    await rig.worker.deliver_pending()  # the retry has only the store to go by
    [posted] = rig.gateway.deliveries
    assert [p.name for p in posted.frame_paths] == ["frame_01.png", "frame_02.png"]
    assert posted.owner_id == ALICE.user_id and posted.text.startswith("✅ Job #1 is done")
    assert sorted(set(reads)) == ["frames", "user_by_id"]
    await rig.store.close()
