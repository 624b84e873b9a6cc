"""The Telegram adapter end to end: the real python-telegram-bot against a local fake Bot API,
inside the real composition root (``run_bot``) with the real service, queue, worker and engine."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from adapters.telegram_bot import Button, _media_groups
from bot.errors import BadRequest
from tests.helpers import bot_running as running
from tests.helpers import count_panels, db_rows

ALICE, BOB, MOD = 1001, 1002, 1003
GROUP = -100777


def story(fake, text, *, user=ALICE, chat=None, **kw):
    return fake.send_message(text, chat_id=chat or user, user_id=user, **kw)


def texts(message) -> list[str]:
    """Every text a message has shown, first to last (edits included)."""
    return [h.get("text") or "" for h in message.history] + [message.text or ""]


def photos(fake, chat):
    return [m for m in fake.messages(chat) if m.kind == "photo"]




async def test_story_is_acknowledged_tracked_and_posted_as_a_photo_with_buttons(fake, tg_config):
    config = tg_config(engine={"preview_delay_s": 0.1})
    async with running(config):
        story(fake, "/story Aldar Kose tricks a greedy merchant at the bazaar --frames 6 --seed 3")
        await fake.wait_for(lambda f: photos(f, ALICE))
        await fake.wait_for(lambda f: any("is done" in (m.text or "") for m in f.messages(ALICE)))

    ack = next(m for m in fake.messages(ALICE) if m.kind == "text")
    assert texts(ack)[0].startswith("🧾 Job #1 is queued, position 1")  # the immediate reply
    assert any("drawing frame" in t for t in texts(ack))  # then edited as the job moved
    assert ack.text.startswith("✅ Job #1 is done")
    [photo] = photos(fake, ALICE)
    image = Image.open(io.BytesIO(photo.photo_bytes))
    assert len(photo.photo_bytes) <= 10_000_000 and sum(image.size) <= 10_000
    posted = config.storage.outputs / "posted.png"
    posted.write_bytes(photo.photo_bytes)
    assert count_panels(posted) == (3, 2)
    assert "Job #1" in photo.caption and len(photo.caption) <= 1024
    assert photo.callback_data == ["r:1", "f:1", "d:1", "p:1", "v:1"]
    assert all(len(d.encode()) <= 64 for d in photo.callback_data)
    assert await db_rows(config, "SELECT status FROM deliveries") == [("sent",)]


async def test_regenerate_buttons_check_permissions_on_the_server(fake, tg_config):
    config = tg_config()
    async with running(config):
        story(fake, "/story Aldar Kose rides to the yurt --frames 6")
        board = await fake.wait_for(lambda f: photos(f, ALICE) and photos(f, ALICE)[0])

        owner = fake.press_button("r:1", message=board, user_id=ALICE)
        await fake.wait_for(lambda f: f.answered(owner))
        stranger = fake.press_button("r:1", message=board, user_id=BOB)
        await fake.wait_for(lambda f: f.answered(stranger))
        moderator = fake.press_button("r:1", message=board, user_id=MOD)
        await fake.wait_for(lambda f: f.answered(moderator))
        await fake.wait_for(lambda f: len(photos(f, ALICE)) == 3)

    assert "Job #2 is queued" in fake.answered(owner)["text"]
    assert fake.answered(stranger) == {**fake.answered(stranger), "show_alert": True}
    assert "Only the author of job #1 or a moderator" in fake.answered(stranger)["text"]
    assert "Job #3 is queued" in fake.answered(moderator)["text"]
    assert await db_rows(config, "SELECT id, kind, parent_id FROM jobs ORDER BY id") == [
        (1, "story", None), (2, "regen_board", 1), (3, "regen_board", 1)]


async def test_redo_one_frame_changes_only_its_seed(fake, tg_config):
    config = tg_config()
    async with running(config):
        story(fake, "/story Aldar Kose tricks the bai and rides away --frames 6")
        board = await fake.wait_for(lambda f: photos(f, ALICE) and photos(f, ALICE)[0])
        opened = fake.press_button("f:1", message=board, user_id=ALICE)
        await fake.wait_for(lambda f: f.answered(opened))
        await fake.wait_for(lambda f: "f:1:3" in f.message(ALICE, board.message_id).callback_data)
        assert fake.message(ALICE, board.message_id).callback_data == [
            "f:1:1", "f:1:2", "f:1:3", "f:1:4", "f:1:5", "f:1:6", "b:1"]
        redo = fake.press_button("f:1:3", message=fake.message(ALICE, board.message_id), user_id=ALICE)
        await fake.wait_for(lambda f: f.answered(redo))
        await fake.wait_for(lambda f: len(photos(f, ALICE)) == 2)

    reports = [json.loads(Path(p).read_text(encoding="utf-8"))
               for (p,) in await db_rows(config, "SELECT report_path FROM jobs ORDER BY id")]
    before, after = ([f["seed"] for f in r["frames"]] for r in reports)
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True), 1) if a != b] == [3]


async def test_forged_buttons_get_an_alert_and_nothing_breaks(fake, tg_config):
    config = tg_config()
    async with running(config):
        story(fake, "/story Aldar Kose laughs at the bazaar --frames 2")
        board = await fake.wait_for(lambda f: photos(f, ALICE) and photos(f, ALICE)[0])
        forged = [fake.press_button(data, message=board, user_id=ALICE, check=False)
                  for data in ("r:99999", "garbage", "x" * 64, "f:1:99", "d:0")]
        await fake.wait_for(lambda f: all(f.answered(q) for q in forged))
        ok = fake.press_button("d:1", message=board, user_id=ALICE)  # the bot still works
        await fake.wait_for(lambda f: f.answered(ok) and f.media_groups(ALICE))

    answers = [fake.answered(q) for q in forged]
    assert all(a["show_alert"] for a in answers)
    assert "There is no job #99999" in answers[0]["text"]
    assert answers[1]["text"] == answers[2]["text"] == "This button is not valid any more."
    assert "frame 99 does not exist" in answers[3]["text"]
    [album] = fake.media_groups(ALICE)
    assert [m.document_name for m in album] == ["frame_01.png", "frame_02.png"]
    assert fake.unanswered() == []


async def test_board_files_are_read_off_the_loop_and_titles_go_as_plain_text(fake, tg_config, loop_reads):
    config = tg_config()
    async with running(config):
        story(fake, "/story <b>Aldar</b> Kose *tricks* the merchant at the bazaar --frames 2")
        board = await fake.wait_for(lambda f: photos(f, ALICE) and photos(f, ALICE)[0])
        full = fake.press_button("d:1", message=board, user_id=ALICE)
        await fake.wait_for(lambda f: f.answered(full) and f.media_groups(ALICE))
    assert [name for name in loop_reads if name.endswith(".png")] == []  # the grid and frames: on a thread
    assert board.caption.startswith("<b>Aldar</b> Kose *tricks* the merchant")  # shown as written, not parsed
    assert [c.method for c in fake.calls if "parse_mode" in c.params] == []


async def test_anonymous_admins_and_channel_posters_are_asked_to_write_as_themselves(fake, tg_config):
    """Telegram names them GroupAnonymousBot / Channel_Bot, one id for everyone: no quota or ban
    could tell them apart, so nothing is queued for them and no user row is made."""
    config = tg_config()
    channel = -1001234567
    async with running(config):
        for sender in (GROUP, channel):
            story(fake, "/story Aldar Kose tricks a greedy merchant", user=BOB, chat=GROUP, chat_type="supergroup",
                  sender_chat=sender)
        story(fake, "/story Aldar Kose tricks a greedy merchant --frames 2", user=ALICE, chat=GROUP,
              chat_type="supergroup")
        await fake.wait_for(lambda f: len([m for m in f.messages(GROUP) if m.kind == "text"]) >= 3)
    refusal = "Please write as yourself, not anonymously or as a channel: limits and bans here are per person."
    replies = [texts(m)[0] for m in fake.messages(GROUP) if m.kind == "text"]  # as first sent
    assert replies[:2] == [refusal, refusal] and replies[2].startswith("🧾 Job #1 is queued")
    assert await db_rows(config, "SELECT platform, platform_user_id FROM users") == [("telegram", str(ALICE))]
    assert await db_rows(config, "SELECT id, chat_id FROM jobs") == [(1, str(GROUP))]


async def test_full_resolution_presses_by_group_members_wait_a_cooldown_each(fake, tg_config):
    """Each press uploads every frame again; a member pressing again and again would use up the
    group's 20 posts a minute. One re-send per user per cooldown; other members keep theirs."""
    config = tg_config(queue={"resend_cooldown_s": 600})
    async with running(config):
        story(fake, "/story Aldar Kose laughs at the bazaar --frames 2", chat=GROUP, chat_type="supergroup")
        board = await fake.wait_for(lambda f: photos(f, GROUP) and photos(f, GROUP)[0])
        first = fake.press_button("d:1", message=board, user_id=BOB)
        await fake.wait_for(lambda f: f.answered(first) and f.media_groups(GROUP))
        again = fake.press_button("d:1", message=board, user_id=BOB)
        await fake.wait_for(lambda f: f.answered(again))
        owner = fake.press_button("d:1", message=board, user_id=ALICE)
        await fake.wait_for(lambda f: f.answered(owner) and len(f.media_groups(GROUP)) == 2)
    assert fake.answered(again)["show_alert"] is True
    assert fake.answered(again)["text"] == "I have just sent you full-resolution files. You can ask again in 600 s."
    assert len(fake.media_groups(GROUP)) == 2  # Bob's first press and Alice's, not Bob's second


async def test_bad_story_input_gets_a_clear_reply(fake, tg_config):
    config = tg_config()
    async with running(config):
        story(fake, "/story")
        story(fake, "/story " + "a" * 3000)
        await fake.wait_for(lambda f: len([m for m in f.messages(ALICE) if m.kind == "text"]) == 2)
    replies = [m.text for m in fake.messages(ALICE)]
    assert "Please write a story after /story" in replies[0]
    assert "the limit is 2000" in replies[1]
    assert await db_rows(config, "SELECT COUNT(*) FROM jobs") == [(0,)]


async def test_a_reply_with_just_story_uses_the_replied_text_and_groups_take_story_at_botname(fake, tg_config):
    config = tg_config()
    async with running(config):
        original = story(fake, "Aldar Kose sells a magic pot to the bai.", user=BOB, chat=GROUP, chat_type="supergroup")
        story(fake, "/story@AldarBot --frames 2", user=ALICE, chat=GROUP, chat_type="supergroup", reply_to=original)
        story(fake, "/story@OtherBot Aldar Kose sleeps", user=ALICE, chat=GROUP, chat_type="supergroup")
        await fake.wait_for(lambda f: photos(f, GROUP))
    assert await db_rows(config, "SELECT story, chat_id FROM jobs") == [
        ("Aldar Kose sells a magic pot to the bai.", str(GROUP))]


async def test_a_restart_posts_the_result_once_and_old_buttons_still_work(fake, tg_config):
    config = tg_config(engine={"preview_delay_s": 0.3})
    async with running(config):
        story(fake, "/story Aldar Kose rides to the bazaar --frames 2")
        first = await fake.wait_for(lambda f: photos(f, ALICE) and photos(f, ALICE)[0])
        story(fake, "/story Aldar Kose meets the bai in the steppe --frames 6")
        await fake.wait_for(lambda f: any("drawing frame 2 of 6" in t for m in f.messages(ALICE) for t in texts(m)))
    assert await db_rows(config, "SELECT id, status FROM jobs ORDER BY id") == [(1, "done"), (2, "queued")]

    async with running(config):
        await fake.wait_for(lambda f: len(photos(f, ALICE)) == 2, timeout=20)
        pressed = fake.press_button("r:1", message=first, user_id=ALICE)
        await fake.wait_for(lambda f: f.answered(pressed))
        await fake.wait_for(lambda f: len(photos(f, ALICE)) == 3, timeout=20)
    assert [p.caption.splitlines()[1].split(" · ")[0] for p in photos(fake, ALICE)] == ["Job #1", "Job #2", "Job #3"]
    assert await db_rows(config, "SELECT job_id, status FROM deliveries ORDER BY job_id") == [
        (1, "sent"), (2, "sent"), (3, "sent")]


async def test_telegram_is_told_an_update_is_handled_only_once_its_story_is_a_job(fake, tg_config):
    """Telegram never hands out a confirmed update again, and a crash can land at any moment: so
    every /story Telegram has been told is handled must already be a row in SQLite by then."""
    config = tg_config()
    sources = {}  # update id -> the source_ref its job is recognised by
    for n in range(12):
        message = story(fake, f"/story Aldar Kose meets traveller {n} on the steppe road --frames 1", user=2000 + n)
        sources[fake.pending_updates[-1]["update_id"]] = f"{message['chat']['id']}:{message['message_id']}"
    confirmed_without_a_job: list[str] = []

    def on_confirm(offset: int) -> None:  # runs as the confirming getUpdates arrives
        with sqlite3.connect(f"file:{config.storage.database}?mode=ro", uri=True) as db:
            jobs = {source for (source,) in db.execute("SELECT source_ref FROM jobs")}
        confirmed_without_a_job.extend(s for update, s in sources.items() if update < offset and s not in jobs)

    fake.on_confirm = on_confirm
    async with running(config):
        await fake.wait_for(lambda f: not f.pending_updates)
    assert confirmed_without_a_job == []
    assert len(await db_rows(config, "SELECT id FROM jobs")) == 12


async def test_a_429_on_send_photo_is_retried_and_the_photo_arrives(fake, tg_config, monkeypatch):
    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    config = tg_config()
    fake.fail_next("sendPhoto", status=429, retry_after=1)
    async with running(config):
        story(fake, "/story Aldar Kose laughs --frames 2")
        await fake.wait_for(lambda f: photos(f, ALICE), timeout=20)
    assert [c.status for c in fake.calls_to("sendPhoto")] == [429, 200]
    assert await db_rows(config, "SELECT status FROM deliveries") == [("sent",)]


async def test_moderator_commands(fake, tg_config):
    config = tg_config(engine={"preview_delay_s": 0.2})
    async with running(config):
        story(fake, "/story Aldar Kose tricks the merchant --frames 4", user=BOB)
        spam = story(fake, "/story Aldar Kose spams --frames 4", user=BOB)
        await fake.wait_for(lambda f: len(f.messages(BOB)) >= 2)
        story(fake, "/queue", user=MOD)
        story(fake, "/queue", user=ALICE)
        await fake.wait_for(lambda f: f.messages(MOD) and f.messages(ALICE))
        story(fake, "/ban", user=MOD, chat=BOB, reply_to=spam)
        await fake.wait_for(lambda f: any("is banned" in (m.text or "") for m in f.messages(BOB)))
        story(fake, "/story Aldar Kose again", user=BOB)
        await fake.wait_for(lambda f: any("You are banned" in (m.text or "") for m in f.messages(BOB)))
    queue = fake.messages(MOD)[0].text
    assert queue.startswith("📋 2 job(s)") and "telegram:1002" in queue and "#2" in queue
    assert fake.messages(ALICE)[0].text == "Only moderators can do that."


async def test_a_moderator_purges_a_board_and_its_files(fake, tg_config):
    config = tg_config()
    async with running(config):
        story(fake, "/story Aldar Kose tricks the merchant --frames 2", user=BOB)
        await fake.wait_for(lambda f: photos(f, BOB))
        [(folder,)] = await db_rows(config, "SELECT report_path FROM jobs")
        story(fake, "/purge 1", user=ALICE)
        story(fake, "/purge 1", user=MOD)
        await fake.wait_for(lambda f: f.messages(ALICE) and f.messages(MOD))
    assert fake.messages(ALICE)[0].text == "Only moderators can do that."
    assert fake.messages(MOD)[0].text == "🗑 Job #1 is deleted: its board, frames and records."
    assert await db_rows(config, "SELECT COUNT(*) FROM jobs") == [(0,)]
    assert not Path(folder).parent.exists()


def test_button_data_is_small_and_strict():
    assert Button("f", 123456789012, 12).encode() == "f:123456789012:12"
    assert Button.decode("f:12:3") == Button("f", 12, 3)
    for forged in ("", "r:", "r:0", "z:1", "r:1:2:3", "r:1;DROP", "r:" + "9" * 60):
        with pytest.raises(BadRequest):
            Button.decode(forged)


@pytest.mark.parametrize(("count", "sizes"), [(2, [2]), (10, [10]), (11, [9, 2]), (12, [10, 2])])
def test_media_groups_hold_two_to_ten(count, sizes, tmp_path):
    paths = tuple(tmp_path / f"{i}.png" for i in range(count))
    assert [len(g) for g in _media_groups(paths)] == sizes
