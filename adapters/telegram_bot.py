"""Telegram adapter (python-telegram-bot 22): commands and buttons in, service calls out.

It translates only. Telegram's limits live here: callback_data ≤ 64 bytes, captions ≤ 1024
characters, photos ≤ 10 MB with width + height ≤ 10000, media groups of 2–10 items, at most
one status edit every ``edit_interval_s`` per chat. Every text goes as plain text (no
``parse_mode``), so a title or story with ``<b>`` or ``*stars*`` shows as written. Messages
sent on behalf of a chat (anonymous admins, channels) are refused; see ``requester_of``.
Buttons carry an action, a job id and maybe a frame; everything else is read back through
the service, so they keep working after a restart, and permissions are checked there, never
in the button.

A user's own character picture comes as a photo or an image file whose caption is the
``/story`` command (Telegram puts that text in ``caption``, where ``CommandHandler`` does not
look), or as the message a ``/story`` replies to. The largest size of a photo is taken; its
declared ``file_size`` and type go to the service as an ``Upload``, which fetches it (getFile,
then the download; at most the 20 MB a bot may download) only once the user and the story
pass, and checks the picture itself. A file that is not an image is refused without download.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from telegram import (
    Document,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaDocument,
    Message,
    MessageEntity,
    PhotoSize,
    ReplyParameters,
    Update,
)
from telegram.error import BadRequest as TelegramBadRequest
from telegram.error import InvalidToken
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from adapters.edit_throttle import EditThrottle
from adapters.telegram_polling import ConfirmAfterHandling
from bot.chat_port import BoardDelivery, JobUpdate
from bot.commands import parse_job_id, parse_regen_args, parse_story_args
from bot.config import TelegramSettings
from bot.errors import BadRequest, StoryError
from bot.exports import ExportFile
from bot.messages import resolve_language, text
from bot.pictures import Upload
from bot.service import ExportTicket, Requester, StoryRequest, StoryService, Submitted

log = logging.getLogger(__name__)

PLATFORM = "telegram"
MAX_CALLBACK_BYTES = 64
MAX_CAPTION = 1024
MAX_PHOTO_BYTES = 10_000_000
MAX_PHOTO_DIMENSIONS = 10_000
MAX_DOWNLOAD_BYTES = 20_000_000  # getFile serves bots files of at most 20 MB
MEDIA_GROUP = (2, 10)
FRAME_BUTTONS_PER_ROW = 5
_CALLBACK = re.compile(r"^(?P<action>[rfdbpv]):(?P<job>[1-9]\d{0,11})(?::(?P<frame>[1-9]\d?))?$")
EXPORT_ACTIONS = {"p": "pdf", "v": "mp4"}  # the 📄 PDF and 🎞 Animatic buttons


@dataclass(frozen=True)
class Button:
    """What a button carries: an action, a job, maybe a frame. Nothing else."""

    action: str  # r = regenerate, f = frames (or redo one frame), d = full resolution, b = back, p/v = exports
    job_id: int
    frame: int | None = None

    def encode(self) -> str:
        data = f"{self.action}:{self.job_id}" + (f":{self.frame}" if self.frame else "")
        if len(data.encode()) > MAX_CALLBACK_BYTES:
            raise ValueError(f"callback_data over {MAX_CALLBACK_BYTES} bytes: {data!r}")
        return data

    @classmethod
    def decode(cls, data: str | None) -> Button:
        match = _CALLBACK.match(data or "")
        if match is None or len((data or "").encode()) > MAX_CALLBACK_BYTES:
            raise BadRequest("err_bad_button")
        frame = match["frame"]
        return cls(match["action"], int(match["job"]), int(frame) if frame else None)


def board_keyboard(job_id: int, lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([
        [InlineKeyboardButton(text("button_regenerate", lang), callback_data=Button("r", job_id).encode()),
         InlineKeyboardButton(text("button_frames", lang), callback_data=Button("f", job_id).encode())],
        [InlineKeyboardButton(text("button_full", lang), callback_data=Button("d", job_id).encode())],
        [InlineKeyboardButton(text("button_pdf", lang), callback_data=Button("p", job_id).encode()),
         InlineKeyboardButton(text("button_animatic", lang), callback_data=Button("v", job_id).encode())],
    ])


def frames_keyboard(job_id: int, frames: int, lang: str) -> InlineKeyboardMarkup:
    buttons = [InlineKeyboardButton(str(i), callback_data=Button("f", job_id, i).encode()) for i in range(1, frames + 1)]
    rows = [buttons[i : i + FRAME_BUTTONS_PER_ROW] for i in range(0, len(buttons), FRAME_BUTTONS_PER_ROW)]
    rows.append([InlineKeyboardButton(text("button_back", lang), callback_data=Button("b", job_id).encode())])
    return InlineKeyboardMarkup(rows)


def read_photo(path: Path) -> bytes:
    """The grid's bytes (on a worker thread: it is up to 10 MB). The grid module guarantees
    Telegram's photo limits; refuse loudly if that ever breaks."""
    size = path.stat().st_size
    with Image.open(path) as image:
        width, height = image.size
    if size > MAX_PHOTO_BYTES or width + height > MAX_PHOTO_DIMENSIONS:
        raise ValueError(f"{path} breaks Telegram's photo limits: {size} bytes, {width}x{height}")
    return path.read_bytes()


def read_files(paths: tuple[Path, ...]) -> list[bytes]:
    """Frames at full resolution, for one media group (runs on a worker thread)."""
    return [path.read_bytes() for path in paths]


class TelegramAdapter:
    platform = PLATFORM

    def __init__(self, service: StoryService, settings: TelegramSettings, token: str) -> None:
        self.service = service
        self.settings = settings
        self.app: Application = (
            ApplicationBuilder()
            .token(token)
            .base_url(settings.base_url)
            .base_file_url(settings.base_file_url)
            .rate_limiter(
                AIORateLimiter(
                    overall_max_rate=settings.overall_max_rate,
                    overall_time_period=1,
                    group_max_rate=settings.group_max_rate,
                    group_time_period=60,
                    max_retries=settings.rate_limit_retries,
                )
            )
            .concurrent_updates(settings.concurrent_updates)
            .updater(None)  # adapters/telegram_polling.py polls: it confirms an update only once handled
            .build()
        )
        self.edits = EditThrottle(settings.edit_interval_s)  # per chat: what Telegram rate-limits
        self.polling = ConfirmAfterHandling(self.app, timeout_s=int(settings.poll_timeout_s),
                                            allowed_updates=["message", "callback_query"])
        self._add_handlers()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.app.initialize()
        except InvalidToken as exc:  # PTB says this for a 404 too: name both places to look
            raise InvalidToken(f"{exc.message} Check TELEGRAM_TOKEN, and TELEGRAM_BASE_URL or [telegram] base_url if "
                               "set: a wrong URL answers 404, which reads the same.") from exc
        await self.app.start()
        await self.polling.start()
        log.info("telegram: polling as @%s", self.app.bot.username)

    async def stop(self) -> None:
        await self.polling.stop()  # the batch in hand is handled and confirmed first
        await self.edits.drain()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    def _add_handlers(self) -> None:
        commands = {
            "start": self._help, "help": self._help, "story": self._story, "status": self._status,
            "cancel": self._cancel, "mystats": self._mystats, "queue": self._queue, "regen": self._regen,
            "ban": self._ban, "unban": self._unban, "purge": self._purge,
        }
        for name, handler in commands.items():
            self.app.add_handler(CommandHandler(name, _replying(handler)))
        # a photo or file with "/story ..." as its caption: CommandHandler reads only ``text``
        self.app.add_handler(MessageHandler((filters.PHOTO | filters.Document.ALL) & StoryCaption(),
                                            _replying(self._story)))
        self.app.add_handler(CallbackQueryHandler(self._button))
        self.app.add_error_handler(self._on_error)

    # -- commands ------------------------------------------------------------------------------
    async def _help(self, update: Update, requester: Requester, lang: str) -> str:
        return text("help", lang)

    async def _story(self, update: Update, requester: Requester, lang: str) -> None:
        message = update.effective_message
        story, options = parse_story_args(_arguments(message.text or message.caption or ""))
        replied = message.reply_to_message
        if not story.strip() and replied is not None:  # "/story" in reply to a message: draw that one
            story = replied.text or replied.caption or ""
        attachment = picture_of(message, own=True) or (picture_of(replied, own=False) if replied else None)
        picture = self._upload(attachment) if attachment is not None else None
        source = f"{message.chat_id}:{message.message_id}"  # Telegram redelivers unconfirmed updates after a crash
        submitted = await self.service.submit(StoryRequest(requester, story, options, source_ref=source,
                                                           picture=picture))
        await self._acknowledge(message, submitted)

    def _upload(self, attachment: PhotoSize | Document) -> Upload:
        """The picture for the service, which fetches it (getFile, then the download) only once
        the user and the story pass."""
        async def fetch() -> bytes:
            file = await self.app.bot.get_file(attachment.file_id)
            self.service.pictures.check_size(file.file_size)  # getFile's figure, if the message had none
            if file.file_size is not None and file.file_size > MAX_DOWNLOAD_BYTES:  # max_picture_mb set above it
                raise BadRequest("err_picture_too_big", size=f"{file.file_size / 1e6:.1f}",
                                 max=f"{MAX_DOWNLOAD_BYTES / 1e6:.1f}")
            return bytes(await file.download_as_bytearray())

        content_type = "image/jpeg" if isinstance(attachment, PhotoSize) else attachment.mime_type
        return Upload(fetch, size=attachment.file_size, content_type=content_type)

    async def _acknowledge(self, message, submitted: Submitted) -> None:
        ack = await message.reply_text(submitted.text, reply_parameters=_reply_to(message.message_id))
        self.service.set_status_ref(submitted.job_id, f"{ack.chat_id}:{ack.message_id}")

    async def _status(self, update: Update, requester: Requester, lang: str) -> str:
        args = _arguments(update.effective_message.text or "")
        return (await self.service.status(requester, parse_job_id(args) if args.strip() else None)).text

    async def _cancel(self, update: Update, requester: Requester, lang: str) -> str:
        return await self.service.cancel(requester, parse_job_id(_arguments(update.effective_message.text or "")))

    async def _mystats(self, update: Update, requester: Requester, lang: str) -> str:
        return (await self.service.mystats(requester)).text

    async def _purge(self, update: Update, requester: Requester, lang: str) -> str:
        return await self.service.purge(requester, parse_job_id(_arguments(update.effective_message.text or "")))

    async def _queue(self, update: Update, requester: Requester, lang: str) -> str:
        return await self.service.queue_overview(requester)

    async def _regen(self, update: Update, requester: Requester, lang: str) -> None:
        job_id, frame = parse_regen_args(_arguments(update.effective_message.text or ""))
        submitted = await self.service.regenerate(requester, job_id, frame)
        await self._acknowledge(update.effective_message, submitted)

    async def _ban(self, update: Update, requester: Requester, lang: str) -> str:
        target, reason = _target_user(update)
        return await self.service.ban(requester, PLATFORM, target, reason)

    async def _unban(self, update: Update, requester: Requester, lang: str) -> str:
        target, _ = _target_user(update)
        return await self.service.unban(requester, PLATFORM, target)

    # -- buttons ---------------------------------------------------------------------------------
    async def _button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        requester = requester_of(update)
        lang = resolve_language(requester.locale)
        try:
            button = Button.decode(query.data)
            if button.action in EXPORT_ACTIONS:
                await self._export(query, button, requester, lang)
                return
            note = await self._press(query, button, requester, lang)
        except StoryError as exc:
            await query.answer(exc.message(lang), show_alert=True)
            return
        except Exception:
            await query.answer(text("err_internal", lang), show_alert=True)
            raise
        await query.answer(note)

    async def _press(self, query, button: Button, requester: Requester, lang: str) -> str | None:
        message = query.message
        if button.action == "r" or (button.action == "f" and button.frame):
            submitted = await self.service.regenerate(requester, button.job_id, button.frame)
            if message is not None:
                await self._acknowledge(message, submitted)
            return submitted.text
        if button.action == "d":
            board = await self.service.resend_board(requester, button.job_id)
            if message is not None:
                await self._send_documents(message.chat_id, board.frame_paths, message.message_id)
            return None
        board = await self.service.board(requester, button.job_id)
        if button.action == "f":
            await query.edit_message_reply_markup(frames_keyboard(button.job_id, len(board.frame_paths), lang))
        else:
            await query.edit_message_reply_markup(board_keyboard(button.job_id, lang))
        return None

    async def _export(self, query, button: Button, requester: Requester, lang: str) -> None:
        """📄 PDF / 🎞 Animatic: the service allows it (or the alert says why), the press is
        answered at once, and the file follows as a document or a video."""
        ticket = await self.service.export(requester, button.job_id, EXPORT_ACTIONS[button.action])
        kind = ticket.kind.upper()
        await query.answer(text("export_making", lang, kind=kind, job=button.job_id))
        chat_id = query.message.chat_id if query.message is not None else int(requester.chat_id)
        reply = _reply_to(query.message.message_id) if query.message is not None else None
        try:
            await self._send_export(chat_id, await ticket.file(), ticket, lang, reply)
        except StoryError as exc:  # the press is answered already: the reason goes to the chat
            await self.app.bot.send_message(chat_id, exc.message(lang), reply_parameters=reply)
        except Exception:  # likewise; logged here, since the press may not be answered twice
            log.exception("job %d: sending the %s failed", button.job_id, ticket.kind)
            await self.app.bot.send_message(chat_id, text("err_internal", lang), reply_parameters=reply)

    async def _send_export(self, chat_id: int, made: ExportFile, ticket: ExportTicket, lang: str,
                           reply: ReplyParameters | None) -> None:
        data = await asyncio.to_thread(made.path.read_bytes)  # up to [export] max_bytes: off the event loop
        caption = _caption(text("export_caption", lang, title=ticket.board.job.title or "", job=ticket.board.job.id,
                                kind=ticket.kind.upper()))
        if made.kind == "mp4":
            await self.app.bot.send_video(chat_id, data, filename=made.path.name, caption=caption,
                                          width=made.width, height=made.height,
                                          duration=round(made.seconds) if made.seconds else None,
                                          supports_streaming=True, reply_parameters=reply)
        else:
            await self.app.bot.send_document(chat_id, data, filename=made.path.name, caption=caption,
                                             reply_parameters=reply)

    async def _send_documents(self, chat_id: int, paths: tuple[Path, ...], reply_to: int) -> None:
        for group in _media_groups(paths):
            files = await asyncio.to_thread(read_files, group)  # off the event loop
            if len(group) == 1:
                await self.app.bot.send_document(chat_id, files[0], filename=group[0].name,
                                                 reply_parameters=_reply_to(reply_to))
                continue
            media = [InputMediaDocument(data, filename=p.name) for p, data in zip(group, files, strict=True)]
            await self.app.bot.send_media_group(chat_id, media, reply_parameters=_reply_to(reply_to))

    # -- ChatGateway ------------------------------------------------------------------------------
    async def notify(self, update: JobUpdate) -> None:
        ref = _parse_ref(update.status_ref)
        if ref is not None:
            self._show(ref, update.text)
        elif update.stage in ("failed", "cancelled", "waiting"):  # worth a message of its own
            await self.app.bot.send_message(int(update.chat_id), update.text)

    async def deliver(self, delivery: BoardDelivery) -> None:
        photo = await asyncio.to_thread(read_photo, delivery.grid_path)  # off the event loop
        caption = _caption(text("board_caption", delivery.lang, title=delivery.title, job=delivery.job_id,
                                frames=len(delivery.frame_paths), mode=delivery.mode, seed=delivery.seed))
        ref = _parse_ref(delivery.status_ref)
        await self.app.bot.send_photo(
            int(delivery.chat_id), photo, caption=caption,
            reply_markup=board_keyboard(delivery.job_id, delivery.lang),
            reply_parameters=_reply_to(ref[1]) if ref else None,
        )
        if ref is not None:
            self._show(ref, delivery.text)

    def _show(self, ref: tuple[str, int], new_text: str) -> None:
        chat_id, message_id = ref
        self.edits.submit(chat_id, message_id, functools.partial(self._edit_status, chat_id, message_id, new_text))

    async def _edit_status(self, chat_id: str, message_id: int, new_text: str) -> None:
        try:
            await self.app.bot.edit_message_text(new_text, chat_id=int(chat_id), message_id=message_id)
        except TelegramBadRequest as exc:
            if "message is not modified" not in str(exc).lower():
                raise

    # -- errors -----------------------------------------------------------------------------------
    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram handler failed", exc_info=context.error)
        if isinstance(update, Update) and update.effective_message is not None and update.callback_query is None:
            lang = resolve_language(update.effective_user.language_code if update.effective_user else None)
            await update.effective_message.reply_text(text("err_internal", lang))


# -- helpers ---------------------------------------------------------------------------------------


def requester_of(update: Update) -> Requester:
    """The person behind an update; a message sent on behalf of a chat is refused.

    Telegram hides who sent those: every anonymous group admin arrives as GroupAnonymousBot
    (1087968824) and everyone posting as a channel as Channel_Bot (136817688), the real sender
    only in ``sender_chat``. Keying on that user would pool them all into one quota and let a
    banned user through; keying on ``sender_chat`` would let a banned user come back as any new
    channel, a fresh quota each, for free. Quotas and bans are per person, so ask for one. A
    button press always carries the real user, and is never refused."""
    message = update.message  # the user's own message (None for a button press)
    if message is not None and message.sender_chat is not None:
        raise BadRequest("err_anonymous_sender")
    user, chat = update.effective_user, update.effective_chat
    return Requester(
        platform=PLATFORM, user_id=str(user.id), chat_id=str(chat.id),
        display_name=user.full_name or user.username or "", locale=user.language_code,
    )


class StoryCaption(filters.MessageFilter):
    """A caption that is the command ``/story`` or ``/story@ThisBot``, as CommandHandler reads a text:
    a ``bot_command`` entity at offset 0; ``/story@OtherBot`` is another bot's."""

    def filter(self, message: Message) -> bool:
        caption, entities = message.caption, message.caption_entities
        if not caption or not entities or entities[0].type != MessageEntity.BOT_COMMAND or entities[0].offset:
            return False
        command, _, bot_name = caption[1 : entities[0].length].partition("@")
        return command.lower() == "story" and (not bot_name or bot_name.lower() == message.get_bot().username.lower())


def picture_of(message: Message, *, own: bool) -> PhotoSize | Document | None:
    """The picture a message carries: a photo's largest size, or a file. A file sent with the
    /story itself (``own``) is the user's picture whatever it is (the service refuses one that
    is not an image); a replied-to file that is not an image is passed over."""
    if message.photo:
        return message.photo[-1]  # sizes come smallest first
    document = message.document
    if document is None:
        return None
    return document if own or (document.mime_type or "").startswith("image/") else None


def _replying(handler: Callable[[Update, Requester, str], Awaitable[str | None]]):
    """Wrap a command: build the requester, run it, reply with its text or the StoryError's."""

    async def wrapped(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        lang = resolve_language(update.effective_user.language_code if update.effective_user else None)
        message = update.effective_message
        try:
            reply = await handler(update, requester_of(update), lang)
        except StoryError as exc:
            reply = exc.message(lang)
        if reply:
            await message.reply_text(reply, reply_parameters=_reply_to(message.message_id))

    return wrapped


def _arguments(message_text: str) -> str:
    """What follows ``/command`` or ``/command@BotName``, line breaks kept."""
    parts = message_text.split(None, 1)
    return parts[1] if len(parts) > 1 else ""


def _target_user(update: Update) -> tuple[str, str]:
    message = update.effective_message
    args = _arguments(message.text or "").split(maxsplit=1)
    if args and args[0].lstrip("-").isdigit():
        return args[0], args[1] if len(args) > 1 else ""
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None:
        return str(replied.from_user.id), " ".join(args)
    raise BadRequest("err_need_reply_or_id")


def _caption(caption: str) -> str:
    """A caption within Telegram's limit (the title is the user's own words, of any length)."""
    return caption if len(caption) <= MAX_CAPTION else caption[: MAX_CAPTION - 1] + "…"


def _reply_to(message_id: int) -> ReplyParameters:
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)


def _parse_ref(ref: str | None) -> tuple[str, int] | None:
    if not ref or ":" not in ref:
        return None
    chat_id, _, message_id = ref.rpartition(":")
    return (chat_id, int(message_id)) if message_id.isdigit() else None


def _media_groups(paths: tuple[Path, ...]) -> list[tuple[Path, ...]]:
    """Split into Telegram media groups of 2-10 items (a lone item goes as one document)."""
    low, high = MEDIA_GROUP
    if len(paths) <= high:
        return [paths]
    groups = [paths[i : i + high] for i in range(0, len(paths), high)]
    if len(groups[-1]) < low:  # 11 -> 9 + 2, never 10 + 1
        groups[-2], groups[-1] = groups[-2][:-1], groups[-2][-1:] + groups[-1]
    return groups
