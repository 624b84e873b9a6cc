"""Cost limits (bot/quotas.py) and board access, through the service on a real SQLite store.

Assertions are on the reply a user reads and the rows written: every platform submits through
this service, so these are the limits a Telegram group or a Discord guild meets.
"""

from __future__ import annotations

import pytest

from bot.errors import BadRequest, RetryLater
from bot.messages import text
from bot.service import Requester, StoryOptions, StoryRequest, StoryService
from bot.store.records import FrameRow
from bot.store.store import Store

STORY = "Aldar Kose tricks a greedy merchant at the bazaar."
MOD = Requester(platform="telegram", user_id="1", chat_id="group")  # a moderator in the config below
ALICE = Requester(platform="telegram", user_id="100", chat_id="group")
BOB = Requester(platform="telegram", user_id="200", chat_id="group")  # in Alice's group
STRANGER = Requester(platform="telegram", user_id="300", chat_id="elsewhere")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def open_service(make_config, clock):
    opened: list[Store] = []

    async def _open(**queue) -> StoryService:
        config = make_config(queue=queue, roles={"moderators": ["telegram:1"]})
        store = await Store.open(config.storage.database, clock=clock)
        opened.append(store)
        return StoryService(store, config)

    yield _open
    for store in opened:
        await store.close()


async def submit(service: StoryService, who: Requester, **options):
    return await service.submit(StoryRequest(who, STORY, StoryOptions(**options)))


async def refusal(call) -> RetryLater:
    with pytest.raises(RetryLater) as err:
        await call
    return err.value


async def finished_board(service: StoryService, who: Requester, frames: int = 12) -> int:
    job_id = (await submit(service, who, frames=frames)).job_id
    job = await service.store.claim("w", lease_seconds=60, max_running_per_user=5, max_attempts=3)
    assert job.id == job_id
    rows = [FrameRow(idx=i, path=f"/srv/out/job/frame_{i:02d}.png", seed=i, prompt="p", attempts=1, identity=0.9,
                     accepted=True) for i in range(1, frames + 1)]
    await service.store.finish(job_id, "w", title="The merchant", grid_path="/srv/out/job/grid.jpg",
                               report_path="/srv/out/job/report.json", frames=rows)
    return job_id


async def test_a_thousand_jobs_from_two_hundred_accounts_stop_at_the_global_cap(open_service):
    service = await open_service()  # the defaults: 200 waiting in all, 5 per user
    replies = []
    for account in range(200):
        who = Requester(platform="telegram", user_id=str(1000 + account), chat_id=f"dm{account}")
        for _ in range(5):
            try:
                replies.append((await submit(service, who)).text)
            except RetryLater as exc:
                replies.append(exc.message("en"))
    busy = text("err_queue_busy", "en", max=200)
    assert busy == "The queue is full right now (200 boards waiting). Please try again a little later."
    assert sum(reply.startswith("🧾") for reply in replies) == 200
    assert replies.count(busy) == 800
    assert await service.store.count_jobs(status="queued") == 200


async def test_one_chat_cannot_fill_the_queue_whoever_posts(open_service):
    service = await open_service(max_queued_per_chat=4)
    members = [Requester(platform="telegram", user_id=str(500 + i), chat_id="group") for i in range(5)]
    for who in members[:4]:
        await submit(service, who)
    refused = await refusal(submit(service, members[4]))
    assert refused.message("en") == ("This chat already has 4 boards waiting. "
                                     "Please wait for some of them to finish.")
    assert (await submit(service, STRANGER)).job_id  # another chat is not held back


async def test_the_daily_quota_says_when_the_next_board_may_be_asked(open_service, clock):
    service = await open_service(jobs_per_day=3, max_queued_per_user=10)
    for _ in range(3):
        await submit(service, ALICE)
        clock.now += 10 * 60
    refused = await refusal(submit(service, ALICE))
    # the first job, 30 min ago, leaves the 24-hour window in 23 h 30 min
    assert refused.message("en") == "You have used your 3 boards for the last 24 hours. Try again in 23 h 30 min."
    assert refused.message("ru").endswith("Попробуйте через 23 ч 30 мин.")
    clock.now += 23.5 * 3600
    assert (await submit(service, ALICE)).job_id
    user = await service.store.get_user("telegram", "100")
    assert user.jobs_submitted == 4


async def test_mystats_counts_what_is_left_under_every_cap_that_applies(open_service):
    service = await open_service(jobs_per_day=3, max_queued_per_user=10)
    await submit(service, ALICE)
    await submit(service, ALICE)
    stats = await service.mystats(ALICE)
    assert stats.text.endswith("waiting now: 2, you can queue 1 more.")  # the daily cap is the closest


async def test_moderators_skip_the_per_user_and_daily_caps_but_not_the_total(open_service):
    service = await open_service(max_queued_per_user=1, jobs_per_day=1, max_queued_total=3)
    for _ in range(3):
        await submit(service, MOD)
    assert (await refusal(submit(service, MOD))).key == "err_queue_busy"


async def test_without_the_exemption_a_moderator_meets_the_same_caps(open_service):
    service = await open_service(max_queued_per_user=1, moderators_exempt=False)
    await submit(service, MOD)
    assert (await refusal(submit(service, MOD))).message("en") == text("err_queue_full", "en", max=1)


async def test_regenerations_spend_a_daily_render_budget_counted_at_worst(open_service):
    service = await open_service(regen_renders_per_day=100)
    board = await finished_board(service, ALICE)  # 12 frames × (1 + 2 re-rolls) = 36 renders a regeneration
    await service.regenerate(ALICE, board)
    await service.regenerate(ALICE, board)
    refused = await refusal(service.regenerate(ALICE, board))
    assert refused.message("en") == ("Your regenerations in the last 24 hours have used 72 of 100 renders, and "
                                     "this one may take up to 36. Try a single frame, or try again later.")
    assert (await service.regenerate(ALICE, board, 3)).job_id  # one frame costs 3
    regens = await service.store._run("SELECT kind, renders FROM jobs WHERE parent_id = ? ORDER BY id", (board,))
    assert [tuple(row) for row in regens] == [("regen_board", 36), ("regen_board", 36), ("regen_frame", 3)]


async def test_a_stranger_cannot_open_a_board_from_another_chat(open_service):
    service = await open_service()
    board = await finished_board(service, ALICE)
    with pytest.raises(BadRequest) as err:
        await service.board(STRANGER, board)
    assert err.value.message("en") == (f"Job #{board} belongs to another chat; only its author or a moderator "
                                       "can open it here.")
    assert (await service.board(BOB, board)).job.id == board  # the chat it was posted to may
    assert (await service.board(MOD, board)).job.id == board


async def test_re_sends_wait_a_cooldown_per_user_except_for_moderators(open_service, clock):
    service = await open_service(resend_cooldown_s=60)
    board = await finished_board(service, ALICE)
    await service.resend_board(ALICE, board)
    clock.now += 15
    refused = await refusal(service.resend_board(ALICE, board))
    assert refused.message("en") == "I have just sent you full-resolution files. You can ask again in 45 s."
    assert (await service.resend_board(BOB, board)).job.id == board  # the cooldown is each user's own
    clock.now += 45
    assert (await service.resend_board(ALICE, board)).job.id == board
    for _ in range(3):
        await service.resend_board(MOD, board)


async def test_status_names_the_job_and_never_a_server_path(open_service):
    service = await open_service()
    board = await finished_board(service, ALICE)
    view = await service.status(ALICE, board)
    assert f"#{board}" in view.text and "The merchant" in view.text
    assert "/srv" not in view.text and "grid.jpg" not in view.text


async def test_regenerating_checks_the_story_against_todays_banned_terms(make_config, clock):
    config = make_config(roles={"moderators": ["telegram:1"]})
    store = await Store.open(config.storage.database, clock=clock)
    try:
        board = await finished_board(StoryService(store, config), ALICE)
        stricter = StoryService(store, make_config(story={"banned_terms": ["merchant"]}))
        with pytest.raises(BadRequest, match="err_banned_terms"):
            await stricter.regenerate(ALICE, board)
        assert await store.count_jobs() == 1
    finally:
        await store.close()


async def test_the_moderators_queue_overview_fits_one_chat_message(open_service):
    service = await open_service()
    for account in range(40):
        who = Requester(platform="telegram", user_id=str(2000 + account), chat_id=f"dm{account}")
        for _ in range(5):
            await submit(service, who)
    overview = await service.queue_overview(MOD)
    lines = overview.splitlines()
    assert lines[0] == "📋 200 job(s) waiting or running:" and lines[-1] == "… and 170 more."
    assert len(lines) == 32 and len(overview) < 4096
    assert lines[1].startswith("#1 telegram:2000: queued, position 1")
