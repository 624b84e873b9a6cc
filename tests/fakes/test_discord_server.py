"""The real discord.py 2.7 against the local fake REST API + gateway (tests/fakes/discord_server.py)."""

from __future__ import annotations

import asyncio
import io
import logging
import statistics
import struct
import zlib
from contextlib import asynccontextmanager

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
from discord import app_commands

from tests.fakes.discord_server import (
    APP_ID,
    BOT_ID,
    CHANNEL_ID,
    EPHEMERAL,
    GUILD_ID,
    INTENT_GUILD_MESSAGES,
    MOD_ROLE_ID,
    FakeDiscord,
    RefusedByClient,
)

TOKEN = "MTMwMDAwMDAwMDAwMDAwMDAwMQ.GfAkEx.fake-bot-token-for-tests"
USER = 4242
HEARTBEAT_MS = 200


def png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG, built without any imaging library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80\x20\x10" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class PingButton(discord.ui.DynamicItem[discord.ui.Button], template=r"ping:(?P<n>\d+)"):
    """A persistent button: all its state is in the custom_id."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=f"Ping {n}", style=discord.ButtonStyle.primary, custom_id=f"ping:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match) -> PingButton:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        interaction.client.clicked.append((self.n, interaction.user.id, [r.id for r in interaction.user.roles]))
        await interaction.response.send_message(f"pong {self.n}", ephemeral=True)


class Bot(discord.Client):
    def __init__(self, intents: discord.Intents | None = None) -> None:
        # guild_ready_timeout: discord.py waits this long after the last GUILD_CREATE before on_ready
        super().__init__(intents=intents or discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.clicked: list[tuple[int, int, list[int]]] = []
        self.errors: list[BaseException] = []
        self.release = asyncio.Event()
        guild = discord.Object(GUILD_ID)

        @self.tree.command(name="ping", description="Answers with a picture and a button", guild=guild)
        @app_commands.describe(text="what to echo")
        async def ping(interaction: discord.Interaction, text: str = "hi") -> None:
            await interaction.response.defer(thinking=True)
            view = discord.ui.View(timeout=None)
            view.add_item(PingButton(1))
            await interaction.followup.send(f"pong: {text}", file=discord.File(io.BytesIO(png()), "ping.png"),
                                            view=view)

        @self.tree.command(name="slow", description="Defers, waits, then answers", guild=guild)
        async def slow(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await self.release.wait()
            try:
                await interaction.followup.send("late answer")
            except discord.HTTPException as exc:
                self.errors.append(exc)
                await interaction.channel.send("posted in the channel instead")

    async def setup_hook(self) -> None:
        self.add_dynamic_items(PingButton)
        await self.tree.sync(guild=discord.Object(GUILD_ID))


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture):
    """discord.py logs swallowed exceptions (handlers, views, the gateway) at ERROR: none may happen."""
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
async def fake():
    server = await FakeDiscord(token=TOKEN, heartbeat_interval_ms=HEARTBEAT_MS).start()
    server.point_discord_here()
    yield server
    server.restore()
    await server.stop()


@asynccontextmanager
async def running(bot: discord.Client):
    await bot.login(TOKEN)
    task = asyncio.create_task(bot.connect())
    try:
        await asyncio.wait_for(bot.wait_until_ready(), timeout=5)
        yield bot
    finally:
        await bot.close()
        await asyncio.wait_for(task, timeout=5)


def test_point_discord_here_sets_and_restores_the_globals() -> None:
    fake = FakeDiscord()
    fake.port = 12345
    before = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    fake.point_discord_here()
    assert discord.http.Route.BASE == "http://127.0.0.1:12345/api/v10"
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:12345/"
    assert discord.http.Route("GET", "/users/@me").url == "http://127.0.0.1:12345/api/v10/users/@me"
    fake.restore()
    assert before == (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)


async def test_slash_command_defers_then_followup_with_file_and_dynamic_button(fake: FakeDiscord) -> None:
    bot = Bot()
    async with running(bot):
        # login and command sync went through the REST fake; the gateway handshake through the ws fake
        assert bot.user.id == BOT_ID and bot.application_id == APP_ID
        assert fake.calls_to("GET", r"^/users/@me$") and fake.calls_to("GET", r"^/oauth2/applications/@me$")
        assert fake.gateway_connects[0]["path"] == "/" and fake.gateway_connects[0]["compress"] == "zlib-stream"
        assert fake.intents == discord.Intents.default().value
        guild = bot.get_guild(GUILD_ID)
        assert guild is not None and guild.get_channel(CHANNEL_ID).name == "storyboards"
        assert guild.get_role(MOD_ROLE_ID).name == "Moderator"
        synced = {c["name"]: c for c in fake.commands(GUILD_ID)}
        assert set(synced) == {"ping", "slow"} and synced["ping"]["options"][0]["name"] == "text"
        assert [c.name for c in await bot.tree.fetch_commands(guild=guild)] == ["ping", "slow"]

        iid = await fake.slash("ping", {"text": "steppe"}, user_id=USER)
        await fake.wait_for(lambda f: f.followups(iid))
        assert fake.callback(iid)[0] == 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
        assert fake.callback_latency(iid) < 3.0
        [callback_call] = fake.calls_to("POST", rf"^/interactions/{iid}/")
        assert callback_call.query == {"with_response": "1"}

        [message] = fake.followups(iid)
        assert message.id == fake.original(iid).id  # the first followup fills the "thinking" message
        assert message.content == "pong: steppe" and not message.ephemeral and not message.loading
        assert message.files == {"ping.png": png()}
        assert message.attachments[0].raw["content_type"] == "image/png"
        assert (message.attachments[0].raw["width"], message.attachments[0].raw["height"]) == (4, 3)
        assert message.custom_ids == ["ping:1"]
        [followup_call] = fake.calls_to("POST", rf"^/webhooks/{APP_ID}/")
        assert followup_call.files == {"files[0]": png()} and followup_call.query["wait"] == "1"

        click = await fake.click("ping:1", message_id=message.id, user_id=USER, roles=[MOD_ROLE_ID])
        await fake.wait_for(lambda f: f.callback(click))
        assert bot.clicked == [(1, USER, [GUILD_ID, MOD_ROLE_ID])]
        assert fake.callback(click)[0] == 4
        [reply] = fake.ephemerals()
        assert reply.content == "pong 1" and reply.flags & EPHEMERAL
        assert reply.raw["interaction_metadata"]["interacted_message_id"] == str(message.id)
        assert fake.unanswered() == []

        # heartbeats arrive at about the interval the HELLO asked for
        await fake.wait_for(lambda f: len(f.heartbeats) >= 4, timeout=3)
        gaps = fake.heartbeat_gaps()[1:]  # the first beat is sent at once on HELLO
        assert 0.1 < statistics.median(gaps) < 0.4, gaps
    # client.close() asks for 1000, but discord.py's reader task (blocked in receive()) answers the
    # close with its own 4000 first under aiohttp 3.14: that is what Discord sees too.
    assert fake.close_codes == [4000] and not fake.connected
    assert bot.is_closed()


async def test_rate_limited_followup_is_retried_after_retry_after(fake: FakeDiscord) -> None:
    fake.fail_next(rf"^POST /webhooks/{APP_ID}/", status=429, retry_after=0.2)
    async with running(Bot()):
        iid = await fake.slash("ping", {}, user_id=USER)
        await fake.wait_for(lambda f: f.followups(iid))
        first, second = fake.calls_to("POST", rf"^/webhooks/{APP_ID}/")
        assert first.status == 429 and first.response["retry_after"] == 0.2 and second.status == 200
        assert second.at - first.at >= 0.19
        assert fake.followups(iid)[0].files == {"ping.png": png()}


async def test_expired_interaction_token_is_401_and_the_bot_can_fall_back_to_the_channel(fake: FakeDiscord) -> None:
    bot = Bot()
    async with running(bot):
        iid = await fake.slash("slow", {}, user_id=USER)
        await fake.wait_for(lambda f: f.callback(iid))
        fake.token_lifetime_s = 0.0  # the 15 minutes are over
        bot.release.set()
        await fake.wait_for(lambda f: f.messages(CHANNEL_ID, ephemeral=False)
                            and f.messages(CHANNEL_ID)[-1].via == "channel")
        [error] = bot.errors
        assert error.status == 401 and error.code == 50027 and "Invalid Webhook Token" in error.text
        assert fake.messages(CHANNEL_ID)[-1].content == "posted in the channel instead"
        assert fake.original(iid).loading  # nobody filled the "thinking" message


async def test_resume_after_a_dropped_connection_replays_missed_events(fake: FakeDiscord) -> None:
    bot = Bot(intents=discord.Intents.default())
    async with running(bot):
        session = bot.ws.session_id
        await fake.drop_connection(4000)
        iid = await fake.slash("ping", {"text": "after resume"}, user_id=USER)  # sent while disconnected
        await fake.wait_for(lambda f: f.resumes and f.connected)
        assert fake.resumes[0]["session_id"] == session and fake.resumes[0]["seq"] >= 2
        assert fake.gateway_connects[-1]["path"] == "/resume"  # READY's resume_gateway_url
        await fake.wait_for(lambda f: f.followups(iid))
        assert fake.followups(iid)[0].content == "pong: after resume"
        assert len(fake.identifies) == 1 and bot.ws.session_id == session


async def test_guild_messages_intent_gets_message_create_for_the_bots_posts(fake: FakeDiscord) -> None:
    bot = Bot()
    seen: list[discord.Message] = []
    bot.event(_collector(seen))
    async with running(bot):
        assert fake.intents & INTENT_GUILD_MESSAGES
        sent = await bot.get_channel(CHANNEL_ID).send("hello", file=discord.File(io.BytesIO(b"data"), "a.txt"))
        await fake.wait_for(lambda f: seen)
        assert seen[0].id == sent.id and seen[0].author.id == BOT_ID
        assert await sent.attachments[0].read() == b"data"
        edited = await sent.edit(content="edited")
        assert edited.content == "edited" and fake.message(sent.id).edits == 1


def _collector(seen: list):
    async def on_message(message: discord.Message) -> None:
        seen.append(message)
    return on_message


async def test_errors_look_like_discord(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.api_base}/no/such/route", headers={"Authorization": f"Bot {TOKEN}"}) as r:
            assert r.status == 404 and r.headers["Content-Type"] == "application/json"
            assert await r.json() == {"message": "404: Not Found", "code": 0}
        async with http.post(f"{fake.api_base}/channels/{CHANNEL_ID}/messages", json={"content": ""},
                             headers={"Authorization": f"Bot {TOKEN}"}) as r:
            assert r.status == 400 and (await r.json())["code"] == 50006
        async with http.get(f"{fake.api_base}/gateway/bot", headers={"Authorization": f"Bot {TOKEN}"}) as r:
            body = await r.json()
            assert body["url"] == fake.gateway_url.rstrip("/") and body["shards"] == 1
    assert fake.calls_to("GET", r"^/no/such/route$")[0].status == 404
    client = discord.Client(intents=discord.Intents.none())
    with pytest.raises(discord.LoginFailure):
        await client.login("wrong-token")
    await client.close()


async def test_a_callback_after_the_three_second_window_is_unknown_interaction(fake: FakeDiscord) -> None:
    bot = Bot()
    failures: list[BaseException] = []

    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        failures.append(error.original if isinstance(error, app_commands.CommandInvokeError) else error)

    bot.tree.on_error = on_error
    fake.ack_deadline_s = 0.0  # the bot is "too slow" whatever it does
    async with running(bot):
        iid = await fake.slash("ping", {}, user_id=USER)
        await fake.wait_for(lambda f: failures)
        assert isinstance(failures[0], discord.NotFound) and failures[0].code == 10062
        assert fake.callback(iid) is None and fake.unanswered() == [iid]


async def test_auto_sharded_client_finds_the_gateway_through_get_gateway_bot(fake: FakeDiscord) -> None:
    bot = discord.AutoShardedClient(intents=discord.Intents.default(), guild_ready_timeout=0.05)
    async with running(bot):
        assert fake.calls_to("GET", r"^/gateway/bot$")
        assert fake.identifies[0]["shard"] == [0, 1] and bot.shard_count == 1
        assert bot.get_guild(GUILD_ID) is not None


class LookBot(Bot):
    """Bot with ``/look image:<attachment>``: it reports what discord.py resolved, and reads the
    file only when its declared size is small."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int, str | None, bytes | None]] = []

        @self.tree.command(name="look", description="Looks at a picture", guild=discord.Object(GUILD_ID))
        async def look(interaction: discord.Interaction, image: discord.Attachment, text: str = "") -> None:
            data = await image.read() if image.size <= 1024 else None
            self.seen.append((image.filename, image.size, image.content_type, data))
            await interaction.response.send_message(f"{image.width}x{image.height}", ephemeral=True)


async def test_an_attachment_option_is_resolved_and_downloaded_through_the_fake(fake: FakeDiscord) -> None:
    bot = LookBot()
    async with running(bot):
        [look] = [c for c in fake.commands(GUILD_ID) if c["name"] == "look"]
        assert look["options"][0] == {**look["options"][0], "name": "image", "type": 11, "required": True}
        small = fake.upload(png(), "me.png")
        huge = fake.upload(png(), "huge.png", declared_size=50 * 1024 * 1024)  # a size Discord reports
        assert small["content_type"] == "image/png" and small["ephemeral"] and small["size"] == len(png())
        first = await fake.slash("look", {"image": small}, user_id=USER)
        second = await fake.slash("look", {"image": huge}, user_id=USER)
        await fake.wait_for(lambda f: f.callback(first) and f.callback(second))

        sent = fake.interaction(first).payload["data"]
        assert sent["options"] == [{"name": "image", "type": 11, "value": small["id"]}]
        assert sent["resolved"]["attachments"][small["id"]]["url"].startswith(f"{fake.base}/attachments/")
        assert sorted(bot.seen) == [("huge.png", 50 * 1024 * 1024, "image/png", None),  # the first one awaits its read
                                    ("me.png", len(png()), "image/png", png())]
        assert fake.callback(first)[1]["content"] == "4x3"
        assert fake.downloaded(small) == 1 and fake.downloaded(huge) == 0

        with pytest.raises(RefusedByClient):  # a file for a text option: Discord's client cannot send it
            await fake.slash("look", {"image": small, "text": small}, user_id=USER)
        with pytest.raises(RefusedByClient):  # and the attachment option takes only a file
            await fake.slash("look", {"image": "me.png"}, user_id=USER)
