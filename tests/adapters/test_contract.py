"""One conversation, three platforms, one set of rules.

The same short conversation runs through the console, Telegram (the real python-telegram-bot
against a local fake Bot API) and Discord (the real discord.py against a local fake gateway),
each inside the real composition root. Every step must end the same way everywhere, and the
same jobs must land in SQLite: the rules live in engine.limits and bot.service, not in an adapter.
"""

from __future__ import annotations

import asyncio
import io

import pytest

from bot.app import run_bot
from bot.config import AppConfig, Secrets
from bot.messages import text
from engine.limits import ASPECTS, MAX_FRAMES, MIN_FRAMES, allowed_aspects, allowed_frames
from tests.fakes.discord_server import GUILD_ID, MOD_ROLE_ID, FakeDiscord, RefusedByClient
from tests.fakes.telegram_server import FakeTelegram
from tests.helpers import bot_running as running
from tests.helpers import db_rows

STORY = "Aldar Kose tricks a greedy merchant at the bazaar and rides away"
# (who, command, argument): the frame counts are the smallest and largest allowed, and one past each
# end; the aspects one that is offered and one that is not
CONVERSATION = [
    ("alice", "story", {"frames": MIN_FRAMES, "aspect": "16:9"}),
    ("alice", "story", {"frames": MAX_FRAMES}),
    ("alice", "story", {"frames": MIN_FRAMES - 1}),
    ("alice", "story", {"frames": MAX_FRAMES + 1}),
    ("alice", "story", {"frames": MIN_FRAMES, "aspect": "5:4"}),
    ("alice", "regen", 1),  # the owner redraws their board
    ("bob", "regen", 1),  # another user may not
    ("mod", "regen", 1),  # a moderator may redraw any board
    ("bob", "ban", "alice"),  # and only a moderator bans
]
OUTCOMES = ["queued", "queued", "refused: frames", "refused: frames", "refused: aspect", "queued",
            "refused: not theirs", "queued", "refused: moderators only"]
# a board redrawn keeps its shape; without --aspect a board takes [story] default_aspect
JOBS = [("alice", "story", MIN_FRAMES, None, "16:9"), ("alice", "story", MAX_FRAMES, None, "1:1"),
        ("alice", "regen_board", MIN_FRAMES, 1, "16:9"), ("mod", "regen_board", MIN_FRAMES, 1, "16:9")]


def outcome(reply: str) -> str:
    """What a reply means, read against the catalogue every adapter answers from."""
    known = {
        text("err_bad_option", "en", option="--frames", allowed=allowed_frames()): "refused: frames",
        text("err_bad_option", "en", option="--aspect", allowed=allowed_aspects()): "refused: aspect",
        text("err_forbidden", "en", job=1): "refused: not theirs",
        text("err_moderators_only", "en"): "refused: moderators only",
    }
    if "is queued" in reply:
        return "queued"
    return known.get(reply, f"unexpected reply: {reply!r}")


async def jobs_and_owners(config: AppConfig, names: dict[str, str]) -> list[tuple]:
    rows = await db_rows(config, "SELECT u.platform_user_id, j.kind, j.frames, j.parent_id, j.aspect FROM jobs j "
                                 "JOIN users u ON u.id = j.user_id ORDER BY j.id")
    return [(names[user], *job) for user, *job in rows]


def story_line(options: dict) -> str:
    return f"/story {STORY} " + " ".join(f"--{name} {value}" for name, value in options.items())


async def wait_until_done(config: AppConfig, job_id: int) -> None:
    async def done() -> bool:
        return await db_rows(config, f"SELECT status FROM jobs WHERE id = {job_id}") == [("done",)]

    for _ in range(1000):
        if await done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


# -- console ---------------------------------------------------------------------------------


async def console_conversation(make_config) -> tuple[list[str], list[tuple]]:
    """One console session per step, as whoever the step names (``[console] user_id``)."""
    outcomes = []
    for who, command, argument in CONVERSATION:
        config = make_config(console={"user_id": who}, roles={"moderators": ["console:mod"]})
        line = {"story": lambda: story_line(argument), "regen": lambda: f"/regen {argument}",
                "ban": lambda: f"/ban console:{argument}"}[command]()
        stdout = io.StringIO()
        await run_bot(config, stdin=io.StringIO(line + "\n"), stdout=stdout)  # returns once its jobs are delivered
        outcomes.append(outcome(stdout.getvalue().splitlines()[0]))
    return outcomes, await jobs_and_owners(config, {"alice": "alice", "bob": "bob", "mod": "mod"})


# -- Telegram --------------------------------------------------------------------------------
TELEGRAM_IDS = {"alice": 1001, "bob": 1002, "mod": 1003}


async def telegram_conversation(make_config) -> tuple[list[str], list[tuple]]:
    fake = await FakeTelegram(max_poll_s=0.2).start()
    try:
        config = make_config(
            telegram={"base_url": fake.base_url, "base_file_url": fake.base_file_url, "edit_interval_s": 0.05,
                      "poll_timeout_s": 1},
            roles={"moderators": [f"telegram:{TELEGRAM_IDS['mod']}"]},
        ).model_copy(update={"secrets": Secrets(telegram_token="123:TEST")})
        outcomes = []
        async with running(config):
            for who, command, argument in CONVERSATION:
                user = TELEGRAM_IDS[who]
                if command == "regen":
                    await wait_until_done(config, argument)
                line = {"story": lambda: story_line(argument), "regen": lambda: f"/regen {argument}",
                        "ban": lambda: f"/ban {TELEGRAM_IDS.get(argument)}"}[command]()
                before = len(_texts(fake, user))
                fake.send_message(line, chat_id=user, user_id=user)
                replies = await fake.wait_for(lambda f, u=user, n=before: len(_texts(f, u)) > n and _texts(f, u))
                first = replies[before]
                outcomes.append(outcome(([h.get("text") or "" for h in first.history] + [first.text or ""])[0]))
            for job_id in (1, 2, 3, 4):
                await wait_until_done(config, job_id)
        names = {str(i): name for name, i in TELEGRAM_IDS.items()}
        return outcomes, await jobs_and_owners(config, names)
    finally:
        await fake.stop()


def _texts(fake, chat: int) -> list:
    return [m for m in fake.messages(chat) if m.kind == "text"]


# -- Discord ---------------------------------------------------------------------------------
DISCORD_IDS = {"alice": 5001, "bob": 5002, "mod": 5003}


async def discord_conversation(make_config) -> tuple[list[str], list[tuple]]:
    fake = FakeDiscord(heartbeat_interval_ms=200)
    await fake.start()
    fake.point_discord_here()
    try:
        config = make_config(
            discord={"api_base": fake.api_base, "gateway_url": fake.gateway_url, "guild_ids": [str(GUILD_ID)],
                     "edit_interval_s": 0.05, "guild_ready_timeout_s": 0.05},
            roles={"moderator_roles": [f"discord:{MOD_ROLE_ID}"]},
        ).model_copy(update={"secrets": Secrets(discord_token="MTMwMDAwMDAwMDAwMDAwMDAwMQ.GfAkEx.fake-token")})
        outcomes = []
        async with running(config):
            await fake.wait_for(lambda f: f.commands(GUILD_ID) and f.connected, timeout=15)
            for who, command, argument in CONVERSATION:
                user = DISCORD_IDS[who]
                roles = (MOD_ROLE_ID,) if who == "mod" else ()
                if command == "regen":
                    await wait_until_done(config, argument)
                options = ({"text": STORY, **argument} if command == "story" else
                           {"job": argument} if command == "regen" else {"user": str(DISCORD_IDS[argument])})
                try:
                    iid = await fake.slash(command, options, user_id=user, roles=roles)
                except RefusedByClient:  # the declared range and choices are checked below
                    outcomes.append("refused: aspect" if "aspect" in argument and argument["aspect"] not in ASPECTS
                                    else "refused: frames")
                    continue
                outcomes.append(outcome(await _first_reply(fake, iid)))
            for job_id in (1, 2, 3, 4):
                await wait_until_done(config, job_id)
        story = next(c for c in fake.commands(GUILD_ID) if c["name"] == "story")
        frames = next(o for o in story["options"] if o["name"] == "frames")
        assert (frames["min_value"], frames["max_value"]) == (MIN_FRAMES, MAX_FRAMES)
        aspect = next(o for o in story["options"] if o["name"] == "aspect")
        assert [choice["value"] for choice in aspect["choices"]] == list(ASPECTS)
        names = {str(i): name for name, i in DISCORD_IDS.items()}
        return outcomes, await jobs_and_owners(config, names)
    finally:
        fake.restore()
        await fake.stop()


async def _first_reply(fake: FakeDiscord, iid: int) -> str:
    """The interaction's answer: its message, or (deferred) the first edit of its original response."""
    await fake.wait_for(lambda f: f.callback(iid))
    kind, data = fake.callback(iid)
    if kind == 4:
        return data["content"]
    def shown(f: FakeDiscord) -> list[str]:
        original = f.original(iid)
        history = [h.get("content") for h in original.history] + [original.content] if original else []
        return [content for content in history if content]

    return (await fake.wait_for(shown))[0]


@pytest.mark.parametrize("conversation", [console_conversation, telegram_conversation, discord_conversation],
                         ids=["console", "telegram", "discord"])
async def test_the_same_conversation_ends_the_same_way_on_every_platform(make_config, conversation):
    outcomes, jobs = await conversation(make_config)
    assert outcomes == OUTCOMES
    assert jobs == JOBS
