"""A local fake of the Telegram Bot API on 127.0.0.1, for the real python-telegram-bot.

Point the library at it::

    fake = FakeTelegram()
    await fake.start()
    app = (ApplicationBuilder().token(TOKEN)
           .base_url(f"{fake.base}/bot").base_file_url(f"{fake.base}/file/bot").build())

It runs in the test's own event loop (an aiohttp ``AppRunner`` + ``TCPSite``), and its state
(chats, messages, files, queued updates, calls) lives on the object, so a bot under test can
be stopped and started again against the same fake.

What it does, like the real server:

* ``POST|GET {base}/bot{TOKEN}/{method}`` with urlencoded, JSON or multipart bodies. PTB sends
  every non-string value JSON-encoded (``chat_id=42``, ``reply_markup={...}``); those are
  decoded. Method names are matched exactly; an unknown one is a 404 and is recorded.
* Replies ``{"ok": true, "result": ...}`` with realistic objects (Message, User, Chat,
  PhotoSize, Document). Errors are ``{"ok": false, "error_code", "description"[, "parameters"]}``
  with the real descriptions: "message is not modified", "message to edit not found",
  "chat not found", "BUTTON_DATA_INVALID", "message is too long", "can't parse entities", ...
* Limits from the platform: text ≤ 4096 and caption ≤ 1024 UTF-16 units (after parse_mode),
  ``callback_data`` 1–64 bytes, media groups of 2–10 items with no mixing of documents and
  photos, photo width + height ≤ 10000 and aspect ratio ≤ 20, photo ≤ 10 MB, document and video ≤ 50 MB.
* ``editMessageText``/``editMessageCaption`` without ``reply_markup`` REMOVE the inline keyboard,
  as on Telegram; the same content and markup again is a 400 "message is not modified".
* ``parse_mode`` HTML and MarkdownV2 are parsed (strictly enough to reject an unescaped ``.``
  in MarkdownV2 or an unsupported HTML tag); the stored ``text`` is the rendered text, and
  ``entities`` come back in the Message.
* ``getUpdates`` long-polls (``timeout`` capped at ``max_poll_s``, 1 s by default), honours
  ``offset`` (updates below it are confirmed and forgotten; a negative offset keeps the last
  ``-offset``), ``limit`` and ``allowed_updates``. A second concurrent ``getUpdates`` ends the
  first with 409 "Conflict: terminated by other getUpdates request", as when two bot instances
  poll one token; ``conflicts`` counts them. ``on_confirm(offset)``, when set, is called the moment
  a ``getUpdates`` confirms updates, before they are forgotten (what a crash would leave behind).

* ``getFile`` answers a file's ``file_path`` (and refuses one over 20 MB: "file is too big");
  ``GET {base}/file/bot{TOKEN}/{file_path}`` downloads it, and is recorded in ``downloads``.

Injection (call from the test's event loop): ``send_message``, ``send_photo`` (a photo: several
PhotoSizes, the largest last), ``send_document`` (a file) and ``press_button`` queue updates; a
text or caption starting with "/" gets its ``bot_command`` entity; ``fail_next`` scripts errors
(429 with ``retry_after`` by default); ``block`` makes a chat answer 403. Inspection: ``calls``,
``calls_to``, ``messages``, ``last_message``, ``media_groups``, ``files``, ``downloads``,
``answered``, ``unanswered``, ``wait_for``.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.polling import poll_until

BOT_ID = 999
BOT_USERNAME = "AldarBot"
BOT_FIRST_NAME = "Aldar"
BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": BOT_FIRST_NAME, "username": BOT_USERNAME}
# who ``from`` names on a message sent on behalf of a chat (the real sender is ``sender_chat``)
GROUP_ANONYMOUS_BOT = {"id": 1087968824, "is_bot": True, "first_name": "Group", "username": "GroupAnonymousBot"}
CHANNEL_BOT = {"id": 136817688, "is_bot": True, "first_name": "Channel", "username": "Channel_Bot"}

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_PHOTO_BYTES = 10 * 1000 * 1000
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # getFile refuses bigger files: "file is too big"
CHAT_ACTIONS = {
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note", "upload_video_note",
}
NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and reply markup "
                "are exactly the same as a current content and reply markup of the message")
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"

# Form fields whose value is a plain string even when it looks like JSON (PTB JSON-encodes
# every other value, so "42" for chat_id is the int 42, but "42" for text stays "42").
_STRING_FIELDS = {
    "text", "caption", "callback_query_id", "parse_mode", "action", "inline_message_id",
    "business_connection_id", "message_effect_id", "language_code", "url", "photo", "document",
    "video", "audio", "animation", "sticker", "voice", "thumbnail", "file_id", "description",
    "short_description", "name", "query_id", "secret_token", "ip_address", "emoji", "title",
}
# Fields that hold JSON even in a JSON body, where a client may still send them as strings.
_JSON_FIELDS = {
    "reply_markup", "media", "reply_parameters", "entities", "caption_entities", "commands",
    "allowed_updates", "link_preview_options", "scope", "results",
}


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------
@dataclass
class Call:
    """One HTTP request the client made, decoded."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes]
    at: float
    token: str = ""
    status: int = 0  # HTTP status of the answer (200, 400, 404, 409, 429, ...)
    description: str = ""  # the error description, when status != 200


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    data: bytes
    filename: str | None = None
    mime_type: str | None = None
    file_path: str = ""
    declared_size: int | None = None  # what Telegram says the size is, when a test wants it to differ

    @property
    def file_size(self) -> int:
        return self.declared_size if self.declared_size is not None else len(self.data)


@dataclass
class BotMessage:
    """The current state of one message the bot sent (edits applied)."""

    chat_id: int
    message_id: int
    kind: str  # "text" | "photo" | "document" | "video"
    raw: dict[str, Any]  # the Telegram Message object, as getUpdates/press_button would show it
    text: str | None = None  # rendered text (parse_mode applied)
    caption: str | None = None
    reply_markup: dict[str, Any] | None = None
    photo_bytes: bytes | None = None
    document_bytes: bytes | None = None
    document_name: str | None = None
    media_group_id: str | None = None
    parse_mode: str | None = None
    edits: int = 0
    deleted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier states of ``raw``

    @property
    def buttons(self) -> list[tuple[str, str | None]]:
        """(text, callback_data or url) of every inline button, row by row."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [(b.get("text", ""), b.get("callback_data", b.get("url"))) for row in rows for b in row]

    @property
    def callback_data(self) -> list[str]:
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [b["callback_data"] for row in rows for b in row if "callback_data" in b]


@dataclass
class _Failure:
    status: int
    description: str
    retry_after: int | None
    times: int


@dataclass
class _Chat:
    obj: dict[str, Any]
    next_message_id: int = 1
    raw_messages: dict[int, dict[str, Any]] = field(default_factory=dict)  # every message, user's too
    bot_messages: dict[int, BotMessage] = field(default_factory=dict)
    blocked: bool = False


class TgError(Exception):
    def __init__(self, description: str, status: int = 400, parameters: dict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


@dataclass
class _Part:
    data: bytes
    filename: str | None
    content_type: str | None


# ---------------------------------------------------------------------------------------------
# the fake
# ---------------------------------------------------------------------------------------------
class FakeTelegram:
    def __init__(self, *, max_poll_s: float = 1.0, strict_chats: bool = False) -> None:
        self.max_poll_s = max_poll_s
        self.strict_chats = strict_chats  # True: sending to a chat no update mentioned is "chat not found"
        self.calls: list[Call] = []
        self.files: dict[str, StoredFile] = {}
        self.downloads: list[str] = []  # file_id of every file downloaded, in order
        self.commands: dict[str, list[dict]] = {}  # json(scope)+language -> setMyCommands list
        self.conflicts = 0
        self.port = 0
        self._chats: dict[int, _Chat] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._media_group_ids = itertools.count(1)
        self._callbacks: dict[str, dict[str, Any]] = {}  # id -> {"query": ..., "answer": params|None}
        self._failures: dict[str, list[_Failure]] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._changed = asyncio.Event()
        self._poll_generation = 0
        self.on_confirm: Callable[[int], None] | None = None
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Callable[[dict, dict[str, _Part]], Any]] = {
            "getMe": self._get_me,
            "logOut": lambda p, f: True,
            "close": lambda p, f: True,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": lambda p, f: {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)},
            "getUpdates": None,  # async, handled in _api
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "editMessageMedia": self._edit_message_media,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "sendVideo": self._send_video,
            "sendMediaGroup": self._send_media_group,
            "answerCallbackQuery": self._answer_callback_query,
            "sendChatAction": self._send_chat_action,
            "deleteMessage": self._delete_message,
            "getFile": self._get_file,
        }

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """For ``ApplicationBuilder().base_url(...)``."""
        return f"{self.base}/bot"

    @property
    def base_file_url(self) -> str:
        """For ``ApplicationBuilder().base_file_url(...)``."""
        return f"{self.base}/file/bot"

    async def start(self) -> FakeTelegram:
        """Serve on 127.0.0.1 (a free port the first time, the same port on a restart)."""
        self._closing = False
        app = web.Application(client_max_size=MAX_DOCUMENT_BYTES + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop serving; state is kept (``start()`` again serves it on the same port)."""
        self._closing = True
        self._wake()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- injection -----------------------------------------------------------------------------
    def send_message(self, text: str, *, chat_id: int, user_id: int, username: str = "user",
                     chat_type: str = "private", chat_title: str | None = None, language_code: str = "en",
                     reply_to: dict | BotMessage | None = None, sender_chat: int | None = None) -> dict[str, Any]:
        """Queue a user's text message; returns the Message object (usable as ``reply_to`` later).

        ``sender_chat``: the user sends it on behalf of that chat, as Telegram shows it: the group
        itself (an anonymous admin; ``from`` is GroupAnonymousBot) or a channel (``from`` is
        Channel_Bot), named in ``sender_chat``; ``user_id`` is then nowhere in the update."""
        body: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            body["entities"] = _command_entities(text)
        return self._user_message(body, chat_id=chat_id, user_id=user_id, username=username, chat_type=chat_type,
                                  chat_title=chat_title, language_code=language_code, reply_to=reply_to,
                                  sender_chat=sender_chat)

    def send_photo(self, data: bytes, *, chat_id: int, user_id: int, caption: str | None = None,
                   file_size: int | None = None, username: str = "user", chat_type: str = "private",
                   chat_title: str | None = None, language_code: str = "en", reply_to: dict | BotMessage | None = None,
                   sender_chat: int | None = None) -> dict[str, Any]:
        """Queue a user's photo message; returns the Message object.

        ``photo`` holds several PhotoSizes, smallest first, as Telegram sends them: JPEG
        thumbnails at 90, 320 and 800 px on the long side (those smaller than the picture), and
        last the picture itself, whose file is ``data`` exactly (Telegram would re-encode it as
        a JPEG of at most 2560 px; keeping the bytes lets a test follow its pixels). Every size
        is a file that ``getFile`` and the file download serve. ``file_size`` declares another
        size for the largest one (in the PhotoSize and in ``getFile``'s answer), so a test can
        send a picture "over the limit" without sending the bytes. A caption starting with "/"
        gets a ``bot_command`` entity in ``caption_entities``."""
        try:
            width, height = _image_size(data)
        except TgError:
            raise AssertionError("send_photo: Telegram's clients send only pictures as photos; "
                                 "send anything else with send_document") from None
        sizes = []
        for side in (90, 320, 800):
            if max(width, height) > side:
                sizes.append(_photo_size(self._store_file(_thumbnail(data, side), "photo", ".jpg", "image/jpeg")))
        sizes.append(_photo_size(self._store_file(data, "photo", ".jpg", None, declared_size=file_size), (width, height)))
        return self._user_message({"photo": sizes, **_caption_fields(caption)}, chat_id=chat_id, user_id=user_id,
                                  username=username, chat_type=chat_type, chat_title=chat_title,
                                  language_code=language_code, reply_to=reply_to, sender_chat=sender_chat)

    def send_document(self, data: bytes, *, chat_id: int, user_id: int, filename: str = "file",
                      mime_type: str | None = "application/octet-stream", caption: str | None = None,
                      file_size: int | None = None, username: str = "user", chat_type: str = "private",
                      chat_title: str | None = None, language_code: str = "en",
                      reply_to: dict | BotMessage | None = None, sender_chat: int | None = None) -> dict[str, Any]:
        """Queue a user's file ("send as file": a picture keeps its bytes); returns the Message.
        ``file_size`` and the caption as for ``send_photo``."""
        stored = self._store_file(data, "document", _extension(filename), mime_type, filename=filename,
                                  declared_size=file_size)
        return self._user_message({"document": _document_obj(stored), **_caption_fields(caption)}, chat_id=chat_id,
                                  user_id=user_id, username=username, chat_type=chat_type, chat_title=chat_title,
                                  language_code=language_code, reply_to=reply_to, sender_chat=sender_chat)

    def _user_message(self, body: dict[str, Any], *, chat_id: int, user_id: int, username: str, chat_type: str,
                      chat_title: str | None, language_code: str, reply_to: dict | BotMessage | None,
                      sender_chat: int | None) -> dict[str, Any]:
        user = self._user(user_id, username, language_code)
        chat = self._chat(chat_id, chat_type=chat_type, title=chat_title, user=user)
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat),
            "date": int(time.time()),
            "chat": dict(chat.obj),
            "from": dict(user),
            **body,
        }
        if sender_chat is not None:
            on_behalf = self._chat(sender_chat, chat_type=None if sender_chat == chat_id else "channel")
            message["sender_chat"] = dict(on_behalf.obj)
            message["from"] = dict(GROUP_ANONYMOUS_BOT if sender_chat == chat_id else CHANNEL_BOT)
        if reply_to is not None:
            message["reply_to_message"] = _shallow(_raw(reply_to))
        chat.raw_messages[message["message_id"]] = message
        self._enqueue({"message": message})
        return message

    def press_button(self, data: str, *, message: dict | BotMessage, user_id: int, username: str = "user",
                     language_code: str = "en", check: bool = True) -> str:
        """Queue a CallbackQuery on a bot message; returns the query id.

        The message's current state is used. With ``check``, ``data`` must be the callback_data of
        one of its current buttons (a user cannot press a button that is not there).
        """
        raw = _raw(message)
        chat_id, message_id = raw["chat"]["id"], raw["message_id"]
        chat = self._chats.get(chat_id)
        current = chat.bot_messages.get(message_id) if chat else None
        if current is None:
            raise AssertionError(f"press_button: message {message_id} in chat {chat_id} is not a bot message")
        if current.deleted:
            raise AssertionError(f"press_button: message {message_id} in chat {chat_id} was deleted")
        if check and data not in current.callback_data:
            raise AssertionError(f"press_button: no button with callback_data {data!r} on message {message_id}; "
                                 f"buttons are {current.buttons}")
        query_id = str(next(self._callback_ids) * 1000003)
        query = {
            "id": query_id,
            "from": dict(self._user(user_id, username, language_code)),
            "message": json.loads(json.dumps(current.raw)),
            "chat_instance": str(abs(hash(("chat", chat_id))) % 10**12),
            "data": data,
        }
        self._callbacks[query_id] = {"query": query, "answer": None}
        self._enqueue({"callback_query": query})
        return query_id

    def answered(self, callback_id: str) -> dict[str, Any] | None:
        """The answerCallbackQuery params (text, show_alert, ...) for that query, or None."""
        entry = self._callbacks.get(callback_id)
        return None if entry is None else entry["answer"]

    def unanswered(self) -> list[str]:
        """Ids of callback queries nobody has answered (every one must be answered)."""
        return [qid for qid, entry in self._callbacks.items() if entry["answer"] is None]

    def fail_next(self, method: str, *, status: int = 429, description: str = "Too Many Requests: retry after 1",
                  retry_after: int | None = 1, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer this error (429 + retry_after by default)."""
        self._failures.setdefault(method, []).append(_Failure(status, description, retry_after, times))

    def block(self, chat_id: int, blocked: bool = True) -> None:
        """The user blocked the bot (private) or kicked it (group): sends to the chat answer 403."""
        self._chat(chat_id).blocked = blocked

    def add_chat(self, chat_id: int, *, chat_type: str | None = None, title: str | None = None,
                 username: str = "user") -> dict[str, Any]:
        """Make a chat known (needed with ``strict_chats`` before the bot may post to it)."""
        user = self._user(chat_id, username, "en") if (chat_type or _guess_type(chat_id)) == "private" else None
        return self._chat(chat_id, chat_type=chat_type, title=title, user=user).obj

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates queued and not yet confirmed by a getUpdates offset."""
        return list(self._updates)

    # -- inspection ----------------------------------------------------------------------------
    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def messages(self, chat_id: int, *, include_deleted: bool = False) -> list[BotMessage]:
        """The bot's messages in a chat, oldest first, in their current state."""
        chat = self._chats.get(chat_id)
        if chat is None:
            return []
        return [m for _, m in sorted(chat.bot_messages.items()) if include_deleted or not m.deleted]

    def last_message(self, chat_id: int) -> BotMessage | None:
        found = self.messages(chat_id)
        return found[-1] if found else None

    def message(self, chat_id: int, message_id: int) -> BotMessage | None:
        chat = self._chats.get(chat_id)
        return chat.bot_messages.get(message_id) if chat else None

    def media_groups(self, chat_id: int) -> list[list[BotMessage]]:
        """The albums sent to a chat, each a list of its messages (``photo_bytes``/``document_bytes``)."""
        groups: dict[str, list[BotMessage]] = {}
        for m in self.messages(chat_id, include_deleted=True):
            if m.media_group_id:
                groups.setdefault(m.media_group_id, []).append(m)
        return list(groups.values())

    def chats(self) -> dict[int, dict[str, Any]]:
        return {cid: dict(c.obj) for cid, c in self._chats.items()}

    async def wait_for(self, predicate: Callable[[FakeTelegram], Any], timeout: float = 10) -> Any:
        """Poll (every 0.02 s) until ``predicate(self)`` is truthy; returns its value."""
        return await poll_until(lambda: predicate(self), timeout=timeout, describe=self.summary)

    def summary(self, last: int = 20) -> str:
        lines = []
        for c in self.calls[-last:]:
            params = {k: (v if len(repr(v)) < 80 else repr(v)[:77] + "...") for k, v in c.params.items()}
            files = f" files={ {k: len(v) for k, v in c.files.items()} }" if c.files else ""
            err = f" {c.description!r}" if c.status != 200 else ""
            lines.append(f"  {c.method} -> {c.status}{err} {params}{files}")
        return "\n".join(lines) or "  (no calls)"

    # -- HTTP ----------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        token = request.match_info["token"]
        try:
            params, parts = await _read_params(request)
        except Exception as exc:  # a body we cannot parse is the client's bug: say so loudly
            params, parts = {"_unparsed": repr(exc)}, {}
            call = Call(method, params, {}, time.time(), token)
            self.calls.append(call)
            return self._answer(call, TgError(f"Bad Request: fake could not parse the request body: {exc}"))
        call = Call(method, params, {k: p.data for k, p in parts.items()}, time.time(), token)
        self.calls.append(call)
        try:
            failure = self._take_failure(method)
            if failure is not None:
                raise failure
            if method not in self._methods:
                raise TgError("Not Found: method not found", 404)
            if method == "getUpdates":
                result = await self._get_updates(params, request)
            else:
                result = self._methods[method](params, parts)
        except TgError as exc:
            return self._answer(call, exc)
        return self._answer(call, result)

    def _answer(self, call: Call, outcome: Any) -> web.Response:
        if isinstance(outcome, TgError):
            call.status, call.description = outcome.status, outcome.description
            body: dict[str, Any] = {"ok": False, "error_code": outcome.status, "description": outcome.description}
            if outcome.parameters:
                body["parameters"] = outcome.parameters
            return web.json_response(body, status=outcome.status)
        call.status = 200
        return web.json_response({"ok": True, "result": outcome})

    async def _download(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        for stored in self.files.values():
            if stored.file_path == path:
                self.downloads.append(stored.file_id)
                return web.Response(body=stored.data, content_type=stored.mime_type or "application/octet-stream")
        return web.Response(status=404, text="Not Found")

    def _take_failure(self, method: str) -> TgError | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        parameters = {"retry_after": failure.retry_after} if failure.retry_after is not None and failure.status == 429 else None
        return TgError(failure.description, failure.status, parameters)

    # -- updates -------------------------------------------------------------------------------
    def _enqueue(self, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._update_ids), **payload}
        self._updates.append(update)
        self._wake()
        return update

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _get_updates(self, params: dict, request: web.Request) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        limit = max(1, min(100, int(params.get("limit") or 100)))
        timeout = max(0.0, min(float(params.get("timeout") or 0), self.max_poll_s))
        allowed = params.get("allowed_updates") or None
        if offset > 0:
            if self.on_confirm is not None and any(u["update_id"] < offset for u in self._updates):
                self.on_confirm(offset)
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]
        self._poll_generation += 1
        me = self._poll_generation
        deadline = time.monotonic() + timeout
        while True:
            if me != self._poll_generation:
                self.conflicts += 1
                raise TgError("Conflict: terminated by other getUpdates request; make sure that only one "
                              "bot instance is running", 409)
            ready = [u for u in self._updates if allowed is None or _update_type(u) in allowed][:limit]
            left = deadline - time.monotonic()
            if ready or left <= 0 or self._closing or request.transport is None or request.transport.is_closing():
                return ready
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout=min(left, 0.05))
            except TimeoutError:
                pass

    def _delete_webhook(self, params: dict, parts: dict) -> bool:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    # -- bot info --------------------------------------------------------------------------------
    def _get_me(self, params: dict, parts: dict) -> dict[str, Any]:
        return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False, "can_connect_to_business": False,
                "has_main_web_app": False}

    @staticmethod
    def _commands_key(params: dict) -> str:
        return json.dumps(params.get("scope") or {"type": "default"}, sort_keys=True) + "|" + str(params.get("language_code") or "")

    def _set_my_commands(self, params: dict, parts: dict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise TgError("Bad Request: commands must be a list of at most 100 BotCommand")
        for c in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(c.get("command", ""))):
                raise TgError("Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(c.get("description", ""))) <= 256:
                raise TgError("Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[self._commands_key(params)] = commands
        return True

    def _get_my_commands(self, params: dict, parts: dict) -> list[dict]:
        return self.commands.get(self._commands_key(params), [])

    def _delete_my_commands(self, params: dict, parts: dict) -> bool:
        self.commands.pop(self._commands_key(params), None)
        return True

    # -- sending -------------------------------------------------------------------------------
    def _send_message(self, params: dict, parts: dict) -> dict[str, Any]:
        chat = self._target_chat(params)
        text, entities = _render(params.get("text"), params.get("parse_mode"), params.get("entities"))
        if not text.strip():
            raise TgError("Bad Request: message text is empty")
        if _utf16_len(text) > MAX_TEXT:
            raise TgError("Bad Request: message is too long")
        markup = _check_markup(params.get("reply_markup"))
        raw = self._new_raw(chat, params)
        raw["text"] = text
        if entities:
            raw["entities"] = entities
        if markup:
            raw["reply_markup"] = markup
        msg = BotMessage(chat.obj["id"], raw["message_id"], "text", raw, text=text, reply_markup=markup,
                         parse_mode=params.get("parse_mode"))
        return self._store(chat, msg)

    def _send_photo(self, params: dict, parts: dict) -> dict[str, Any]:
        chat = self._target_chat(params)
        caption, entities = self._caption(params)
        markup = _check_markup(params.get("reply_markup"))
        stored = self._input_file(params.get("photo"), parts, "photo")
        photo = self._photo_sizes(stored)
        raw = self._new_raw(chat, params)
        raw["photo"] = photo
        _put_caption(raw, caption, entities)
        if markup:
            raw["reply_markup"] = markup
        msg = BotMessage(chat.obj["id"], raw["message_id"], "photo", raw, caption=caption, reply_markup=markup,
                         photo_bytes=stored.data, parse_mode=params.get("parse_mode"))
        return self._store(chat, msg)

    def _send_document(self, params: dict, parts: dict) -> dict[str, Any]:
        return self._send_file(params, parts, "document", _document_obj)

    def _send_video(self, params: dict, parts: dict) -> dict[str, Any]:
        """A video: stored with what the bot declared of it (width, height, duration, streaming);
        ``document_bytes`` and ``document_name`` hold the file, as for a document."""
        def video_obj(stored) -> dict[str, Any]:
            declared = {key: int(params[key]) for key in ("width", "height", "duration") if params.get(key) is not None}
            return {**_document_obj(stored), **declared, "supports_streaming": bool(params.get("supports_streaming"))}

        return self._send_file(params, parts, "video", video_obj)

    def _send_file(self, params: dict, parts: dict, kind: str, describe) -> dict[str, Any]:
        """A file sent as ``kind`` ("document" or "video"), its object in the message made by ``describe``."""
        chat = self._target_chat(params)
        caption, entities = self._caption(params)
        markup = _check_markup(params.get("reply_markup"))
        stored = self._input_file(params.get(kind), parts, kind)
        raw = self._new_raw(chat, params)
        raw[kind] = describe(stored)
        _put_caption(raw, caption, entities)
        if markup:
            raw["reply_markup"] = markup
        msg = BotMessage(chat.obj["id"], raw["message_id"], kind, raw, caption=caption, reply_markup=markup,
                         document_bytes=stored.data, document_name=stored.filename, parse_mode=params.get("parse_mode"))
        return self._store(chat, msg)

    def _send_media_group(self, params: dict, parts: dict) -> list[dict[str, Any]]:
        chat = self._target_chat(params)
        media = params.get("media")
        if not isinstance(media, list) or len(media) < 2:
            raise TgError("Bad Request: too few messages to send as an album")
        if len(media) > 10:
            raise TgError("Bad Request: too many messages to send as an album")
        kinds = {m.get("type") for m in media}
        if not kinds <= {"photo", "document"}:
            raise TgError(f"Bad Request: fake supports only photo and document albums, got {sorted(map(str, kinds))}")
        if "document" in kinds and len(kinds) > 1:
            raise TgError("Bad Request: document can't be mixed with another media types")
        prepared = []
        for item in media:  # validate all before storing any: an album is all or nothing
            caption, entities = _render(item.get("caption"), item.get("parse_mode"), item.get("caption_entities"))
            if _utf16_len(caption) > MAX_CAPTION:
                raise TgError("Bad Request: message caption is too long")
            prepared.append((item["type"], self._input_file(item.get("media"), parts, item["type"]), caption, entities))
        group_id = str(13000000000000000 + next(self._media_group_ids))
        results = []
        for kind, stored, caption, entities in prepared:
            raw = self._new_raw(chat, params)
            raw["media_group_id"] = group_id
            if kind == "photo":
                raw["photo"] = self._photo_sizes(stored)
            else:
                raw["document"] = _document_obj(stored)
            _put_caption(raw, caption, entities)
            msg = BotMessage(chat.obj["id"], raw["message_id"], kind, raw, caption=caption or None,
                             media_group_id=group_id,
                             photo_bytes=stored.data if kind == "photo" else None,
                             document_bytes=stored.data if kind == "document" else None,
                             document_name=stored.filename if kind == "document" else None)
            results.append(self._store(chat, msg))
        return results

    def _send_chat_action(self, params: dict, parts: dict) -> bool:
        self._target_chat(params)
        if params.get("action") not in CHAT_ACTIONS:
            raise TgError("Bad Request: wrong parameter action in request")
        return True

    # -- editing -------------------------------------------------------------------------------
    def _edit_message_text(self, params: dict, parts: dict) -> dict[str, Any]:
        msg = self._message_to_edit(params)
        text, entities = _render(params.get("text"), params.get("parse_mode"), params.get("entities"))
        if msg.kind != "text":
            raise TgError("Bad Request: there is no text in the message to edit")
        if not text.strip():
            raise TgError("Bad Request: message text is empty")
        if _utf16_len(text) > MAX_TEXT:
            raise TgError("Bad Request: message is too long")
        markup = _check_markup(params.get("reply_markup"))
        if text == msg.text and entities == msg.raw.get("entities", []) and markup == msg.reply_markup:
            raise TgError(NOT_MODIFIED)
        self._begin_edit(msg)
        msg.text, msg.reply_markup, msg.parse_mode = text, markup, params.get("parse_mode")
        msg.raw["text"] = text
        _set_or_drop(msg.raw, "entities", entities)
        _set_or_drop(msg.raw, "reply_markup", markup)
        return _copy(msg.raw)

    def _edit_message_caption(self, params: dict, parts: dict) -> dict[str, Any]:
        msg = self._message_to_edit(params)
        if msg.kind == "text":
            raise TgError("Bad Request: there is no caption in the message to edit")
        caption, entities = self._caption(params)
        markup = _check_markup(params.get("reply_markup"))
        if (caption or None) == msg.caption and entities == msg.raw.get("caption_entities", []) \
                and markup == msg.reply_markup:
            raise TgError(NOT_MODIFIED)
        self._begin_edit(msg)
        msg.caption, msg.reply_markup = caption or None, markup
        msg.raw.pop("caption", None)
        msg.raw.pop("caption_entities", None)
        _put_caption(msg.raw, caption, entities)
        _set_or_drop(msg.raw, "reply_markup", markup)
        return _copy(msg.raw)

    def _edit_message_reply_markup(self, params: dict, parts: dict) -> dict[str, Any]:
        msg = self._message_to_edit(params)
        markup = _check_markup(params.get("reply_markup"))
        if markup == msg.reply_markup:
            raise TgError(NOT_MODIFIED)
        self._begin_edit(msg)
        msg.reply_markup = markup
        _set_or_drop(msg.raw, "reply_markup", markup)
        return _copy(msg.raw)

    def _edit_message_media(self, params: dict, parts: dict) -> dict[str, Any]:
        msg = self._message_to_edit(params)
        media = params.get("media")
        if not isinstance(media, dict) or media.get("type") not in ("photo", "document"):
            raise TgError("Bad Request: fake supports editMessageMedia with photo or document only")
        if msg.kind == "text":
            raise TgError("Bad Request: there is no media in the message to edit")
        caption, entities = _render(media.get("caption"), media.get("parse_mode"), media.get("caption_entities"))
        if _utf16_len(caption) > MAX_CAPTION:
            raise TgError("Bad Request: message caption is too long")
        markup = _check_markup(params.get("reply_markup"))
        stored = self._input_file(media.get("media"), parts, media["type"])
        self._begin_edit(msg)
        for key in ("photo", "document", "caption", "caption_entities"):
            msg.raw.pop(key, None)
        msg.kind, msg.caption, msg.reply_markup = media["type"], caption or None, markup
        if media["type"] == "photo":
            msg.raw["photo"] = self._photo_sizes(stored)
            msg.photo_bytes, msg.document_bytes, msg.document_name = stored.data, None, None
        else:
            msg.raw["document"] = _document_obj(stored)
            msg.photo_bytes, msg.document_bytes, msg.document_name = None, stored.data, stored.filename
        _put_caption(msg.raw, caption, entities)
        _set_or_drop(msg.raw, "reply_markup", markup)
        return _copy(msg.raw)

    def _delete_message(self, params: dict, parts: dict) -> bool:
        chat = self._target_chat(params)
        message_id = params.get("message_id")
        msg = chat.bot_messages.get(message_id)
        if msg is None:
            if message_id in chat.raw_messages and chat.raw_messages[message_id] is not None:
                chat.raw_messages[message_id] = None  # a user's message (the bot may delete it in groups)
                return True
            raise TgError("Bad Request: message to delete not found")
        if msg.deleted:
            raise TgError("Bad Request: message to delete not found")
        msg.deleted = True
        return True

    # -- callbacks and files -------------------------------------------------------------------
    def _answer_callback_query(self, params: dict, parts: dict) -> bool:
        entry = self._callbacks.get(str(params.get("callback_query_id")))
        if entry is None or entry["answer"] is not None:
            raise TgError(QUERY_INVALID)
        text = params.get("text")
        if text is not None and len(text) > 200:
            raise TgError("Bad Request: MESSAGE_TOO_LONG")
        entry["answer"] = {"text": text, "show_alert": bool(params.get("show_alert", False)),
                           **{k: v for k, v in params.items() if k not in ("callback_query_id", "text", "show_alert")}}
        return True

    def _get_file(self, params: dict, parts: dict) -> dict[str, Any]:
        stored = self.files.get(str(params.get("file_id")))
        if stored is None:
            raise TgError("Bad Request: invalid file_id")
        if stored.file_size > MAX_DOWNLOAD_BYTES:
            raise TgError("Bad Request: file is too big")
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                "file_size": stored.file_size, "file_path": stored.file_path}

    # -- helpers -------------------------------------------------------------------------------
    def _user(self, user_id: int, username: str, language_code: str) -> dict[str, Any]:
        user = {"id": user_id, "is_bot": False, "first_name": username.capitalize() or "User",
                "username": username, "language_code": language_code}
        self._users[user_id] = user
        return user

    def _chat(self, chat_id: int, *, chat_type: str | None = None, title: str | None = None,
              user: dict | None = None) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            chat_type = chat_type or _guess_type(chat_id)
            if chat_type == "private":
                user = user or self._users.get(chat_id) or {"first_name": "User", "username": f"user{chat_id}"}
                obj = {"id": chat_id, "type": "private", "first_name": user["first_name"], "username": user["username"]}
            else:
                obj = {"id": chat_id, "type": chat_type, "title": title or f"Group {chat_id}"}
            chat = self._chats[chat_id] = _Chat(obj)
        elif title and chat.obj.get("type") != "private":
            chat.obj["title"] = title
        return chat

    def _target_chat(self, params: dict) -> _Chat:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise TgError("Bad Request: chat_id is empty")
        if isinstance(chat_id, str):
            if re.fullmatch(r"-?\d+", chat_id):
                chat_id = int(chat_id)
            else:
                matches = [c for c in self._chats.values() if "@" + str(c.obj.get("username")) == chat_id]
                if not matches:
                    raise TgError("Bad Request: chat not found")
                chat_id = matches[0].obj["id"]
        if chat_id not in self._chats and self.strict_chats:
            raise TgError("Bad Request: chat not found")
        chat = self._chat(int(chat_id))
        if chat.blocked:
            if chat.obj["type"] == "private":
                raise TgError("Forbidden: bot was blocked by the user", 403)
            raise TgError("Forbidden: bot was kicked from the group chat", 403)
        return chat

    @staticmethod
    def _next_message_id(chat: _Chat) -> int:
        message_id = chat.next_message_id
        chat.next_message_id += 1
        return message_id

    def _new_raw(self, chat: _Chat, params: dict) -> dict[str, Any]:
        reply = params.get("reply_parameters")
        if reply is None and params.get("reply_to_message_id") is not None:
            reply = {"message_id": params["reply_to_message_id"],
                     "allow_sending_without_reply": params.get("allow_sending_without_reply", False)}
        replied = None
        if reply:
            source = self._chats.get(reply.get("chat_id", chat.obj["id"])) if isinstance(reply.get("chat_id", 0), int) else None
            found = source.raw_messages.get(reply.get("message_id")) if source else None
            if found is None and not reply.get("allow_sending_without_reply"):
                raise TgError("Bad Request: message to be replied not found")
            replied = _shallow(found) if found else None
        raw = {"message_id": self._next_message_id(chat), "from": dict(BOT_USER), "chat": dict(chat.obj),
               "date": int(time.time())}
        if params.get("message_thread_id") is not None:
            raw["message_thread_id"] = params["message_thread_id"]
        if replied:
            raw["reply_to_message"] = replied
        return raw

    def _store(self, chat: _Chat, msg: BotMessage) -> dict[str, Any]:
        chat.bot_messages[msg.message_id] = msg
        chat.raw_messages[msg.message_id] = msg.raw
        return _copy(msg.raw)

    def _message_to_edit(self, params: dict) -> BotMessage:
        if params.get("inline_message_id"):
            raise TgError("Bad Request: fake does not support inline messages")
        chat = self._target_chat(params)
        msg = chat.bot_messages.get(params.get("message_id"))
        if msg is None or msg.deleted:
            raise TgError("Bad Request: message to edit not found")
        return msg

    @staticmethod
    def _begin_edit(msg: BotMessage) -> None:
        msg.history.append(_copy(msg.raw))
        msg.edits += 1
        msg.raw["edit_date"] = int(time.time())

    @staticmethod
    def _caption(params: dict) -> tuple[str, list]:
        caption, entities = _render(params.get("caption"), params.get("parse_mode"), params.get("caption_entities"))
        if _utf16_len(caption) > MAX_CAPTION:
            raise TgError("Bad Request: message caption is too long")
        return caption, entities

    def _input_file(self, value: Any, parts: dict[str, _Part], kind: str) -> StoredFile:
        """An uploaded part (by field name or ``attach://name``) or a known file_id."""
        if value is None and kind in parts:  # PTB uploads sendPhoto's photo as the part "photo"
            part = parts[kind]
        elif isinstance(value, str) and value.startswith("attach://"):
            part = parts.get(value[len("attach://"):])
            if part is None:
                raise TgError(f"Bad Request: file {value!r} not found in the multipart request")
        elif isinstance(value, str) and value in self.files:
            return self.files[value]
        elif isinstance(value, str) and value.startswith(("http://", "https://")):
            raise TgError("Bad Request: failed to get HTTP URL content")  # the fake fetches nothing
        elif value is None:
            raise TgError(f"Bad Request: there is no {kind} in the request")
        else:
            raise TgError("Bad Request: wrong file identifier/HTTP URL specified")
        if kind == "photo":
            if len(part.data) > MAX_PHOTO_BYTES:
                raise TgError("Bad Request: PHOTO_SAVE_FILE_INVALID")
            width, height = _image_size(part.data)
            if width + height > 10000 or max(width, height) > 20 * min(width, height):
                raise TgError("Bad Request: PHOTO_INVALID_DIMENSIONS")
        elif len(part.data) > MAX_DOCUMENT_BYTES:
            raise TgError("Request Entity Too Large", 413)
        return self._store_file(part.data, kind, _extension(part.filename), part.content_type, filename=part.filename)

    def _store_file(self, data: bytes, kind: str, extension: str, mime_type: str | None, *,
                    filename: str | None = None, declared_size: int | None = None) -> StoredFile:
        n = next(self._file_ids)
        file_id = f"fake-{kind}-{n}"
        stored = StoredFile(file_id, f"uniq{n}", data, filename, mime_type,
                            file_path=f"{kind}s/file_{n}{extension}", declared_size=declared_size)
        self.files[file_id] = stored
        return stored

    def _photo_sizes(self, stored: StoredFile) -> list[dict[str, Any]]:
        width, height = _image_size(stored.data)
        scale = min(1.0, 2560 / max(width, height))  # Telegram keeps at most 2560 px on the long side
        full = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "file_size": len(stored.data),
                "width": round(width * scale), "height": round(height * scale)}
        if max(width, height) <= 90:
            return [full]
        t = 90 / max(width, height)
        thumb = {"file_id": stored.file_id + "-s", "file_unique_id": stored.file_unique_id + "s",
                 "file_size": min(len(stored.data), 2000), "width": max(1, round(width * t)),
                 "height": max(1, round(height * t))}
        return [thumb, full]


# ---------------------------------------------------------------------------------------------
# request decoding
# ---------------------------------------------------------------------------------------------
async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, _Part]]:
    params: dict[str, Any] = {}
    parts: dict[str, _Part] = {}
    for key, value in request.query.items():
        params[key] = _decode(key, value)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            for key, value in (body or {}).items():
                params[key] = json.loads(value) if key in _JSON_FIELDS and isinstance(value, str) else value
        else:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    parts[key] = _Part(value.file.read(), value.filename, value.content_type)
                else:
                    params[key] = _decode(key, value)
    return params, parts


def _decode(key: str, value: str) -> Any:
    if key in _STRING_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _update_type(update: dict) -> str:
    return next(k for k in update if k != "update_id")


# ---------------------------------------------------------------------------------------------
# text formatting (parse_mode)
# ---------------------------------------------------------------------------------------------
def _utf16_len(text: str | None) -> int:
    return len((text or "").encode("utf-16-le")) // 2


def _render(source: str | None, parse_mode: str | None, entities: list | None) -> tuple[str, list]:
    """(rendered text, entities) as Telegram stores them; raises "can't parse entities"."""
    if source is None:
        return "", []
    mode = (parse_mode or "").lower()
    if mode == "html":
        return _parse_html(source)
    if mode == "markdownv2":
        return _parse_markdown_v2(source)
    if mode == "markdown":
        return re.sub(r"(?<!\\)[*_`]", "", source).replace("\\", ""), []  # legacy mode, loosely
    if mode:
        raise TgError(f"Bad Request: unsupported parse_mode {parse_mode!r}")
    return source, list(entities or [])


_HTML_TAGS = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
              "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "code": "code", "pre": "pre",
              "a": "text_link", "tg-spoiler": "spoiler", "span": "spoiler", "blockquote": "blockquote",
              "tg-emoji": "custom_emoji"}
_HTML_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _cant_parse(detail: str) -> TgError:
    return TgError(f"Bad Request: can't parse entities: {detail}")


def _parse_html(source: str) -> tuple[str, list]:
    out: list[str] = []
    entities: list[dict] = []
    stack: list[tuple[str, int, dict]] = []
    i = 0
    while i < len(source):
        ch = source[i]
        if ch == "<":
            end = source.find(">", i)
            if end < 0:
                raise _cant_parse(f"Unclosed start tag at byte offset {len(source[:i].encode())}")
            tag = source[i + 1:end].strip()
            offset = len(source[:i].encode())
            if tag.startswith("/"):
                name = tag[1:].strip().lower()
                if not stack or stack[-1][0] != name:
                    raise _cant_parse(f"Unmatched end tag at byte offset {offset}, expected "
                                      f"\"</{stack[-1][0] if stack else ''}>\", found \"</{name}>\"")
                name, start, extra = stack.pop()
                length = _utf16_len("".join(out)) - start
                if length > 0:
                    entities.append({"type": _HTML_TAGS[name], "offset": start, "length": length, **extra})
            else:
                name = tag.split()[0].lower() if tag else ""
                if name not in _HTML_TAGS:
                    raise _cant_parse(f"Unsupported start tag \"{name}\" at byte offset {offset}")
                extra: dict[str, Any] = {}
                if name == "a":
                    href = re.search(r"href\s*=\s*[\"']([^\"']*)[\"']", tag)
                    extra["url"] = href.group(1) if href else ""
                if name == "span" and "tg-spoiler" not in tag:
                    raise _cant_parse(f"Tag \"span\" must have class \"tg-spoiler\" at byte offset {offset}")
                stack.append((name, _utf16_len("".join(out)), extra))
            i = end + 1
        elif ch == "&":
            m = re.match(r"&(#x[0-9a-fA-F]+|#\d+|[a-zA-Z]+);", source[i:])
            if m and m.group(1).startswith("#"):
                ref = m.group(1)
                out.append(chr(int(ref[2:], 16) if ref[1] in "xX" else int(ref[1:])))
                i += m.end()
            elif m and m.group(1) in _HTML_ENTITIES:
                out.append(_HTML_ENTITIES[m.group(1)])
                i += m.end()
            else:
                out.append("&")
                i += 1
        else:
            out.append(ch)
            i += 1
    if stack:
        raise _cant_parse(f"Can't find end tag corresponding to start tag \"{stack[-1][0]}\"")
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


_MD_RESERVED = set("_*[]()~`>#+-=|{}.!")
_MD_MARKERS = [("||", "spoiler"), ("__", "underline"), ("*", "bold"), ("_", "italic"), ("~", "strikethrough")]


def _parse_markdown_v2(source: str) -> tuple[str, list]:
    out: list[str] = []
    entities: list[dict] = []
    stack: list[tuple[str, int, int]] = []  # (marker, utf16 start, byte offset)
    link_start: list[tuple[int, int]] = []
    i = 0
    line_start = True

    def here() -> int:
        return _utf16_len("".join(out))

    while i < len(source):
        ch = source[i]
        byte_at = len(source[:i].encode())
        if ch == "\\":
            if i + 1 >= len(source):
                raise _cant_parse("Character '\\' is reserved and must be escaped with the preceding '\\'")
            out.append(source[i + 1])
            i += 2
            line_start = False
            continue
        if source.startswith("```", i):
            end = source.find("```", i + 3)
            if end < 0:
                raise _cant_parse(f"Can't find end of Pre entity at byte offset {byte_at}")
            body = source[i + 3:end]
            language, _, code = body.partition("\n") if "\n" in body else ("", "", body)
            start = here()
            out.append(re.sub(r"\\([`\\])", r"\1", code))
            entity = {"type": "pre", "offset": start, "length": here() - start}
            if language.strip():
                entity["language"] = language.strip()
            entities.append(entity)
            i = end + 3
            continue
        if ch == "`":
            end = i + 1
            while end < len(source) and source[end] != "`":
                end += 2 if source[end] == "\\" else 1
            if end >= len(source):
                raise _cant_parse(f"Can't find end of Code entity at byte offset {byte_at}")
            start = here()
            out.append(re.sub(r"\\([`\\])", r"\1", source[i + 1:end]))
            entities.append({"type": "code", "offset": start, "length": here() - start})
            i = end + 1
            continue
        if ch == ">" and line_start:
            i += 1
            continue
        if ch == "[":
            link_start.append((here(), byte_at))
            i += 1
            continue
        if ch == "]" and link_start:
            m = re.match(r"\]\(((?:\\.|[^)\\])*)\)", source[i:])
            if not m:
                raise _cant_parse(f"Can't find end of a url at byte offset {byte_at}")
            start, _ = link_start.pop()
            url = re.sub(r"\\(.)", r"\1", m.group(1))
            entities.append({"type": "text_link", "offset": start, "length": here() - start, "url": url})
            i += m.end()
            continue
        matched = next(((mk, kind) for mk, kind in _MD_MARKERS if source.startswith(mk, i)), None)
        if matched:
            mk, kind = matched
            if stack and stack[-1][0] == mk:
                _, start, _ = stack.pop()
                entities.append({"type": kind, "offset": start, "length": here() - start})
            else:
                stack.append((mk, here(), byte_at))
            i += len(mk)
            continue
        if ch in _MD_RESERVED:
            raise _cant_parse(f"Character '{ch}' is reserved and must be escaped with the preceding '\\'")
        out.append(ch)
        line_start = ch == "\n"
        i += 1
    if stack:
        raise _cant_parse(f"Can't find end of the entity starting at byte offset {stack[-1][2]}")
    if link_start:
        raise _cant_parse(f"Can't find end of the entity starting at byte offset {link_start[-1][1]}")
    entities = [e for e in entities if e["length"] > 0]
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def _check_markup(markup: Any) -> dict[str, Any] | None:
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise TgError("Bad Request: can't parse reply keyboard markup JSON object")
    for row in markup.get("inline_keyboard", []):
        for button in row:
            if not button.get("text"):
                raise TgError("Bad Request: text buttons are unallowed in the inline keyboard")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                raise TgError("Bad Request: BUTTON_DATA_INVALID")
            if not any(k in button for k in ("callback_data", "url", "switch_inline_query", "web_app", "login_url",
                                             "switch_inline_query_current_chat", "copy_text", "pay",
                                             "callback_game", "switch_inline_query_chosen_chat")):
                raise TgError("Bad Request: can't parse inline keyboard button: a button needs a field")
    return markup


def _put_caption(raw: dict, caption: str, entities: list) -> None:
    if caption:
        raw["caption"] = caption
        if entities:
            raw["caption_entities"] = entities


def _set_or_drop(raw: dict, key: str, value: Any) -> None:
    if value:
        raw[key] = value
    else:
        raw.pop(key, None)


def _copy(raw: dict) -> dict:
    return json.loads(json.dumps(raw))


def _shallow(raw: dict) -> dict:
    """A message as it appears in reply_to_message (Telegram does not nest replies further)."""
    return {k: v for k, v in _copy(raw).items() if k != "reply_to_message"}


def _raw(message: dict | BotMessage) -> dict:
    return message.raw if isinstance(message, BotMessage) else message


def _guess_type(chat_id: int) -> str:
    if chat_id > 0:
        return "private"
    return "supergroup" if str(chat_id).startswith("-100") else "group"


def _document_obj(stored: StoredFile) -> dict[str, Any]:
    obj: dict[str, Any] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                           "file_size": stored.file_size}
    if stored.filename:
        obj["file_name"] = stored.filename
    if stored.mime_type:
        obj["mime_type"] = stored.mime_type
    return obj


def _command_entities(text: str) -> list[dict[str, Any]]:
    """The ``bot_command`` entity Telegram marks a leading "/command" (or "/command@Bot") with."""
    command = text.split()[0] if text.split() else text
    return [{"type": "bot_command", "offset": 0, "length": _utf16_len(command)}]


def _caption_fields(caption: str | None) -> dict[str, Any]:
    if not caption:
        return {}
    if _utf16_len(caption) > MAX_CAPTION:
        raise AssertionError(f"a caption is at most {MAX_CAPTION} characters; Telegram's clients send no longer")
    fields: dict[str, Any] = {"caption": caption}
    if caption.startswith("/"):
        fields["caption_entities"] = _command_entities(caption)
    return fields


def _photo_size(stored: StoredFile, size: tuple[int, int] | None = None) -> dict[str, Any]:
    width, height = size or _image_size(stored.data)
    return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "file_size": stored.file_size,
            "width": width, "height": height}


def _thumbnail(data: bytes, side: int) -> bytes:
    """A JPEG of the picture at most ``side`` px on its long side, as Telegram makes its smaller sizes."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGB")
    small.thumbnail((side, side))
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=80)
    return out.getvalue()


def _extension(filename: str | None) -> str:
    m = re.search(r"\.[A-Za-z0-9]{1,5}$", filename or "")
    return m.group(0) if m else ""


def _image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an image; an undecodable one is IMAGE_PROCESS_FAILED, as on Telegram."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        if width and height:
            return width, height
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # not an image the fake can read: the real server cannot either
        raise TgError("Bad Request: IMAGE_PROCESS_FAILED") from None
