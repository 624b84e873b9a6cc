"""The real python-telegram-bot against the local fake Bot API (tests/fakes/telegram_server.py)."""

from __future__ import annotations

import struct
import zlib
from contextlib import asynccontextmanager

import pytest
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputMediaDocument, Update
from telegram.error import BadRequest
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
)

from tests.fakes.telegram_server import BOT_ID, FakeTelegram

TOKEN = "123456:TEST-token"
USER = 4242
GROUP = -1001234567890


def png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG, built without any imaging library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80\x20\x10" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture
async def fake():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def build(fake: FakeTelegram, *, rate_limiter: AIORateLimiter | None = None) -> Application:
    builder = (ApplicationBuilder().token(TOKEN).base_url(fake.base_url).base_file_url(fake.base_file_url))
    if rate_limiter is not None:
        builder = builder.rate_limiter(rate_limiter)
    app = builder.build()

    async def story(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Again", callback_data="again:1")]])
        await update.effective_message.reply_text(f"story: {' '.join(context.args)}", reply_markup=keyboard)

    async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.callback_query.answer(f"pressed {update.callback_query.data}")

    app.add_handler(CommandHandler("story", story))
    app.add_handler(CallbackQueryHandler(button))
    return app


@asynccontextmanager
async def running(app: Application):
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    try:
        yield app
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


async def test_commands_in_private_and_group_chats_get_replies(fake: FakeTelegram) -> None:
    async with running(build(fake)):
        fake.send_message("/story hello", chat_id=USER, user_id=USER)
        fake.send_message("/story@AldarBot hi", chat_id=GROUP, user_id=USER, chat_type="supergroup",
                          chat_title="Steppe")
        fake.send_message("/story@OtherBot no", chat_id=GROUP, user_id=USER, chat_type="supergroup")
        await fake.wait_for(lambda f: f.messages(USER) and f.messages(GROUP))

    [private] = fake.messages(USER)
    assert private.text == "story: hello" and private.kind == "text"
    assert private.callback_data == ["again:1"]
    assert "reply_to_message" not in private.raw  # PTB 22 quotes by default only outside private chats
    assert private.raw["from"]["id"] == BOT_ID
    [group] = fake.messages(GROUP)  # the command for @OtherBot is ignored
    assert group.text == "story: hi"
    assert group.raw["chat"] == {"id": GROUP, "type": "supergroup", "title": "Steppe"}
    assert group.message_id == 3  # ids count per chat, the users' messages included
    assert group.raw["reply_to_message"]["text"] == "/story@AldarBot hi"
    assert all(c.token == TOKEN for c in fake.calls)
    # start-up: getMe, deleteWebhook, then long polls; stop confirms the last offset
    assert [c.method for c in fake.calls[:2]] == ["getMe", "deleteWebhook"]
    assert fake.calls[-1].method == "getUpdates" and fake.calls[-1].params["timeout"] == 0
    assert fake.pending_updates == [] and fake.conflicts == 0


async def test_a_pressed_button_is_answered_and_state_survives_a_restart(fake: FakeTelegram) -> None:
    async with running(build(fake)):
        fake.send_message("/story one", chat_id=USER, user_id=USER)
        message = await fake.wait_for(lambda f: f.last_message(USER))

    await fake.stop()  # the fake itself restarts too, on the same port, keeping its state
    await fake.start()
    query_id = fake.press_button("again:1", message=message, user_id=USER)  # while the bot is down
    with pytest.raises(AssertionError, match="no button"):
        fake.press_button("nope", message=message, user_id=USER)
    async with running(build(fake)):
        answer = await fake.wait_for(lambda f: f.answered(query_id))
    assert answer["text"] == "pressed again:1" and answer["show_alert"] is False
    assert fake.unanswered() == []
    assert len(fake.messages(USER)) == 1  # the first /story was confirmed, so not handled twice


async def test_photos_media_groups_and_edits(fake: FakeTelegram) -> None:
    fake.send_message("hi", chat_id=USER, user_id=USER)
    app = build(fake)
    async with app:  # initialize/shutdown only: direct Bot calls
        bot = app.bot
        image = png(40, 30)
        sent = await bot.send_photo(USER, image, caption="<b>grid</b>", parse_mode="HTML")
        assert sent.photo[-1].width == 40 and sent.caption == "grid"
        stored = fake.last_message(USER)
        assert stored.kind == "photo" and stored.photo_bytes == image and stored.caption == "grid"
        assert fake.calls_to("sendPhoto")[0].files == {"photo": image}

        album = await bot.send_media_group(USER, [
            InputMediaDocument(b"frame one", filename="f1.txt"),
            InputMediaDocument(b"frame two", filename="f2.txt", caption="two"),
        ])
        assert len(album) == 2 and album[0].media_group_id == album[1].media_group_id
        [group] = fake.media_groups(USER)
        assert [m.document_bytes for m in group] == [b"frame one", b"frame two"]
        assert [m.document_name for m in group] == ["f1.txt", "f2.txt"]
        assert album[1].caption == "two" and album[0].document.file_name == "f1.txt"

        status = await bot.send_message(USER, "queued")
        await bot.edit_message_text("rendering", chat_id=USER, message_id=status.message_id)
        with pytest.raises(BadRequest, match="(?i)message is not modified"):
            await bot.edit_message_text("rendering", chat_id=USER, message_id=status.message_id)
        with pytest.raises(BadRequest, match="(?i)message to edit not found"):
            await bot.edit_message_text("x", chat_id=USER, message_id=999)
        with pytest.raises(BadRequest, match="(?i)can't parse entities"):
            await bot.send_message(USER, "1. done.", parse_mode="MarkdownV2")
        assert fake.message(USER, status.message_id).text == "rendering"
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Cancel", callback_data="cancel:7")]])
        bold = await bot.edit_message_text("*1\\.* done", chat_id=USER, message_id=status.message_id,
                                    parse_mode="MarkdownV2", reply_markup=keyboard)
        assert bold.text == "1. done" and bold.entities[0].type == "bold" and bold.entities[0].length == 2
        assert fake.message(USER, status.message_id).callback_data == ["cancel:7"]
        edited = await bot.edit_message_text("finished", chat_id=USER, message_id=status.message_id)
        assert edited.reply_markup is None  # as on Telegram: an edit without reply_markup drops the keyboard
        assert fake.message(USER, status.message_id).edits == 3
        assert await bot.delete_message(USER, status.message_id)
        assert fake.message(USER, status.message_id).deleted

        with pytest.raises(Exception, match="(?i)not found"):  # unknown methods: recorded, 404
            await bot.get_chat(USER)
        assert fake.calls_to("getChat")[-1].status == 404


async def test_a_429_on_send_photo_is_retried_by_the_rate_limiter(fake: FakeTelegram, monkeypatch) -> None:
    # PTB 22.8's RetryAfter.__init__ reads its own int-valued retry_after and so always emits a
    # PTBDeprecationWarning, unless the timedelta behaviour is opted into.
    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    fake.send_message("hi", chat_id=USER, user_id=USER)
    fake.fail_next("sendPhoto", retry_after=1)
    app = build(fake, rate_limiter=AIORateLimiter(max_retries=1))
    async with running(app):
        sent = await app.bot.send_photo(USER, png())
    attempts = fake.calls_to("sendPhoto")
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 1.0
    assert sent.message_id == fake.last_message(USER).message_id
    assert fake.last_message(USER).photo_bytes == png()


async def test_a_users_photo_and_file_arrive_as_telegram_sends_them_and_download(fake: FakeTelegram) -> None:
    picture = png(400, 300)
    photo = fake.send_photo(picture, chat_id=USER, user_id=USER, caption="/story@AldarBot Aldar rides")
    fake.send_document(b"just text", chat_id=USER, user_id=USER, filename="notes.txt", mime_type="text/plain",
                       caption="not a command", reply_to=photo)
    fake.send_photo(picture, chat_id=USER, user_id=USER, file_size=40_000_000)  # declared, not sent
    async with build(fake) as app:
        bot = app.bot
        first, second, third = [u.message for u in await bot.get_updates(timeout=0)]

        assert [(s.width, s.height) for s in first.photo] == [(90, 68), (320, 240), (400, 300)]  # largest last
        assert first.caption == "/story@AldarBot Aldar rides" and first.text is None
        [command] = first.caption_entities
        assert (command.type, command.offset, command.length) == ("bot_command", 0, len("/story@AldarBot"))
        largest = await bot.get_file(first.photo[-1].file_id)
        assert largest.file_size == first.photo[-1].file_size == len(picture)
        assert bytes(await largest.download_as_bytearray()) == picture  # the largest size is the bytes sent
        thumb = await (await bot.get_file(first.photo[0].file_id)).download_as_bytearray()
        assert bytes(thumb[:2]) == b"\xff\xd8"  # the smaller sizes are JPEG thumbnails
        assert fake.downloads == [first.photo[-1].file_id, first.photo[0].file_id]

        assert second.document.file_name == "notes.txt" and second.document.mime_type == "text/plain"
        assert second.caption_entities == () and second.reply_to_message.photo[-1].width == 400
        text_file = await bot.get_file(second.document.file_id)
        assert bytes(await text_file.download_as_bytearray()) == b"just text"

        assert third.photo[-1].file_size == 40_000_000 and third.caption is None
        with pytest.raises(BadRequest, match="(?i)file is too big"):  # bots may download 20 MB at most
            await bot.get_file(third.photo[-1].file_id)
        assert third.photo[-1].file_id not in fake.downloads
    with pytest.raises(AssertionError, match="send_document"):
        fake.send_photo(b"not a picture", chat_id=USER, user_id=USER)
