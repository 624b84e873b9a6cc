"""The service: input checks, moderation, bans, quotas, roles, languages, user tracking.

Everything runs on a real SQLite store; assertions are on the reply a user would read
and on the rows in the database.
"""

from __future__ import annotations

import re
import string

import pytest

from bot.errors import BadRequest, RetryLater
from bot.messages import CATALOGUE, LANGS, resolve_language, text
from bot.service import Requester, StoryOptions, StoryRequest, StoryService
from bot.store.store import Store
from engine.rendering.base import ModeOff

ALICE = Requester(platform="console", user_id="alice", chat_id="c1", display_name="Alice")
BOB = Requester(platform="console", user_id="bob", chat_id="c2", display_name="Bob")
MOD = Requester(platform="console", user_id="local", chat_id="c3", display_name="Mod")
STORY = "Aldar Kose tricks a greedy merchant at the bazaar."


@pytest.fixture
async def service(make_config, tmp_path):
    config = make_config(story={"banned_terms": ["darkword", "bad phrase"]}, queue={"max_queued_per_user": 3})
    store = await Store.open(config.storage.database)
    yield StoryService(store, config)
    await store.close()


async def submit(service, who=ALICE, story=STORY, **options):
    return await service.submit(StoryRequest(who, story, StoryOptions(**options)))


@pytest.mark.parametrize(
    ("story", "key"),
    [
        ("", "err_empty"),
        ("   \n\t  ", "err_empty"),
        ("a" * 20_000, "err_too_long"),
        ("😀🐎🏜️ 🎉", "err_no_letters"),
        ("12345 !!! ???", "err_no_letters"),
        ("Aldar\x00Kose rides\x1b[31m", "err_control_chars"),
    ],
)
async def test_bad_stories_get_a_clear_reply_and_leave_no_row(service, story, key):
    with pytest.raises(BadRequest) as err:
        await submit(service, story=story)
    assert err.value.key == key
    reply = err.value.message("en")
    assert reply and "Traceback" not in reply and "{" not in reply
    assert await service.store.count_jobs() == 0


async def test_too_long_reply_states_the_limit(service):
    with pytest.raises(BadRequest) as err:
        await submit(service, story="a" * 20_000)
    assert "20000" in err.value.message("en") and "2000" in err.value.message("en")


async def test_a_good_story_is_written_before_it_is_acknowledged(service):
    submitted = await submit(service, seed=7)
    job = await service.store.get_job(submitted.job_id)
    assert (job.status, job.story, job.seed, job.frames, job.mode) == ("queued", STORY, 7, 8, "simple")
    assert submitted.position == 1
    assert f"#{submitted.job_id}" in submitted.text and "position 1" in submitted.text


@pytest.mark.parametrize(
    "story",
    [
        "Aldar meets the DARKWORD merchant",
        "Aldar meets the dark\u200bword merchant",  # zero-width space inside
        "Aldar meets the ｄａｒｋｗｏｒｄ merchant",  # full-width letters (NFKC)
        "a BAD   PHRASE here",
    ],
)
async def test_banned_terms_are_refused_and_counted(service, story):
    with pytest.raises(BadRequest) as err:
        await submit(service, story=story)
    assert err.value.key == "err_banned_terms"
    user = await service.store.get_user("console", "alice")
    assert user.refusals == 1
    assert await service.store.count_jobs() == 0


async def test_a_banned_term_inside_a_longer_word_is_not_a_match(service):
    assert (await submit(service, story="The darkwordsmith sings")).job_id


@pytest.mark.parametrize(
    ("options", "option"),
    [({"mode": "fast"}, "--mode"), ({"frames": 0}, "--frames"), ({"frames": 13}, "--frames"), ({"seed": -1}, "--seed")],
)
async def test_bad_options_name_the_option(service, options, option):
    with pytest.raises(BadRequest) as err:
        await submit(service, **options)
    assert option in err.value.message("en")


async def test_queue_limit_refuses_with_a_clear_reply(service):
    for _ in range(3):
        await submit(service)
    with pytest.raises(RetryLater) as err:
        await submit(service)
    assert "3" in err.value.message("en")
    assert await service.store.count_jobs() == 3


async def test_only_the_author_or_a_moderator_may_cancel(service):
    job_id = (await submit(service)).job_id
    with pytest.raises(BadRequest) as err:
        await service.cancel(BOB, job_id)
    assert err.value.key == "err_forbidden"
    reply = await service.cancel(MOD, job_id)
    assert reply == text("job_cancelled", "en", job=job_id)
    assert (await service.store.get_job(job_id)).status == "cancelled"
    with pytest.raises(BadRequest, match="err_not_cancellable"):
        await service.cancel(ALICE, job_id)


async def test_status_shows_queue_position_round_robin(service):
    a1 = (await submit(service)).job_id
    a2 = (await submit(service)).job_id
    b1 = (await submit(service, who=BOB)).job_id
    assert (await service.status(ALICE, a1)).position == 1
    assert (await service.status(BOB, b1)).position == 2  # B goes before A's second job
    assert (await service.status(ALICE, a2)).position == 3
    latest = await service.status(ALICE)
    assert latest.job.id == a2 and "position 3" in latest.text
    with pytest.raises(BadRequest, match="err_forbidden"):
        await service.status(BOB, a1)
    with pytest.raises(BadRequest, match="err_not_found"):
        await service.status(ALICE, 999)


async def test_ban_needs_a_moderator_and_stops_the_user(service):
    await submit(service)
    with pytest.raises(BadRequest, match="err_moderators_only"):
        await service.ban(BOB, "console", "alice")
    reply = await service.ban(MOD, "console", "alice", "spam")
    assert "console:alice" in reply and "1" in reply
    with pytest.raises(BadRequest, match="err_user_banned"):
        await submit(service)
    user = await service.store.get_user("console", "alice")
    assert (user.banned, user.refusals) == (True, 1)
    await service.unban(MOD, "console", "alice")
    assert (await submit(service)).job_id


async def test_regenerate_needs_a_finished_board(service):
    job_id = (await submit(service)).job_id
    with pytest.raises(BadRequest, match="err_not_done"):
        await service.regenerate(ALICE, job_id)
    with pytest.raises(BadRequest, match="err_forbidden"):
        await service.regenerate(BOB, job_id, 2)


async def test_replies_follow_the_users_locale(service):
    ru = Requester(platform="telegram", user_id="1", chat_id="1", locale="ru-RU")
    kk = Requester(platform="telegram", user_id="2", chat_id="2", locale="kk")
    de = Requester(platform="telegram", user_id="3", chat_id="3", locale="de")
    assert "Задача" in (await submit(service, who=ru)).text
    assert "тапсырма" in (await submit(service, who=kk)).text
    assert "Job" in (await submit(service, who=de)).text
    with pytest.raises(BadRequest) as err:
        await submit(service, who=kk, story="")
    assert err.value.message((await service.store.get_user("telegram", "2")).locale) == CATALOGUE["err_empty"]["kk"]


async def test_mystats_tracks_the_user(service):
    await submit(service)
    with pytest.raises(BadRequest):
        await submit(service, story="darkword")
    stats = await service.mystats(ALICE)
    assert (stats.user.jobs_submitted, stats.user.refusals, stats.queued, stats.remaining) == (1, 1, 1, 2)
    assert stats.user.first_seen <= stats.user.last_seen
    assert "1" in stats.text and "2" in stats.text


def test_every_reply_exists_in_all_languages_with_the_same_placeholders():
    for key, entry in CATALOGUE.items():
        assert set(entry) == set(LANGS), key
        fields = {lang: {f for _, f, _, _ in string.Formatter().parse(entry[lang]) if f} for lang in LANGS}
        assert fields["ru"] == fields["en"] == fields["kk"], key


def test_kazakh_replies_use_kazakh_letters():
    kazakh = re.compile("[әғқңөұүһі]")
    assert sum(bool(kazakh.search(entry["kk"])) for entry in CATALOGUE.values()) > len(CATALOGUE) // 2


@pytest.mark.parametrize(
    ("locale", "lang"), [("ru", "ru"), ("ru-RU", "ru"), ("kk_KZ", "kk"), ("en-GB", "en"), ("fr", "en"), (None, "en")]
)
def test_resolve_language(locale, lang):
    assert resolve_language(locale) == lang


async def test_a_redelivered_chat_message_is_one_job_not_two(make_config):
    from bot.service import StoryOptions, StoryRequest, StoryService
    from bot.store.store import Store
    from tests.helpers import ALICE, WORKER_STORY, db_rows

    config = make_config()
    store = await Store.open(config.storage.database)
    try:
        service = StoryService(store, config)
        first = await service.submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions(), source_ref="55:1001"))
        again = await service.submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions(), source_ref="55:1001"))
        other = await service.submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions(), source_ref="55:1002"))
        plain = await service.submit(StoryRequest(ALICE, WORKER_STORY, StoryOptions()))
    finally:
        await store.close()
    assert again.job_id == first.job_id and again.text == first.text
    assert len({first.job_id, other.job_id, plain.job_id}) == 3
    assert await db_rows(config, "SELECT id, source_ref FROM jobs ORDER BY id") == [
        (first.job_id, "55:1001"), (other.job_id, "55:1002"), (plain.job_id, None)]


# -- render modes the engine cannot draw -------------------------------------------------------------

MISSING = {"ref-guided": ModeOff("ref-guided", weights="engine.controlnet = controlnet-openpose-sdxl-1.0")}


@pytest.fixture
async def simple_only(make_config):
    """A bot whose SDXL engine has no ref-guided weights (engine.ref_guided = "auto", offline)."""
    config = make_config()
    store = await Store.open(config.storage.database)
    yield StoryService(store, config, modes_off=MISSING)
    await store.close()


async def test_a_mode_whose_weights_are_missing_is_refused_at_once_naming_them(simple_only):
    with pytest.raises(BadRequest) as err:
        await submit(simple_only, mode="ref-guided")
    assert err.value.message("en") == (
        "The ref-guided mode is not available on this bot: its weights did not load "
        "(engine.controlnet = controlnet-openpose-sdxl-1.0). Please use the simple mode.")
    assert "engine.controlnet" in err.value.message("kk")
    assert await simple_only.store.count_jobs() == 0
    assert (await submit(simple_only, mode="simple")).job_id


async def test_a_mode_switched_off_in_config_says_so(make_config):
    config = make_config(story={"default_mode": "ref-guided"})
    store = await Store.open(config.storage.database)
    service = StoryService(store, config, modes_off={"ref-guided": ModeOff("ref-guided")})
    with pytest.raises(BadRequest) as err:
        await submit(service)  # the server's default mode counts as asked for
    assert err.value.message("en") == "The ref-guided mode is switched off on this bot. Please use the simple mode."
    await store.close()


async def test_regenerating_a_board_in_a_mode_now_missing_is_refused(simple_only, make_config):
    before = StoryService(simple_only.store, make_config())  # the same database, when ref-guided still loaded
    job_id = (await submit(before, mode="ref-guided")).job_id
    job = await simple_only.store.claim("w", lease_seconds=60, max_running_per_user=1, max_attempts=3)
    assert job.id == job_id
    await simple_only.store.finish(job_id, "w", title="t", grid_path="g.png", report_path="r.json", frames=[])
    with pytest.raises(BadRequest, match="err_mode_weights_missing"):
        await simple_only.regenerate(ALICE, job_id)
    assert await simple_only.store.count_jobs() == 1


# -- moderation that survives Unicode (engine/moderation.py) -------------------------------------


@pytest.fixture
async def guarded(make_config):
    config = make_config(story={"banned_terms": ["kill", "вор", "кара"]})
    store = await Store.open(config.storage.database)
    yield StoryService(store, config)
    await store.close()


@pytest.mark.parametrize(
    "story",
    [
        "Aldar Kose will k\u2064ill the greedy bai.",  # invisible plus
        "Aldar Kose will k\u034fill the greedy bai.",  # combining grapheme joiner
        "Aldar Kose will ki\u180ell the greedy bai.",  # Mongolian vowel separator
        "Aldar Kose will kil\u200el the greedy bai.",  # left-to-right mark
        "Aldar Kose will k\u0456ll the greedy bai.",  # Cyrillic і
        "Бай кричит: в\u006fр! Алдар смеётся.",  # вор with a Latin o
        "Aldar Kose will k i l l the greedy bai.",
        "Aldar Kose will k-i-l-l the greedy bai.",
        "Aldar Kose will kill\u0301 the greedy bai.",  # combining acute
    ],
)
async def test_a_banned_term_hidden_by_unicode_is_still_refused_and_counted(guarded, story):
    with pytest.raises(BadRequest) as err:
        await submit(guarded, story=story)
    assert err.value.key == "err_banned_terms"
    assert err.value.message("en") == text("err_banned_terms", "en")
    assert (await guarded.store.get_user("console", "alice")).refusals == 1
    assert await guarded.store.count_jobs() == 0


@pytest.mark.parametrize(
    "story",
    [
        "Aldar Kose showed his skill at the bazaar. I like ill kings, said the killer of boredom.",
        "Воробей сел на ворота, и бай заговорил с Алдаром о вороне.",
        "Алдар Көсе қара атқа мініп, Шығай байға барды.",
        "Алдар Көсе көлге барды, ал бай қорада қалды.",
    ],
)
async def test_ordinary_stories_with_words_near_a_banned_term_are_accepted(guarded, story):
    job = await guarded.store.get_job((await submit(guarded, story=story)).job_id)
    assert job.story == story
    assert (await guarded.store.get_user("console", "alice")).refusals == 0


def test_the_sample_stories_pass_the_banned_terms(make_config, stories):
    from bot.service import StoryRules

    rules = StoryRules(make_config(story={"banned_terms": ["kill", "вор", "кара", "ұры", "өлтір"]}).story)
    for story in stories.values():
        assert rules.check_text(story) == story


async def test_bidi_controls_are_removed_from_the_story_at_the_door(guarded):
    story = "\u202eAldar Kose\u202c tricks the \u2066bai\u2069.\u200f Алдар\u061c смеётся."
    job = await guarded.store.get_job((await submit(guarded, story=story)).job_id)
    assert job.story == "Aldar Kose tricks the bai. Алдар смеётся."
