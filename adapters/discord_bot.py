"""Discord adapter (discord.py 2.7): slash commands and buttons in, service calls out.

It translates only. Discord's rules live here: answer (defer) an interaction within 3 s; its
token lasts 15 minutes, after which a result is posted as a channel message with the bot
token, mentioning the author; nothing a user wrote may ping anyone, so the client's default is
``AllowedMentions.none()``, a late post allows its author alone, and titles are shown with
mentions escaped; a ``custom_id`` is at most 100 characters and carries only an
action, a job id and a frame; buttons are ``DynamicItem``s registered in ``setup_hook``, so
they work after a restart. Permissions are checked by the service, never in the button.
/story's ``image`` (an attachment) is the user's own character picture, handed to the service
as an ``Upload`` (its declared size and type, and ``Attachment.read``): the service downloads it
only once the user and the story pass, and alone decides whether it is a picture it accepts;
``no_lora`` draws that character without Aldar Kose's LoRA.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import discord
import yarl
from discord import app_commands

from adapters.edit_throttle import EditThrottle
from bot.chat_port import BoardDelivery, JobUpdate
from bot.config import DiscordSettings
from bot.errors import StoryError
from bot.messages import resolve_language, text
from bot.pictures import Upload
from bot.service import Requester, StoryOptions, StoryRequest, StoryService, Submitted
from engine.limits import ASPECTS, MAX_FRAMES, MAX_SEED, MIN_FRAMES, MODES

log = logging.getLogger(__name__)

PLATFORM = "discord"
MAX_CUSTOM_ID = 100
FRAME_BUTTONS_PER_ROW = 5
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024
MAX_STRING_OPTION = 6000  # Discord's longest string option
EXPORT_ACTIONS = {"p": "pdf", "v": "mp4"}  # the 📄 PDF and 🎞 Animatic buttons
MAX_CONTENT = 2000  # characters in a message
BOARD_TEMPLATE = r"board:(?P<action>[rfpv]):(?P<job>[1-9][0-9]{0,11})(?::(?P<frame>[1-9][0-9]?))?"


def _declare_story_options(*, max_chars: int):
    """/story's option types from the rules the service checks: engine.limits and [story] max_chars.
    Discord's client then shows the ranges and refuses what lies outside them."""

    def declare(callback):
        callback.__annotations__.update(
            text=app_commands.Range[str, 1, min(max_chars, MAX_STRING_OPTION)],
            frames=app_commands.Range[int, MIN_FRAMES, MAX_FRAMES] | None,
            seed=app_commands.Range[int, 0, MAX_SEED] | None,
        )
        return app_commands.choices(mode=[app_commands.Choice(name=mode, value=mode) for mode in MODES],
                                    aspect=[app_commands.Choice(name=aspect, value=aspect) for aspect in ASPECTS])(callback)

    return declare


def _declare_frame_option(callback):
    """/regen's frame number: a board has at most MAX_FRAMES frames."""
    callback.__annotations__["frame"] = app_commands.Range[int, MIN_FRAMES, MAX_FRAMES] | None
    return callback


def _upload_limit(interaction: discord.Interaction) -> int:
    """The most bytes an upload may have where the interaction came from (its guild's boost level)."""
    return getattr(interaction, "filesize_limit", None) or DEFAULT_ATTACHMENT_LIMIT


def apply_endpoints(settings: DiscordSettings) -> None:
    """Point discord.py at another REST base and gateway (a proxy or a test fake)."""
    if settings.api_base:
        discord.http.Route.BASE = settings.api_base.rstrip("/")
    if settings.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


def requester_of(interaction: discord.Interaction) -> Requester:
    user = interaction.user
    roles = tuple(str(role.id) for role in getattr(user, "roles", ()) if not role.is_default())
    return Requester(
        platform=PLATFORM, user_id=str(user.id), chat_id=str(interaction.channel_id),
        display_name=user.display_name, locale=str(interaction.locale), roles=roles,
    )


@dataclass(frozen=True)
class StatusRef:
    """Where a job's progress is shown (the interaction's original response), and the
    attachment size limit that interaction reported."""

    application_id: int
    token: str
    message_id: int
    created_at: float
    filesize_limit: int = DEFAULT_ATTACHMENT_LIMIT

    def encode(self) -> str:
        return f"{self.application_id}:{self.message_id}:{self.created_at:.0f}:{self.filesize_limit}:{self.token}"

    @classmethod
    def decode(cls, value: str | None) -> StatusRef | None:
        parts = (value or "").split(":", 4)
        if len(parts) != 5 or not all(p.isdigit() for p in parts[:4]):
            return None
        return cls(int(parts[0]), parts[4], int(parts[1]), float(parts[2]), int(parts[3]))


class BoardButton(discord.ui.DynamicItem[discord.ui.Button], template=BOARD_TEMPLATE):
    """🔁 Regenerate (action r), redo one frame (action f + frame), 📄 PDF (p) or 🎞 Animatic (v), for one job."""

    def __init__(self, action: str, job_id: int, frame: int | None = None, *, label: str = "") -> None:
        custom_id = f"board:{action}:{job_id}" + (f":{frame}" if frame else "")
        if len(custom_id) > MAX_CUSTOM_ID:
            raise ValueError(f"custom_id over {MAX_CUSTOM_ID} characters: {custom_id}")
        style = discord.ButtonStyle.primary if action == "r" else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(label=label or str(frame), custom_id=custom_id, style=style))
        self.action, self.job_id, self.frame = action, job_id, frame

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> BoardButton:
        frame = match["frame"]
        return cls(match["action"], int(match["job"]), int(frame) if frame else None, label=item.label or "")

    async def callback(self, interaction: discord.Interaction) -> None:
        adapter = interaction.client.adapter
        if self.action in EXPORT_ACTIONS:
            await adapter.export(interaction, self.job_id, EXPORT_ACTIONS[self.action])
        else:
            await adapter.press(interaction, self.job_id, self.frame if self.action == "f" else None)


class StaleButton(discord.ui.DynamicItem[discord.ui.Button], template=r"(?!board:[rfpv]:[1-9]).{1,100}"):
    """Any other custom_id (forged, or from an older version): a polite ephemeral refusal."""

    def __init__(self, custom_id: str) -> None:
        super().__init__(discord.ui.Button(label="?", custom_id=custom_id))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> StaleButton:
        return cls(item.custom_id or "?")

    async def callback(self, interaction: discord.Interaction) -> None:
        lang = resolve_language(str(interaction.locale))
        await interaction.response.send_message(text("err_bad_button", lang), ephemeral=True)


def board_view(job_id: int, frames: int, lang: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(BoardButton("r", job_id, label=text("button_regenerate", lang)))
    view.add_item(BoardButton("p", job_id, label=text("button_pdf", lang)))
    view.add_item(BoardButton("v", job_id, label=text("button_animatic", lang)))
    for index in range(1, frames + 1):
        button = BoardButton("f", job_id, index)
        button.item.row = 1 + (index - 1) // FRAME_BUTTONS_PER_ROW
        view.add_item(button)
    return view


class StoryClient(discord.Client):
    """The discord.py client: slash commands on a CommandTree, persistent dynamic buttons."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        super().__init__(intents=discord.Intents(guilds=True),  # slash commands need no privileged intent
                         guild_ready_timeout=adapter.settings.guild_ready_timeout_s,
                         # every message, reply and edit: a title or story with @everyone or <@&role> in it
                         # pings nobody; the one post that may ping names its user (``author_only``)
                         allowed_mentions=discord.AllowedMentions.none())
        self.adapter = adapter
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = adapter.on_tree_error
        adapter.add_commands(self.tree)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(BoardButton, StaleButton)
        guilds = self.adapter.settings.guild_ids
        for guild_id in guilds:
            guild = discord.Object(id=int(guild_id))
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        if not guilds:
            await self.tree.sync()


class DiscordAdapter:
    platform = PLATFORM

    def __init__(self, service: StoryService, settings: DiscordSettings, token: str) -> None:
        self.service = service
        self.settings = settings
        self._token = token
        self.client = StoryClient(self)
        self._task: asyncio.Task | None = None
        self.edits = EditThrottle(settings.edit_interval_s)  # per job: one interaction token each

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        apply_endpoints(self.settings)
        await self.client.login(self._token)
        self._task = asyncio.create_task(self.client.connect(reconnect=True), name="discord-gateway")
        ready = asyncio.create_task(self.client.wait_until_ready())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            self._task.result()  # the gateway task ended: raise its error
        log.info("discord: connected as %s", self.client.user)

    async def stop(self) -> None:
        await self.edits.drain()
        await self.client.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    # -- commands ------------------------------------------------------------------------------
    def add_commands(self, tree: app_commands.CommandTree) -> None:
        """Every command answers through the service, which checks each permission; the option
        ranges are declared from the same rules the service checks (``_declare_story_options``)."""
        adapter = self

        @tree.command(name="story", description="Draw a storyboard of Aldar Kose from your story")
        @app_commands.describe(text="your story", mode="how frames are drawn", frames="number of frames",
                               seed="a seed, to draw the same board again",
                               image="a picture of your own character, to draw and check frames against",
                               no_lora="draw the character in your picture without Aldar Kose's look",
                               aspect="the frames' shape (default 1:1 unless the server set another)")
        @_declare_story_options(max_chars=self.service.config.story.max_chars)
        async def story(interaction: discord.Interaction, text: str, mode: app_commands.Choice[str] | None = None,
                        frames: int | None = None, seed: int | None = None, image: discord.Attachment | None = None,
                        no_lora: bool | None = None, aspect: app_commands.Choice[str] | None = None) -> None:
            options = StoryOptions(mode=mode.value if mode else None, frames=frames, seed=seed,
                                   lora=False if no_lora else None, aspect=aspect.value if aspect else None)
            await adapter.story(interaction, text, options, image)

        @tree.command(name="status", description="Where is my job?")
        async def status(interaction: discord.Interaction, job: int | None = None) -> None:
            await adapter.reply(interaction, lambda r: adapter.service.status(r, job), attr="text")

        @tree.command(name="cancel", description="Cancel a job")
        async def cancel(interaction: discord.Interaction, job: int) -> None:
            await adapter.reply(interaction, lambda r: adapter.service.cancel(r, job))

        @tree.command(name="mystats", description="Your jobs, boards and remaining quota")
        async def mystats(interaction: discord.Interaction) -> None:
            await adapter.reply(interaction, adapter.service.mystats, attr="text")

        @tree.command(name="help", description="What this bot does")
        async def help_(interaction: discord.Interaction) -> None:
            lang = resolve_language(str(interaction.locale))
            await interaction.response.send_message(text("help", lang), ephemeral=True)

        @tree.command(name="queue", description="Moderators: queued and running jobs")
        async def queue(interaction: discord.Interaction) -> None:
            await adapter.reply(interaction, adapter.service.queue_overview)

        @tree.command(name="regen", description="Redraw your board, or one frame of it (moderators: any board)")
        @_declare_frame_option
        async def regen(interaction: discord.Interaction, job: int, frame: int | None = None) -> None:
            await adapter.regenerate(interaction, job, frame)

        @tree.command(name="purge", description="Moderators: delete a finished board, its files and records")
        async def purge(interaction: discord.Interaction, job: int) -> None:
            await adapter.reply(interaction, lambda r: adapter.service.purge(r, job))

        @tree.command(name="ban", description="Moderators: ban a user from the bot")
        async def ban(interaction: discord.Interaction, user: discord.User, reason: str = "") -> None:
            await adapter.reply(interaction, lambda r: adapter.service.ban(r, PLATFORM, str(user.id), reason))

        @tree.command(name="unban", description="Moderators: lift a ban")
        async def unban(interaction: discord.Interaction, user: discord.User) -> None:
            await adapter.reply(interaction, lambda r: adapter.service.unban(r, PLATFORM, str(user.id)))

    async def reply(self, interaction: discord.Interaction, call, *, attr: str | None = None) -> None:
        """Run a service call and answer ephemerally with its text or its StoryError."""
        requester = requester_of(interaction)
        lang = resolve_language(requester.locale)
        try:
            result = await call(requester)
            message = getattr(result, attr) if attr else result
        except StoryError as exc:
            message = exc.message(lang)
        await interaction.response.send_message(message, ephemeral=True)

    async def story(self, interaction: discord.Interaction, story: str, options: StoryOptions,
                    image: discord.Attachment | None = None) -> None:
        await interaction.response.defer(thinking=True)  # within Discord's 3 s, before any work
        requester = requester_of(interaction)
        try:
            picture = Upload(image.read, size=image.size, content_type=image.content_type) if image else None
            submitted = await self.service.submit(StoryRequest(requester, story, options,
                                                               source_ref=str(interaction.id), picture=picture))
        except StoryError as exc:
            await interaction.edit_original_response(content=exc.message(resolve_language(requester.locale)))
            return
        await self._acknowledge(interaction, submitted)

    async def regenerate(self, interaction: discord.Interaction, job_id: int, frame: int | None) -> None:
        submitted = await self._allowed(interaction, lambda requester: self.service.regenerate(requester, job_id, frame))
        if submitted is None:
            return
        await interaction.response.defer(thinking=True)
        await self._acknowledge(interaction, submitted)

    async def _allowed(self, interaction: discord.Interaction, call):
        """A button's service call; None when the service refused it, the reason then said ephemerally."""
        requester = requester_of(interaction)
        try:
            return await call(requester)
        except StoryError as exc:
            lang = resolve_language(requester.locale)
            message = text("err_board_gone", lang) if exc.key == "err_not_found" else exc.message(lang)
            await interaction.response.send_message(message, ephemeral=True)
            return None

    async def press(self, interaction: discord.Interaction, job_id: int, frame: int | None) -> None:
        await self.regenerate(interaction, job_id, frame)

    async def export(self, interaction: discord.Interaction, job_id: int, kind: str) -> None:
        """📄 PDF / 🎞 Animatic: the service allows it (or an ephemeral reply says why), the press
        is answered at once, and the file follows as an attachment on a followup message."""
        ticket = await self._allowed(interaction, lambda requester: self.service.export(requester, job_id, kind))
        if ticket is None:
            return
        lang = ticket.lang
        await interaction.response.send_message(text("export_making", lang, kind=kind.upper(), job=job_id),
                                                ephemeral=True)
        try:
            made = await ticket.file()
        except StoryError as exc:
            await interaction.followup.send(exc.message(lang), ephemeral=True)
            return
        limit = min(self.settings.attachment_limit_bytes, _upload_limit(interaction))
        if made.size > limit:  # [export] max_bytes set above what this server takes
            reason = f"{made.size / 2**20:.1f} MiB is over this server's {limit / 2**20:.0f} MiB"
            await interaction.followup.send(text("err_export_failed", lang, kind=kind.upper(), job=job_id,
                                                 reason=reason), ephemeral=True)
            return
        data = await asyncio.to_thread(made.path.read_bytes)  # up to [export] max_bytes: off the event loop
        title = discord.utils.escape_mentions(ticket.board.job.title or "")
        caption = text("export_caption", lang, title=title, job=job_id, kind=kind.upper())
        await interaction.followup.send(caption[:MAX_CONTENT], file=discord.File(io.BytesIO(data),
                                                                                 filename=made.path.name))

    async def _acknowledge(self, interaction: discord.Interaction, submitted: Submitted) -> None:
        message = await interaction.edit_original_response(content=submitted.text)
        limit = _upload_limit(interaction)
        ref = StatusRef(interaction.application_id, interaction.token, message.id, time.time(), limit)
        self.service.set_status_ref(submitted.job_id, ref.encode())

    async def on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        lang = resolve_language(str(interaction.locale))
        log.error("discord command failed", exc_info=error)
        message = text("err_internal", lang)
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)

    # -- ChatGateway ------------------------------------------------------------------------------
    def _fresh(self, ref: StatusRef | None) -> StatusRef | None:
        return ref if ref and time.time() - ref.created_at < self.settings.interaction_lifetime_s else None

    async def notify(self, update: JobUpdate) -> None:
        ref = self._fresh(StatusRef.decode(update.status_ref))
        if ref is None or update.stage == "validating":  # a check takes no time worth showing
            return
        self._show(update.job_id, ref, update.text)

    def _show(self, job_id: int, ref: StatusRef, content: str) -> None:
        self.edits.submit(str(job_id), ref.message_id, functools.partial(self._edit_status, ref, content))

    async def _edit_status(self, ref: StatusRef, content: str) -> None:
        webhook = discord.Webhook.partial(ref.application_id, ref.token, client=self.client)
        await webhook.edit_message(ref.message_id, content=content)

    async def deliver(self, delivery: BoardDelivery) -> None:
        ref = self._fresh(StatusRef.decode(delivery.status_ref))
        limit = min(self.settings.attachment_limit_bytes, ref.filesize_limit if ref else DEFAULT_ATTACHMENT_LIMIT)
        grid = await asyncio.to_thread(read_grid, delivery.grid_path, limit)  # up to 10 MiB: off the event loop
        done = discord.utils.escape_mentions(delivery.text)  # it carries the title: the user's words
        embed = discord.Embed(title=discord.utils.escape_mentions(delivery.title)[:256], description=done)
        embed.add_field(name="mode", value=delivery.mode).add_field(name="seed", value=str(delivery.seed))
        embed.set_image(url=f"attachment://{delivery.grid_path.name}")
        file = discord.File(io.BytesIO(grid), filename=delivery.grid_path.name)
        view = board_view(delivery.job_id, len(delivery.frame_paths), delivery.lang)
        if ref is not None:
            self._show(delivery.job_id, ref, done)  # after any progress edit still waiting, never before
            webhook = discord.Webhook.partial(ref.application_id, ref.token, client=self.client)
            await webhook.send(file=file, embed=embed, view=view, wait=True)
            return
        channel = self.client.get_partial_messageable(int(delivery.chat_id))
        mention = f"<@{delivery.owner_id}> " if delivery.owner_id else ""
        await channel.send(content=mention + done, file=file, embed=embed, view=view,
                           allowed_mentions=author_only(delivery.owner_id))


def author_only(owner_id: str) -> discord.AllowedMentions:
    """A late post mentions its author so they see it; that user alone may be pinged."""
    if not owner_id:
        return discord.AllowedMentions.none()
    return discord.AllowedMentions(everyone=False, roles=False, replied_user=False,
                                   users=[discord.Object(id=int(owner_id))])


def read_grid(path: Path, limit: int) -> bytes:
    """The grid's bytes, refused over the attachment limit (runs on a worker thread)."""
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"the grid is {size} bytes, over the {limit}-byte attachment limit")
    return path.read_bytes()

