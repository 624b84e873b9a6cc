"""The Discord adapter end to end: the real discord.py against a local fake REST API + gateway,
inside the real composition root (``run_bot``) with the real service, queue, worker and engine."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from adapters.discord_bot import BOARD_TEMPLATE, StatusRef
from tests.adapters.discord.rig import TOKEN, boards, running
from tests.fakes.discord_server import CHANNEL_ID, MOD_ROLE_ID, FakeDiscord
from tests.helpers import count_panels, db_rows

ALICE, BOB, MOD = 5001, 5002, 5003


async def test_story_defers_then_edits_progress_then_posts_the_board(fake, dc_config, errors, tmp_path, loop_reads):
    config = dc_config(engine={"preview_delay_s": 0.1})
    async with running(config, fake):
        iid = await fake.slash("story", {"text": "Aldar Kose tricks a greedy merchant at the bazaar", "frames": 6,
                                         "seed": 5}, user_id=ALICE)
        await fake.wait_for(lambda f: boards(f), timeout=20)
    kind, _ = fake.callback(iid)
    assert kind == 5 and fake.callback_latency(iid) < 3.0  # deferred within Discord's 3 s
    original = fake.original(iid)
    history = [h.get("content") or "" for h in original.history] + [original.content or ""]
    assert any(t.startswith("🧾 Job #1 is queued, position 1") for t in history)
    assert any("drawing frame" in t for t in history)
    assert original.content.startswith("✅ Job #1 is done")
    [board] = boards(fake)
    grid = tmp_path / "posted.png"
    grid.write_bytes(next(v for k, v in board.files.items() if k.startswith("grid.")))
    assert count_panels(grid) == (3, 2)
    assert board.custom_ids == ["board:r:1", "board:p:1", "board:v:1"] + [f"board:f:1:{i}" for i in range(1, 7)]
    assert all(re.fullmatch(BOARD_TEMPLATE, c) and len(c) <= 100 for c in board.custom_ids)
    assert board.embeds[0]["title"] and any(f["name"] == "seed" and f["value"] == "5" for f in board.embeds[0]["fields"])
    assert await db_rows(config, "SELECT status FROM deliveries") == [("sent",)]
    assert await db_rows(config, "SELECT status_ref FROM jobs") == [(None,)]  # the interaction token is not kept
    assert [name for name in loop_reads if name.startswith("grid.")] == []  # the grid is read on a thread
    assert errors() == []


async def test_regenerate_permissions_and_per_frame_redo(fake, dc_config, errors):
    config = dc_config()
    async with running(config, fake):
        await fake.slash("story", {"text": "Aldar Kose rides to the yurt", "frames": 6}, user_id=ALICE)
        board = await fake.wait_for(lambda f: boards(f) and boards(f)[0])
        stranger = await fake.click("board:r:1", message_id=board.id, user_id=BOB)
        await fake.wait_for(lambda f: f.callback(stranger))
        owner = await fake.click("board:r:1", message_id=board.id, user_id=ALICE)
        moderator = await fake.click("board:r:1", message_id=board.id, user_id=MOD, roles=(MOD_ROLE_ID,))
        redo = await fake.click("board:f:1:3", message_id=board.id, user_id=ALICE)
        await fake.wait_for(lambda f: len(boards(f)) == 4, timeout=20)

    kind, data = fake.callback(stranger)
    assert (kind, data["flags"]) == (4, 64)  # an ephemeral refusal
    assert data["content"] == "Only the author of job #1 or a moderator can do that."
    assert all(fake.callback(i)[0] == 5 for i in (owner, moderator, redo))
    assert await db_rows(config, "SELECT id, kind, parent_id, redo_frame FROM jobs ORDER BY id") == [
        (1, "story", None, None), (2, "regen_board", 1, None), (3, "regen_board", 1, None), (4, "regen_frame", 1, 3)]
    reports = [json.loads(Path(p).read_text(encoding="utf-8"))
               for (p,) in await db_rows(config, "SELECT report_path FROM jobs WHERE id IN (1, 4) ORDER BY id")]
    before, after = ([f["seed"] for f in r["frames"]] for r in reports)
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True), 1) if a != b] == [3]
    assert errors() == []


async def test_stale_and_foreign_buttons_get_an_ephemeral_answer(fake, dc_config, errors, tmp_path):
    """Discord only delivers clicks on buttons a message really has; stale ones are those whose
    job is gone (here: a fresh database) or whose format is an older version's."""
    config = dc_config()
    async with running(config, fake):
        await fake.slash("story", {"text": "Aldar Kose laughs", "frames": 6}, user_id=ALICE)
        board = await fake.wait_for(lambda f: boards(f) and boards(f)[0])
    legacy = await post_message(fake, {"content": "a board from an older version", "components": [
        {"type": 1, "components": [{"type": 2, "style": 1, "label": "old", "custom_id": "legacy:regen:7"}]}]})

    wiped = dc_config(storage={"database": tmp_path / "fresh.sqlite3", "outputs": tmp_path / "fresh"})
    async with running(wiped, fake):
        clicks = [await fake.click("board:r:1", message_id=board.id, user_id=ALICE),
                  await fake.click("board:f:1:3", message_id=board.id, user_id=ALICE),
                  await fake.click("legacy:regen:7", message_id=legacy, user_id=ALICE)]
        await fake.wait_for(lambda f: all(f.callback(i) for i in clicks))
    answers = [json.dumps(fake.callback(i)[1], ensure_ascii=False) for i in clicks]
    assert all('"flags": 64' in a for a in answers)  # ephemeral
    assert "This board no longer exists." in answers[0] and "This board no longer exists." in answers[1]
    assert "This button is not valid any more." in answers[2]
    assert errors() == []


async def post_message(fake: FakeDiscord, payload: dict) -> int:
    """A message posted with the bot token, as an older version of the bot would have."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(
        f"{fake.api_base}/channels/{CHANNEL_ID}/messages", json=payload, headers={"Authorization": f"Bot {TOKEN}"}
    ) as response:
        return int((await response.json())["id"])


async def test_old_buttons_work_after_a_restart(fake, dc_config):
    config = dc_config()
    async with running(config, fake):
        await fake.slash("story", {"text": "Aldar Kose meets the bai", "frames": 6}, user_id=ALICE)
        board = await fake.wait_for(lambda f: boards(f) and boards(f)[0])
    async with running(config, fake):
        pressed = await fake.click("board:r:1", message_id=board.id, user_id=ALICE)
        await fake.wait_for(lambda f: f.callback(pressed) and len(boards(f)) == 2, timeout=20)
    assert await db_rows(config, "SELECT id, parent_id, status FROM jobs ORDER BY id") == [(1, None, "done"), (2, 1, "done")]


async def test_a_late_result_is_posted_in_the_channel_mentioning_the_author(fake, dc_config):
    config = dc_config(discord={"interaction_lifetime_s": 1.0}, engine={"preview_delay_s": 0.25})
    async with running(config, fake):
        iid = await fake.slash("story", {"text": "Aldar Kose rides away at sunset", "frames": 6}, user_id=ALICE)
        board = await fake.wait_for(lambda f: boards(f) and boards(f)[0], timeout=20)
    assert board.id not in [m.id for m in fake.followups(iid)]
    assert board.content.startswith(f"<@{ALICE}> ✅ Job #1 is done")


async def test_no_post_can_ping_a_crowd_and_a_late_one_pings_its_author_alone(fake, dc_config):
    """The offline planner keeps the story's first words as the title, @everyone and a role included."""
    config = dc_config(discord={"interaction_lifetime_s": 1.0}, engine={"preview_delay_s": 0.25})
    role = "<@&123456789012345678>"
    async with running(config, fake):
        await fake.slash("story", {"text": f"@everyone {role} @here Aldar Kose tricks a greedy merchant at the bazaar",
                                   "frames": 6}, user_id=ALICE)
        board = await fake.wait_for(lambda f: boards(f) and boards(f)[0], timeout=20)
    [late] = [c for c in fake.calls_to("POST", rf"/channels/{CHANNEL_ID}/messages") if c.status == 200]
    assert late.json["allowed_mentions"] == {"parse": [], "users": [ALICE]}
    assert board.content.startswith(f"<@{ALICE}> ✅ Job #1 is done: @\u200beveryone <@\u200b&123456789012345678> "
                                    "@\u200bhere Aldar Kose")
    assert "@everyone" not in board.content and role not in board.content
    assert "@everyone" not in board.embeds[0]["title"]
    sent = [c for c in fake.calls if isinstance(c.json, dict) and "content" in c.json and c is not late]
    assert sent and all(c.json["allowed_mentions"] == {"parse": []} for c in sent)  # replies and edits: nobody


async def test_heartbeats_keep_flowing_during_a_slow_render(fake, dc_config):
    config = dc_config(engine={"preview_delay_s": 0.3})
    async with running(config, fake):
        await fake.slash("story", {"text": "Aldar Kose crosses the steppe", "frames": 6}, user_id=ALICE)
        await fake.wait_for(lambda f: boards(f), timeout=30)
    gaps = fake.heartbeat_gaps()
    assert len(gaps) >= 5
    assert max(gaps) < 0.2 * 1.5, gaps  # none late while the engine thread drew 6 frames


async def test_moderator_commands_need_the_role(fake, dc_config, errors):
    config = dc_config()
    async with running(config, fake):
        member = await fake.slash("queue", {}, user_id=BOB)
        moderator = await fake.slash("queue", {}, user_id=MOD, roles=(MOD_ROLE_ID,))
        await fake.wait_for(lambda f: f.callback(member) and f.callback(moderator))
    assert "Only moderators can do that." in json.dumps(fake.callback(member)[1])
    assert "The queue is empty." in json.dumps(fake.callback(moderator)[1])
    assert errors() == []


def test_status_refs_round_trip_and_reject_junk():
    ref = StatusRef(123, "tok:with:colons", 456, 1700000000.0, 8 * 1024 * 1024)
    assert StatusRef.decode(ref.encode()) == ref
    assert StatusRef.decode("42:7") is None and StatusRef.decode(None) is None


async def test_status_cancel_mystats_and_help(fake, dc_config):
    config = dc_config(engine={"preview_delay_s": 0.3})
    async with running(config, fake):
        await fake.slash("story", {"text": "Aldar Kose rides", "frames": 6}, user_id=ALICE)
        await fake.slash("story", {"text": "Aldar Kose sleeps", "frames": 6}, user_id=ALICE)
        await fake.wait_for(lambda f: len([c for c in f.calls_to("PATCH", r".*@original") if c.status == 200]) >= 2)
        asked = {
            "status": await fake.slash("status", {"job": 2}, user_id=ALICE),
            "cancel": await fake.slash("cancel", {"job": 2}, user_id=ALICE),
            "not yours": await fake.slash("cancel", {"job": 1}, user_id=BOB),
            "mystats": await fake.slash("mystats", {}, user_id=ALICE),
            "help": await fake.slash("help", {}, user_id=BOB, locale="ru"),
        }
        await fake.wait_for(lambda f: all(f.callback(i) for i in asked.values()))
    said = {name: fake.callback(i)[1]["content"] for name, i in asked.items()}
    assert re.fullmatch(r"Job #2: queued, position [12]", said["status"])
    assert said["cancel"] == "🛑 Job #2 was cancelled."
    assert said["not yours"] == "Only the author of job #1 or a moderator can do that."
    assert said["mystats"].startswith("📊 Jobs submitted: 2;")
    assert said["help"].startswith("Я рисую раскадровку")
    assert await db_rows(config, "SELECT status FROM jobs WHERE id = 2") == [("cancelled",)]


async def test_a_grid_over_the_interactions_attachment_limit_is_not_posted(fake, dc_config):
    fake.attachment_size_limit = 1024  # the interaction reports a tiny limit: refuse, never post
    config = dc_config()
    async with running(config, fake):
        await fake.slash("story", {"text": "Aldar Kose rides", "frames": 6}, user_id=ALICE)
        found = []
        for _ in range(100):
            found = await db_rows(config, "SELECT status, last_error FROM deliveries")
            if found and found[0][1]:
                break
            await asyncio.sleep(0.1)
    assert boards(fake) == []
    [(status, error)] = found
    assert status == "pending" and "over the 1024-byte attachment limit" in error


async def test_an_unexpected_error_is_logged_and_answered_ephemerally(fake, dc_config, errors, monkeypatch):
    from bot.service import StoryService

    async def broken(self, requester):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(StoryService, "mystats", broken)  # our own code fails; discord.py stays real
    config = dc_config()
    async with running(config, fake):
        asked = await fake.slash("mystats", {}, user_id=ALICE)
        await fake.wait_for(lambda f: f.callback(asked))
    kind, data = fake.callback(asked)
    assert (kind, data["flags"], data["content"]) == (4, 64, "Something went wrong on my side. Please try again in a minute.")
    logged = errors()
    assert logged and logged[0].exc_info and "database on fire" in str(logged[0].exc_info[1])
