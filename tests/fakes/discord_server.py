"""A local fake of Discord's REST API and websocket gateway on 127.0.0.1, for the real discord.py.

Point the library at it (``point_discord_here`` does exactly this, ``restore`` undoes it)::

    fake = await FakeDiscord().start()
    fake.point_discord_here()
    # discord.http.Route.BASE = f"{fake.base}/api/v10"
    # discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
    await client.login(TOKEN)                      # GET /users/@me, GET /oauth2/applications/@me
    task = asyncio.create_task(client.connect())   # websocket at DEFAULT_GATEWAY

How discord.py 2.7 finds the servers (read from its source):

* REST: every ``discord.http.Route`` builds its URL as ``Route.BASE + path`` when it is created
  (``BASE`` is a class attribute, ``https://discord.com/api/v10``). The interaction webhook adapter
  (``discord/webhook/async_.py``) imports the same ``Route``, so callbacks and followups follow it too.
* Gateway, ``discord.Client``: ``Client.connect`` calls ``DiscordWebSocket.from_client`` with no
  gateway, which uses ``DiscordWebSocket.DEFAULT_GATEWAY`` (a ``yarl.URL``) and appends
  ``?v=10&encoding=json&compress=zlib-stream``. It does NOT call ``GET /gateway/bot``. After READY
  it switches to READY's ``resume_gateway_url`` for RESUMEs.
* Gateway, ``discord.AutoShardedClient``: ``launch_shards`` calls ``GET /gateway/bot`` and connects
  to the returned ``url`` (served here: it answers the fake's ws URL), unless ``shard_count`` is given,
  in which case it uses ``DEFAULT_GATEWAY``.

It runs in the test's own event loop (aiohttp ``AppRunner`` + ``TCPSite``); its state (messages,
commands, interactions, calls) lives on the object.

What it does, like the real service:

* Gateway: HELLO (``heartbeat_interval``) -> IDENTIFY (token checked when ``token`` is set: close
  4004; privileged intents refused with 4014 when ``privileged_intents=False``) -> READY -> one
  GUILD_CREATE. Heartbeat (op 1) -> ACK (op 11); arrival times in ``heartbeats``. RESUME (op 6)
  replays the events the client missed, then RESUMED; an unknown session gets op 9. Request Guild
  Members (op 8) -> GUILD_MEMBERS_CHUNK. ``compress=zlib-stream`` is honoured (one zlib stream per
  connection, each message Z_SYNC_FLUSHed); otherwise frames are text. Sequence numbers increase per
  session. The bot's own public messages come back as MESSAGE_CREATE/UPDATE/DELETE when its intents
  include GUILD_MESSAGES, as on Discord.
* REST under ``/api/v9`` and ``/api/v10``: JSON answers carry ``Content-Type: application/json``
  exactly (discord.py compares the header to that string) and ``X-RateLimit-*`` headers. Errors are
  ``{"message", "code"[, "errors"]}`` with Discord's codes: 10003 Unknown Channel, 10008 Unknown
  Message, 10015 Unknown Webhook, 10062 Unknown interaction (also when the first callback comes
  later than ``ack_deadline_s``, 3 s), 40060 already acknowledged, 50027 Invalid Webhook Token (an
  interaction token older than ``token_lifetime_s``, 15 min), 50006 empty message, 50035 Invalid Form
  Body (content > 2000, > 10 embeds/attachments, custom_id > 100, > 5 rows, > 5 buttons a row, bad
  command names), 40005 Request entity too large (a file over ``attachment_size_limit``).
  An unknown route is ``404 {"message": "404: Not Found", "code": 0}`` and is recorded.
* Interactions: a deferred (type 5) response creates the "thinking" original (flags LOADING 128,
  plus EPHEMERAL 64 when deferred ephemerally); the first followup then fills that original (same
  id, the defer's ephemeral flag wins), as Discord does. Types 6/7 on a component interaction make
  the clicked message the interaction's original (7 edits it). Callbacks come with
  ``?with_response=1`` from discord.py 2.7 (``AsyncWebhookAdapter.create_interaction_response``),
  which is answered with the InteractionCallbackResponse object; without it, 204.
* Files: multipart ``payload_json`` + ``files[n]``; the stored attachment keeps the bytes, sniffs the
  content type (and PNG/JPEG/GIF size) and its ``url`` is served by the fake (``Attachment.read()``
  works). On an edit, ``attachments`` lists the ones to keep, as on Discord.
* A user's upload to an attachment option (type 11): ``upload`` stores the bytes and returns the
  attachment object Discord puts in ``data.resolved.attachments`` (its ``url`` is served by the
  fake; ``size`` may be declared unlike the bytes, to test a size check without big files);
  ``slash`` sends it as the option's value (the attachment id) with that resolved object.
  Every download of an attachment is recorded in ``downloads`` (``downloaded(attachment)``).

Injection (from the test's loop): ``upload``, ``slash``, ``click`` (and the general ``dispatch_interaction``),
``dispatch`` (any gateway event), ``add_member``, ``fail_next``, ``send_reconnect`` (op 7),
``drop_connection`` (close with a code; the client RESUMEs). Inspection: ``calls``, ``calls_to``,
``messages``, ``message``, ``original``, ``followups``, ``ephemerals``, ``interaction``, ``callback``,
``callback_latency``, ``unanswered``, ``commands``, ``intents``, ``identifies``, ``resumes``,
``gateway_connects``, ``close_codes``, ``connected``, ``heartbeats``, ``heartbeat_gaps``, ``downloads``,
``downloaded``, ``wait_for``, ``summary``. All times are ``time.monotonic()``.

Not modelled: voice, threads, reactions, modals' follow-through, real rate-limit buckets (every
success says ``Remaining: 4``), heartbeat enforcement (a silent client is never dropped; use
``heartbeat_gaps`` to see a blocked loop), option ``resolved`` data for user/role/channel options
(attachment options are resolved).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import math
import re
import secrets
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.polling import poll_until

# ---------------------------------------------------------------------------------------------
# the world the fake serves
# ---------------------------------------------------------------------------------------------
DISCORD_EPOCH_MS = 1420070400000
BOT_ID = 1300000000000000001
APP_ID = BOT_ID  # a bot's user id is its application's id
BOT_USERNAME = "AldarBot"
OWNER_ID = 1300000000000000002
GUILD_ID = 1300000000000000100
CHANNEL_ID = 1300000000000000200
CATEGORY_ID = 1300000000000000199
MOD_ROLE_ID = 1300000000000000300
BOT_ROLE_ID = 1300000000000000301
GUILD_NAME = "Steppe"
CHANNEL_NAME = "storyboards"

EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_EMBEDS = 1 << 2
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_COMPONENTS_V2 = 1 << 15
MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_ATTACHMENTS = 10
MAX_CUSTOM_ID = 100
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024

# permission bits (https://discord.com/developers/docs/topics/permissions)
P = {
    "CREATE_INSTANT_INVITE": 1 << 0, "KICK_MEMBERS": 1 << 1, "BAN_MEMBERS": 1 << 2, "ADMINISTRATOR": 1 << 3,
    "ADD_REACTIONS": 1 << 6, "VIEW_CHANNEL": 1 << 10, "SEND_MESSAGES": 1 << 11, "MANAGE_MESSAGES": 1 << 13,
    "EMBED_LINKS": 1 << 14, "ATTACH_FILES": 1 << 15, "READ_MESSAGE_HISTORY": 1 << 16,
    "USE_EXTERNAL_EMOJIS": 1 << 18, "CHANGE_NICKNAME": 1 << 26, "USE_APPLICATION_COMMANDS": 1 << 31,
    "SEND_MESSAGES_IN_THREADS": 1 << 38, "MODERATE_MEMBERS": 1 << 40,
}
ALL_PERMISSIONS = (1 << 53) - 1
EVERYONE_PERMISSIONS = (P["CREATE_INSTANT_INVITE"] | P["ADD_REACTIONS"] | P["VIEW_CHANNEL"] | P["SEND_MESSAGES"]
                        | P["EMBED_LINKS"] | P["ATTACH_FILES"] | P["READ_MESSAGE_HISTORY"] | P["USE_EXTERNAL_EMOJIS"]
                        | P["CHANGE_NICKNAME"] | P["USE_APPLICATION_COMMANDS"] | P["SEND_MESSAGES_IN_THREADS"])
MOD_PERMISSIONS = P["KICK_MEMBERS"] | P["BAN_MEMBERS"] | P["MANAGE_MESSAGES"] | P["MODERATE_MEMBERS"]
BOT_ROLE_PERMISSIONS = P["SEND_MESSAGES"] | P["EMBED_LINKS"] | P["ATTACH_FILES"] | P["VIEW_CHANNEL"]

# gateway
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_VOICE, OP_RESUME = 0, 1, 2, 3, 4, 6
OP_RECONNECT, OP_REQUEST_MEMBERS, OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 7, 8, 9, 10, 11
INTENT_GUILD_MEMBERS, INTENT_GUILD_PRESENCES, INTENT_MESSAGE_CONTENT = 1 << 1, 1 << 8, 1 << 15
INTENT_GUILD_MESSAGES = 1 << 9
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# interactions
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
OPTION_ATTACHMENT = 11
CB_PONG, CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE = 1, 4, 5, 6, 7
CB_AUTOCOMPLETE, CB_MODAL, CB_LAUNCH_ACTIVITY = 8, 9, 12
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


def snowflake_at(ms: float | None = None, increment: int = 0) -> int:
    """A Discord snowflake for a time (ms since the Unix epoch; now by default)."""
    ms = int(time.time() * 1000) if ms is None else int(ms)
    return ((ms - DISCORD_EPOCH_MS) << 22) | (1 << 17) | (increment & 0xFFF)


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------
@dataclass
class Call:
    """One REST request the client made, decoded."""

    method: str
    path: str  # after /api/v10, without the query: "/channels/123/messages"
    query: dict[str, str]
    json: Any  # the JSON body, or the decoded payload_json of a multipart body; None if none
    files: dict[str, bytes]  # multipart file parts by field name ("files[0]")
    filenames: dict[str, str]  # field name -> filename
    at: float  # time.monotonic()
    auth: str | None = None  # the Authorization header (a test token)
    status: int = 0
    response: Any = None

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class StoredAttachment:
    id: int
    filename: str
    data: bytes
    content_type: str | None
    raw: dict[str, Any]


@dataclass
class StoredMessage:
    """The current state of one message the bot posted (edits applied)."""

    id: int
    channel_id: int
    raw: dict[str, Any]  # the Discord Message object, as the API returns it now
    attachments: list[StoredAttachment] = field(default_factory=list)
    via: str = "channel"  # "channel" | "callback" | "deferred" | "followup"
    interaction_id: int | None = None
    deleted: bool = False
    edits: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier states of ``raw``

    @property
    def content(self) -> str:
        return self.raw.get("content", "")

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.raw.get("embeds", [])

    @property
    def components(self) -> list[dict[str, Any]]:
        return self.raw.get("components", [])

    @property
    def flags(self) -> int:
        return self.raw.get("flags", 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def files(self) -> dict[str, bytes]:
        """filename -> bytes of every attachment."""
        return {a.filename: a.data for a in self.attachments}

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in _walk_components(self.components) if "custom_id" in c]

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return [c for c in _walk_components(self.components) if c.get("type") == 2]


@dataclass
class InteractionRecord:
    id: int
    token: str
    type: int
    payload: dict[str, Any]  # the INTERACTION_CREATE data sent
    dispatched_at: float
    user_id: int
    channel_id: int
    source_message_id: int | None = None  # the message a component lives on
    callback_type: int | None = None
    callback_data: dict[str, Any] | None = None
    callback_files: dict[str, bytes] = field(default_factory=dict)
    callback_at: float | None = None
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return self.callback_type is not None


@dataclass
class _Failure:
    pattern: re.Pattern[str]
    status: int
    retry_after: float
    times: int
    global_: bool
    message: str | None
    code: int


class DiscordError(Exception):
    def __init__(self, status: int, message: str, code: int = 0, errors: dict | None = None,
                 headers: dict[str, str] | None = None, body: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.errors = status, message, code, errors
        self.headers = headers or {}
        self.body = body

    def payload(self) -> dict[str, Any]:
        if self.body is not None:
            return self.body
        out: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            out["errors"] = self.errors
        return out


def _form_error(path: str, code: str, message: str) -> DiscordError:
    """A 400 Invalid Form Body with Discord's nested ``errors`` shape (path like "content" or "components.0")."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        errors = {part: errors}
    return DiscordError(400, "Invalid Form Body", 50035, errors)


@dataclass
class _Request:
    method: str
    path: str
    match: re.Match[str]
    query: dict[str, str]
    json: Any
    files: list[tuple[str, str, bytes]]  # (field name, filename, data) in order
    call: Call


@dataclass
class _Session:
    id: str
    ws: web.WebSocketResponse | None
    intents: int
    shard: list[int] | None
    seq: int = 0
    buffer: list[dict[str, Any]] = field(default_factory=list)  # every dispatch sent, for RESUME
    compressor: Any = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


# ---------------------------------------------------------------------------------------------
# the fake
# ---------------------------------------------------------------------------------------------
class FakeDiscord:
    def __init__(self, *, token: str | None = None, heartbeat_interval_ms: int = 1000,
                 token_lifetime_s: float = 900.0, ack_deadline_s: float = 3.0,
                 attachment_size_limit: int = DEFAULT_ATTACHMENT_LIMIT, privileged_intents: bool = True) -> None:
        self.token = token  # None: any bot token is accepted
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.token_lifetime_s = token_lifetime_s
        self.ack_deadline_s = ack_deadline_s
        self.attachment_size_limit = attachment_size_limit
        self.privileged_intents = privileged_intents
        self.port = 0
        self.calls: list[Call] = []
        self.heartbeats: list[float] = []
        self.identifies: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.presence_updates: list[dict[str, Any]] = []
        self.gateway_connects: list[dict[str, str]] = []  # path + query (v, encoding, compress) of every ws connection
        self.close_codes: list[int | None] = []  # close code of every ended connection
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.interactions: dict[int, InteractionRecord] = {}
        self._messages: dict[int, StoredMessage] = {}
        self._blobs: dict[int, StoredAttachment] = {}
        self.downloads: list[int] = []  # the attachment id of every download, in order (404s included)
        self._sessions: dict[str, _Session] = {}
        self._live: list[_Session] = []
        self._sockets: set[web.WebSocketResponse] = set()
        self._failures: list[_Failure] = []
        self._ids = itertools.count(1)
        self._component_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._saved: tuple[str, Any] | None = None
        self.users: dict[int, dict[str, Any]] = {}
        self.members: dict[int, dict[str, Any]] = {}
        self.roles: dict[int, dict[str, Any]] = {
            GUILD_ID: _role(GUILD_ID, "@everyone", 0, EVERYONE_PERMISSIONS),
            MOD_ROLE_ID: _role(MOD_ROLE_ID, "Moderator", 2, MOD_PERMISSIONS, color=0x3498DB, hoist=True),
            BOT_ROLE_ID: {**_role(BOT_ROLE_ID, BOT_USERNAME, 1, BOT_ROLE_PERMISSIONS, managed=True),
                          "tags": {"bot_id": str(BOT_ID)}},
        }
        self.channels: dict[int, dict[str, Any]] = {
            CATEGORY_ID: {"id": str(CATEGORY_ID), "type": 4, "guild_id": str(GUILD_ID), "name": "Text Channels",
                          "position": 0, "permission_overwrites": [], "parent_id": None, "nsfw": False, "flags": 0},
            CHANNEL_ID: {"id": str(CHANNEL_ID), "type": 0, "guild_id": str(GUILD_ID), "name": CHANNEL_NAME,
                         "position": 0, "permission_overwrites": [], "parent_id": str(CATEGORY_ID), "topic": None,
                         "nsfw": False, "last_message_id": None, "rate_limit_per_user": 0, "flags": 0,
                         "icon_emoji": None, "theme_color": None},
        }
        self.bot_user = {"id": str(BOT_ID), "username": BOT_USERNAME, "discriminator": "0", "global_name": None,
                         "avatar": None, "bot": True, "system": False, "flags": 0, "public_flags": 0,
                         "banner": None, "accent_color": None, "avatar_decoration_data": None}
        self.users[BOT_ID] = self.bot_user
        self.add_member(OWNER_ID, username="owner")
        self.add_member(BOT_ID, roles=(BOT_ROLE_ID,))
        self._routes: list[tuple[str, re.Pattern[str], Callable[[_Request], Any]]] = []
        self._add_routes()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """For ``discord.http.Route.BASE``."""
        return f"{self.base}/api/v10"

    @property
    def gateway_url(self) -> str:
        """For ``DiscordWebSocket.DEFAULT_GATEWAY`` (the query is added by discord.py)."""
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def resume_gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/resume"

    async def start(self) -> FakeDiscord:
        """Serve on 127.0.0.1 (a free port the first time, the same port on a restart)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/", self._gateway)
        app.router.add_get("/resume", self._gateway)
        app.router.add_get("/attachments/{channel}/{attachment}/{filename}", self._download)
        app.router.add_route("*", "/api/v{version:\\d+}{path:/.*}", self._rest)
        app.router.add_route("*", "/{path:.*}", self._not_found)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close every gateway connection (1001 Going Away) and stop serving; state is kept."""
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"going away")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.restore()
        await self.stop()

    def point_discord_here(self) -> None:
        """Set ``discord.http.Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY`` to this fake."""
        import discord.gateway
        import discord.http
        import yarl

        if self._saved is None:
            self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = f"{self.base}/api/v{discord.http.INTERNAL_API_VERSION}"
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    def restore(self) -> None:
        """Put back what ``point_discord_here`` replaced."""
        if self._saved is None:
            return
        import discord.gateway
        import discord.http

        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
        self._saved = None

    # -- the guild -----------------------------------------------------------------------------
    def add_member(self, user_id: int, *, username: str | None = None, roles: tuple[int, ...] | list[int] = (),
                   bot: bool = False) -> dict[str, Any]:
        """Make a user a member of the guild (before connecting: in GUILD_CREATE). Returns the member."""
        user = self._user(user_id, username, bot=bot)
        member = {"user": user, "nick": None, "avatar": None, "banner": None, "roles": [str(r) for r in roles],
                  "joined_at": iso_now(), "premium_since": None, "deaf": False, "mute": False, "flags": 0,
                  "pending": False, "communication_disabled_until": None, "avatar_decoration_data": None}
        self.members[user_id] = member
        return member

    def permissions_of(self, user_id: int, roles: tuple[int, ...] | list[int] | None = None) -> int:
        if user_id == OWNER_ID:
            return ALL_PERMISSIONS
        if roles is None:
            member = self.members.get(user_id)
            roles = [int(r) for r in member["roles"]] if member else []
        value = int(self.roles[GUILD_ID]["permissions"])
        for role_id in roles:
            role = self.roles.get(int(role_id))
            if role is not None:
                value |= int(role["permissions"])
        return ALL_PERMISSIONS if value & P["ADMINISTRATOR"] else value

    def guild_payload(self) -> dict[str, Any]:
        """The full guild object as GUILD_CREATE carries it."""
        return {
            "id": str(GUILD_ID), "name": GUILD_NAME, "icon": None, "icon_hash": None, "splash": None,
            "discovery_splash": None, "banner": None, "description": None, "owner_id": str(OWNER_ID),
            "region": "deprecated", "afk_channel_id": None, "afk_timeout": 300, "widget_enabled": False,
            "widget_channel_id": None, "verification_level": 1, "default_message_notifications": 1,
            "explicit_content_filter": 2, "mfa_level": 0, "nsfw_level": 0, "nsfw": False, "features": [],
            "roles": list(copy.deepcopy(self.roles).values()), "emojis": [], "stickers": [],
            "application_id": None, "system_channel_id": str(CHANNEL_ID), "system_channel_flags": 0,
            "rules_channel_id": None, "public_updates_channel_id": None, "safety_alerts_channel_id": None,
            "max_presences": None, "max_members": 500000, "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50, "vanity_url_code": None, "premium_tier": 0,
            "premium_subscription_count": 0, "premium_progress_bar_enabled": False, "preferred_locale": "en-US",
            "incidents_data": None, "hub_type": None, "latest_onboarding_question_id": None,
            "joined_at": iso_now(), "large": False, "unavailable": False, "lazy": True,
            "member_count": len(self.members), "members": copy.deepcopy(list(self.members.values())),
            "channels": copy.deepcopy(list(self.channels.values())), "threads": [], "presences": [],
            "voice_states": [], "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "embedded_activities": [], "activity_instances": [], "application_command_counts": {},
        }

    def app_payload(self) -> dict[str, Any]:
        owner = self.users[OWNER_ID]
        return {
            "id": str(APP_ID), "name": BOT_USERNAME, "icon": None, "description": "Aldar Kose storyboards",
            "summary": "", "type": None, "bot_public": True, "bot_require_code_grant": False,
            "verify_key": "0" * 64, "flags": 1 << 23, "hook": True, "is_monetized": False,
            "is_verified": False, "is_discoverable": False, "owner": owner, "team": None,
            "bot": self.bot_user, "guild_id": None, "primary_sku_id": None, "slug": None, "cover_image": None,
            "rpc_origins": [], "terms_of_service_url": None, "privacy_policy_url": None, "tags": [],
            "install_params": {"scopes": ["bot", "applications.commands"], "permissions": str(BOT_ROLE_PERMISSIONS)},
            "integration_types_config": {"0": {}}, "custom_install_url": None,
            "interactions_endpoint_url": None, "role_connections_verification_url": None, "redirect_uris": [],
            "approximate_guild_count": 1, "approximate_user_install_count": 0,
        }

    # -- injection -----------------------------------------------------------------------------
    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send a DISPATCH event on the live session (buffered for RESUME if none); returns its seq."""
        session = self._current_session()
        if session is None:
            raise AssertionError(f"dispatch {event}: no gateway session (the client never IDENTIFYed)")
        session.seq += 1
        payload = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.buffer.append(payload)
        if session.ws is not None and not session.ws.closed:
            try:
                await self._send(session, payload)
            except ConnectionError:  # the client went away; it gets the event on RESUME
                pass
        return session.seq

    def upload(self, data: bytes, filename: str, *, content_type: str | None = None,
               declared_size: int | None = None, channel_id: int = CHANNEL_ID) -> dict[str, Any]:
        """A file a user attaches to a command option: stored (its ``url`` serves ``data``) and
        returned as the attachment object Discord resolves; pass it as the option's value to ``slash``.

        ``content_type`` is what the user's client reported (sniffed from the bytes when None, as
        Discord does); ``declared_size`` is the ``size`` Discord reports (``len(data)`` when None).
        """
        attachment_id = snowflake_at(increment=next(self._ids))
        sniffed, dimensions = _sniff(data, filename)
        url = f"{self.base}/attachments/{channel_id}/{attachment_id}/{filename}"
        raw: dict[str, Any] = {"id": str(attachment_id), "filename": filename,
                               "size": len(data) if declared_size is None else declared_size,
                               "url": url, "proxy_url": url, "content_type": content_type or sniffed,
                               "ephemeral": True, "flags": 0}
        if dimensions is not None:
            raw["width"], raw["height"] = dimensions
        self._blobs[attachment_id] = StoredAttachment(attachment_id, filename, data, raw["content_type"], raw)
        return copy.deepcopy(raw)

    def downloaded(self, attachment: dict[str, Any] | int | str) -> int:
        """How many times this attachment (an ``upload`` result or its id) was downloaded."""
        attachment_id = int(attachment["id"] if isinstance(attachment, dict) else attachment)
        return self.downloads.count(attachment_id)

    async def slash(self, name: str, options: dict[str, Any] | None = None, *, user_id: int,
                    roles: tuple[int, ...] | list[int] = (), guild: bool = True, locale: str = "en-US",
                    channel_id: int = CHANNEL_ID) -> int:
        """A user runs ``/name`` with these option values; returns the interaction id.

        As Discord's client does, a value outside the synced option's choices, min/max value or
        min/max length is refused before anything is sent: ``RefusedByClient``, and the bot sees nothing.
        So is a file for an option that is not an attachment option, or anything else for one that is.

        Option types come from the synced command when it is known (else str 3, int 4, bool 5,
        float 10, attachment 11 for an ``upload`` result). An attachment option's value is the
        attachment id, its object in ``data.resolved.attachments``. The command id is the synced one
        (guild commands first), else a fresh snowflake.
        """
        command = self._find_command(name, guild)
        declared = {o["name"]: o for o in (command or {}).get("options", [])}
        opts = []
        attachments: dict[str, dict[str, Any]] = {}
        for key, value in (options or {}).items():
            kind = declared.get(key, {}).get("type") or _option_type(value)
            if (kind == OPTION_ATTACHMENT) != isinstance(value, dict):
                raise RefusedByClient(f"/{name} {key}: option type {kind} does not take {value!r}")
            if kind == OPTION_ATTACHMENT:
                if int(value.get("id", 0)) not in self._blobs:
                    raise AssertionError(f"/{name} {key}: attach a file made by upload(), not {value!r}")
                attachments[str(value["id"])] = copy.deepcopy(value)
                opts.append({"name": key, "type": kind, "value": str(value["id"])})
                continue
            problem = _client_refusal(declared.get(key, {}), value)
            if problem:
                raise RefusedByClient(f"/{name} {key}: {problem}")
            opts.append({"name": key, "type": kind, "value": value})
        data: dict[str, Any] = {"id": command["id"] if command else str(snowflake_at(increment=next(self._ids))),
                                "name": name, "type": 1}
        if opts:
            data["options"] = opts
        if attachments:
            data["resolved"] = {"attachments": attachments}
        if command and command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self.dispatch_interaction(APPLICATION_COMMAND, data, user_id=user_id, roles=roles,
                                               guild=guild, locale=locale, channel_id=channel_id)

    async def click(self, custom_id: str, *, message_id: int, user_id: int, roles: tuple[int, ...] | list[int] = (),
                    values: list[str] | None = None, locale: str = "en-US", check: bool = True) -> int:
        """A user presses a component (button, or select with ``values``) on a bot message; returns the id.

        With ``check``, the message must exist, not be deleted, and carry an enabled component with
        that custom_id (a user cannot press a button that is not there).
        """
        stored = self._messages.get(int(message_id))
        if stored is None or stored.deleted:
            raise AssertionError(f"click: message {message_id} is not a live bot message")
        component = next((c for c in _walk_components(stored.components) if c.get("custom_id") == custom_id), None)
        if check and component is None:
            raise AssertionError(f"click: no component {custom_id!r} on message {message_id}; it has {stored.custom_ids}")
        if check and component.get("disabled"):
            raise AssertionError(f"click: component {custom_id!r} on message {message_id} is disabled")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": (component or {}).get("type", 2)}
        if component and "id" in component:
            data["id"] = component["id"]
        if values is not None:
            data["values"] = list(values)
        guild = "guild_id" in self.channels.get(stored.channel_id, {})
        return await self.dispatch_interaction(MESSAGE_COMPONENT, data, user_id=user_id, roles=roles, guild=guild,
                                               locale=locale, channel_id=stored.channel_id,
                                               message=copy.deepcopy(stored.raw))

    async def dispatch_interaction(self, kind: int, data: dict[str, Any], *, user_id: int,
                                   roles: tuple[int, ...] | list[int] = (), guild: bool = True, locale: str = "en-US",
                                   channel_id: int = CHANNEL_ID, message: dict[str, Any] | None = None) -> int:
        """Send INTERACTION_CREATE of any type; returns the interaction id."""
        interaction_id = snowflake_at(increment=next(self._ids))
        token = "aW50ZXJhY3Rpb246" + f"{interaction_id}:" + secrets.token_urlsafe(96)
        payload: dict[str, Any] = {
            "id": str(interaction_id), "application_id": str(APP_ID), "type": kind, "data": data, "token": token,
            "version": 1, "locale": locale, "entitlements": [], "entitlement_sku_ids": [],
            "attachment_size_limit": self.attachment_size_limit, "app_permissions": "",
        }
        user = self._user(user_id)
        if guild:
            if user_id not in self.members:
                self.add_member(user_id, roles=tuple(roles))
            else:
                self.members[user_id]["roles"] = [str(r) for r in roles]
            member = copy.deepcopy(self.members[user_id])
            member["permissions"] = str(self.permissions_of(user_id, [int(r) for r in roles]))
            channel = copy.deepcopy(self.channels[channel_id])
            payload.update(
                guild_id=str(GUILD_ID), guild={"id": str(GUILD_ID), "locale": "en-US", "features": []},
                guild_locale="en-US", channel_id=str(channel_id), channel=channel, member=member,
                app_permissions=str(self.permissions_of(BOT_ID)),
                authorizing_integration_owners={"0": str(GUILD_ID)}, context=0,
            )
        else:
            dm = {"id": str(channel_id if channel_id != CHANNEL_ID else snowflake_at(increment=user_id)), "type": 1,
                  "last_message_id": None, "flags": 0, "recipients": [copy.deepcopy(user)]}
            self.channels.setdefault(int(dm["id"]), dm)
            channel_id = int(dm["id"])
            payload.update(channel_id=dm["id"], channel=dm, user=copy.deepcopy(user),
                           app_permissions=str(EVERYONE_PERMISSIONS | BOT_ROLE_PERMISSIONS),
                           authorizing_integration_owners={"0": "0"}, context=1)
        if message is not None:
            payload["message"] = message
        record = InteractionRecord(interaction_id, token, kind, payload, time.monotonic(), user_id, channel_id,
                                   source_message_id=int(message["id"]) if message else None)
        self.interactions[interaction_id] = record
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction_id

    async def send_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client closes and RESUMEs at ``resume_gateway_url``."""
        session = self._current_session()
        if session is None or session.ws is None:
            raise AssertionError("send_reconnect: no live gateway connection")
        await self._send(session, {"op": OP_RECONNECT, "d": None})

    async def drop_connection(self, code: int = 4000) -> None:
        """Close the live gateway connection with ``code`` (4000: the client RESUMEs)."""
        session = self._current_session()
        if session is None or session.ws is None:
            raise AssertionError("drop_connection: no live gateway connection")
        await session.ws.close(code=code, message=b"fake dropped the connection")

    def fail_next(self, route_regex: str, status: int = 429, retry_after: float = 0.2, times: int = 1, *,
                  global_: bool = False, message: str | None = None, code: int = 0) -> None:
        """The next ``times`` requests whose ``"METHOD /path"`` matches (re.search) fail.

        429 answers look like Discord's: ``X-RateLimit-*`` headers, ``Retry-After``, ``Via`` and
        ``{"message": "You are being rate limited.", "retry_after": ..., "global": ...}``. Other
        statuses answer ``{"message": message or "<status>: ...", "code": code}``.
        """
        self._failures.append(_Failure(re.compile(route_regex), status, retry_after, times, global_, message, code))

    # -- inspection ----------------------------------------------------------------------------
    def calls_to(self, method: str, path_regex: str = "") -> list[Call]:
        """Recorded calls with this method (``"*"``: any) whose path matches (re.search)."""
        rx = re.compile(path_regex)
        return [c for c in self.calls if (method == "*" or c.method == method.upper()) and rx.search(c.path)]

    @property
    def intents(self) -> int | None:
        """The intents of the last IDENTIFY."""
        return self.identifies[-1].get("intents") if self.identifies else None

    @property
    def connected(self) -> bool:
        session = self._current_session()
        return session is not None and session.ws is not None and not session.ws.closed

    def messages(self, channel_id: int = CHANNEL_ID, *, ephemeral: bool | None = None,
                 include_deleted: bool = False) -> list[StoredMessage]:
        """The bot's messages in a channel, oldest first, current state. ``ephemeral``: None = all,
        True = only ephemeral ones, False = only those everyone sees."""
        out = [m for m in self._messages.values() if m.channel_id == int(channel_id)
               and (include_deleted or not m.deleted) and (ephemeral is None or m.ephemeral == ephemeral)]
        return sorted(out, key=lambda m: m.id)

    def message(self, message_id: int) -> StoredMessage | None:
        return self._messages.get(int(message_id))

    def ephemerals(self) -> list[StoredMessage]:
        return sorted((m for m in self._messages.values() if m.ephemeral and not m.deleted), key=lambda m: m.id)

    def interaction(self, interaction_id: int) -> InteractionRecord:
        return self.interactions[int(interaction_id)]

    def callback(self, interaction_id: int) -> tuple[int, dict[str, Any] | None] | None:
        """(callback type, data) of the interaction's response, or None if unanswered."""
        rec = self.interactions.get(int(interaction_id))
        if rec is None or rec.callback_type is None:
            return None
        return rec.callback_type, rec.callback_data

    def callback_latency(self, interaction_id: int) -> float | None:
        """Seconds from INTERACTION_CREATE being sent to the callback arriving (None: not yet)."""
        rec = self.interactions.get(int(interaction_id))
        if rec is None or rec.callback_at is None:
            return None
        return rec.callback_at - rec.dispatched_at

    def original(self, interaction_id: int) -> StoredMessage | None:
        rec = self.interactions.get(int(interaction_id))
        return self._messages.get(rec.original_id) if rec and rec.original_id else None

    def followups(self, interaction_id: int) -> list[StoredMessage]:
        rec = self.interactions.get(int(interaction_id))
        return [self._messages[i] for i in rec.followup_ids] if rec else []

    def unanswered(self) -> list[int]:
        return [i for i, r in self.interactions.items() if r.callback_type is None]

    def commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """The synced commands: global (``guild_id=None``) or of one guild."""
        return copy.deepcopy(self.global_commands if guild_id is None else self.guild_commands.get(guild_id, []))

    def heartbeat_gaps(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.heartbeats)]

    async def wait_for(self, predicate: Callable[[FakeDiscord], Any], timeout: float = 10) -> Any:
        """Poll (every 0.02 s) until ``predicate(self)`` is truthy; returns its value."""
        return await poll_until(lambda: predicate(self), timeout=timeout, describe=self.summary)

    def summary(self, last: int = 20) -> str:
        lines = []
        for c in self.calls[-last:]:
            body = "" if c.json is None else repr(c.json)
            body = body if len(body) < 120 else body[:117] + "..."
            files = f" files={ {k: len(v) for k, v in c.files.items()} }" if c.files else ""
            lines.append(f"  {c.method} {c.path} -> {c.status} {body}{files}")
        return "\n".join(lines) or "  (no calls)"

    # -- gateway -------------------------------------------------------------------------------
    def _current_session(self) -> _Session | None:
        return self._live[-1] if self._live else None

    async def _send(self, session: _Session, payload: dict[str, Any]) -> None:
        ws = session.ws
        if ws is None or ws.closed:
            raise ConnectionError("gateway connection closed")
        raw = json.dumps(payload, separators=(",", ":"))
        async with session.lock:
            if session.compressor is not None:
                await ws.send_bytes(session.compressor.compress(raw.encode()) + session.compressor.flush(zlib.Z_SYNC_FLUSH))
            else:
                await ws.send_str(raw)

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _json({"message": "404: Not Found", "code": 0}, status=404)
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        self._sockets.add(ws)
        query = dict(request.query)
        self.gateway_connects.append({"path": request.path, **query})
        # a connection-local holder; becomes the session after IDENTIFY/RESUME
        conn = _Session(id="", ws=ws, intents=0, shard=None)
        if query.get("compress") == "zlib-stream":
            conn.compressor = zlib.compressobj()
        try:
            if query.get("encoding", "json") != "json":
                await ws.close(code=4002, message=b"Error while decoding payload.")
                return ws
            if query.get("v") not in (None, "9", "10"):
                await ws.close(code=4012, message=b"Invalid API version")
                return ws
            await self._send(conn, {"op": OP_HELLO, "s": None, "t": None,
                                    "d": {"heartbeat_interval": self.heartbeat_interval_ms,
                                          "_trace": ['["gateway-prd-fake",{"micros":0.0}]']}})
            session: _Session | None = None
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    raw = msg.data
                elif msg.type == WSMsgType.BINARY:
                    raw = msg.data.decode()
                else:
                    break
                try:
                    packet = json.loads(raw)
                except ValueError:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                session = await self._on_packet(conn, session, packet) or session
        finally:
            self._sockets.discard(ws)
            self.close_codes.append(ws.close_code)
            for s in self._live:
                if s.ws is ws:
                    s.ws = None
        return ws

    async def _on_packet(self, conn: _Session, session: _Session | None, packet: dict[str, Any]) -> _Session | None:
        op, d = packet.get("op"), packet.get("d")
        ws = conn.ws
        assert ws is not None
        if op == OP_HEARTBEAT:
            self.heartbeats.append(time.monotonic())
            await self._send(conn, {"op": OP_HEARTBEAT_ACK, "s": None, "t": None, "d": None})
        elif op == OP_IDENTIFY:
            return await self._identify(conn, session, d or {})
        elif op == OP_RESUME:
            return await self._resume(conn, session, d or {})
        elif op == OP_REQUEST_MEMBERS and session is not None and isinstance(d, dict):
            members = list(self.members.values())
            if d.get("user_ids"):
                wanted = {str(u) for u in (d["user_ids"] if isinstance(d["user_ids"], list) else [d["user_ids"]])}
                members = [m for m in members if m["user"]["id"] in wanted]
            elif d.get("query"):
                members = [m for m in members if m["user"]["username"].startswith(d["query"])]
            chunk = {"guild_id": d.get("guild_id"), "members": copy.deepcopy(members), "chunk_index": 0,
                     "chunk_count": 1, "not_found": []}
            if d.get("nonce") is not None:
                chunk["nonce"] = d["nonce"]
            await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)
        elif op == OP_PRESENCE:
            self.presence_updates.append(d)
        elif op == OP_VOICE:
            pass  # voice state updates: the fake has no voice
        elif session is None:
            await ws.close(code=4003, message=b"Not authenticated.")
        else:
            await ws.close(code=4001, message=b"Unknown opcode.")
        return None

    def _token_ok(self, token: str | None) -> bool:
        return bool(token) and (self.token is None or token == self.token)

    async def _identify(self, conn: _Session, session: _Session | None, d: dict[str, Any]) -> _Session | None:
        ws = conn.ws
        assert ws is not None
        if session is not None:
            await ws.close(code=4005, message=b"Already authenticated.")
            return None
        self.identifies.append(copy.deepcopy(d))
        if not self._token_ok(d.get("token")):
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = int(d.get("intents") or 0)
        if not self.privileged_intents and intents & PRIVILEGED_INTENTS:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        session = _Session(id=secrets.token_hex(16), ws=ws, intents=intents, shard=d.get("shard"),
                           compressor=conn.compressor, lock=conn.lock)
        self._sessions[session.id] = session
        self._live.append(session)
        ready: dict[str, Any] = {
            "v": 10, "user": {**self.bot_user, "verified": True, "mfa_enabled": False, "email": None},
            "user_settings": {}, "private_channels": [], "relationships": [], "presences": [],
            "guilds": [{"id": str(GUILD_ID), "unavailable": True}], "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["fake"], "game_relationships": [], "guild_experiments": [],
            "experiments": [], "auth": {}, "session_type": "normal", "session_id": session.id,
            "resume_gateway_url": self.resume_gateway_url, "application": {"id": str(APP_ID), "flags": 1 << 23},
            "_trace": ['["gateway-prd-fake",{"micros":0.0}]'],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        await self.dispatch("READY", ready)
        await self.dispatch("GUILD_CREATE", self.guild_payload())
        return session

    async def _resume(self, conn: _Session, session: _Session | None, d: dict[str, Any]) -> _Session | None:
        ws = conn.ws
        assert ws is not None
        self.resumes.append(copy.deepcopy(d))
        known = self._sessions.get(str(d.get("session_id")))
        if known is None or not self._token_ok(d.get("token")):
            await self._send(conn, {"op": OP_INVALID_SESSION, "s": None, "t": None, "d": False})
            return None
        old = known.ws
        known.ws, known.compressor, known.lock = ws, conn.compressor, conn.lock
        if old is not None and old is not ws and not old.closed:
            await old.close(code=4000)
        self._live = [s for s in self._live if s is not known] + [known]
        seq = int(d.get("seq") or 0)
        for payload in [p for p in known.buffer if p["s"] > seq]:
            await self._send(known, payload)
        await self.dispatch("RESUMED", {"_trace": ['["gateway-prd-fake",{"micros":0.0}]']})
        return known

    async def _broadcast_message(self, event: str, stored: StoredMessage) -> None:
        """MESSAGE_CREATE/UPDATE for the bot's own public guild messages, as Discord sends them."""
        session = self._current_session()
        if session is None or stored.ephemeral or not session.intents & INTENT_GUILD_MESSAGES:
            return
        data = copy.deepcopy(stored.raw)
        channel = self.channels.get(stored.channel_id, {})
        if "guild_id" in channel:
            data["guild_id"] = channel["guild_id"]
            member = {k: v for k, v in self.members[BOT_ID].items() if k != "user"}
            data["member"] = member
        await self.dispatch(event, data)

    # -- REST ----------------------------------------------------------------------------------
    def _add_routes(self) -> None:
        add = self._routes.append
        s = r"(?P<{}>\d+)".format
        tok = r"(?P<token>[^/]+)"
        add(("GET", re.compile(r"/users/@me"), self._get_me))
        add(("GET", re.compile(rf"/users/{s('user_id')}"), self._get_user))
        add(("GET", re.compile(r"/(?:oauth2/)?applications/@me"), lambda r: self.app_payload()))
        add(("GET", re.compile(r"/gateway"), lambda r: {"url": self.gateway_url.rstrip("/")}))
        add(("GET", re.compile(r"/gateway/bot"), lambda r: {
            "url": self.gateway_url.rstrip("/"), "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14400000,
                                    "max_concurrency": 1}}))
        app = s("app_id")
        add(("GET", re.compile(rf"/applications/{app}/commands"), lambda r: self.commands()))
        add(("PUT", re.compile(rf"/applications/{app}/commands"), self._put_commands))
        add(("POST", re.compile(rf"/applications/{app}/commands"), self._post_command))
        add(("GET", re.compile(rf"/applications/{app}/guilds/{s('guild_id')}/commands"),
             lambda r: self.commands(int(r.match["guild_id"]))))
        add(("PUT", re.compile(rf"/applications/{app}/guilds/{s('guild_id')}/commands"), self._put_commands))
        add(("POST", re.compile(rf"/applications/{app}/guilds/{s('guild_id')}/commands"), self._post_command))
        add(("POST", re.compile(rf"/interactions/{s('interaction_id')}/{tok}/callback"), self._callback))
        hook = rf"/webhooks/{app}/{tok}"
        add(("POST", re.compile(hook), self._followup))
        add(("GET", re.compile(rf"{hook}/messages/(?P<mid>@original|\d+)"), self._webhook_get))
        add(("PATCH", re.compile(rf"{hook}/messages/(?P<mid>@original|\d+)"), self._webhook_edit))
        add(("DELETE", re.compile(rf"{hook}/messages/(?P<mid>@original|\d+)"), self._webhook_delete))
        chan = rf"/channels/{s('channel_id')}"
        add(("GET", re.compile(chan), self._get_channel))
        add(("POST", re.compile(rf"{chan}/typing"), lambda r: (self._channel(r), None)[1]))
        add(("POST", re.compile(rf"{chan}/messages"), self._channel_post))
        add(("GET", re.compile(rf"{chan}/messages/{s('mid')}"), self._channel_get))
        add(("PATCH", re.compile(rf"{chan}/messages/{s('mid')}"), self._channel_edit))
        add(("DELETE", re.compile(rf"{chan}/messages/{s('mid')}"), self._channel_delete))
        add(("GET", re.compile(rf"/guilds/{s('guild_id')}"), self._get_guild))
        add(("GET", re.compile(rf"/guilds/{s('guild_id')}/members/{s('user_id')}"), self._get_member))
        add(("GET", re.compile(rf"/guilds/{s('guild_id')}/roles"), lambda r: list(copy.deepcopy(self.roles).values())))

    async def _not_found(self, request: web.Request) -> web.Response:
        call = Call(request.method, "/" + request.match_info.get("path", ""), dict(request.query), None, {}, {},
                    time.monotonic(), request.headers.get("Authorization"))
        self.calls.append(call)
        call.status, call.response = 404, {"message": "404: Not Found", "code": 0}
        return _json(call.response, status=404)

    async def _rest(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        method = request.method
        call = Call(method, path, dict(request.query), None, {}, {}, time.monotonic(),
                    request.headers.get("Authorization"))
        self.calls.append(call)
        try:
            body, parts = await _read_body(request)
        except Exception as exc:  # a body the fake cannot parse is the client's bug: say so loudly
            return self._answer(call, DiscordError(400, f"fake could not parse the request body: {exc!r}", 50109))
        call.json = body
        call.files = {name: data for name, _, data in parts}
        call.filenames = {name: filename for name, filename, _ in parts}
        failure = self._take_failure(f"{method} {path}")
        if failure is not None:
            return self._answer(call, failure)
        for route_method, rx, handler in self._routes:  # noqa: B007 - used after the break
            m = rx.fullmatch(path)
            if m and route_method == method:
                break
        else:
            return self._answer(call, DiscordError(404, "404: Not Found", 0))
        if not path.startswith(("/interactions/", "/webhooks/")) and not self._token_ok(_bot_token(call.auth)):
            return self._answer(call, DiscordError(401, "401: Unauthorized", 0))
        req = _Request(method, path, m, dict(request.query), body, parts, call)
        try:
            result = handler(req)
            if asyncio.iscoroutine(result):
                result = await result
        except DiscordError as exc:
            return self._answer(call, exc)
        return self._answer(call, result)

    def _answer(self, call: Call, outcome: Any) -> web.Response:
        headers = {"X-RateLimit-Bucket": _bucket_for(call.path), "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4",
                   "X-RateLimit-Reset": f"{time.time() + 1:.3f}", "X-RateLimit-Reset-After": "1.000",
                   "X-RateLimit-Scope": "user", "Via": "1.1 google"}
        if isinstance(outcome, DiscordError):
            headers.update(outcome.headers)
            call.status, call.response = outcome.status, outcome.payload()
            return _json(call.response, status=outcome.status, headers=headers)
        if outcome is None:
            call.status = 204
            return web.Response(status=204, headers=headers)
        call.status, call.response = 200, outcome
        return _json(outcome, headers=headers)

    def _take_failure(self, route: str) -> DiscordError | None:
        for failure in self._failures:
            if failure.pattern.search(route):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                if failure.status == 429:
                    reset_after = f"{failure.retry_after:.3f}"
                    headers = {"Retry-After": str(max(1, math.ceil(failure.retry_after))),
                               "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                               "X-RateLimit-Reset": f"{time.time() + failure.retry_after:.3f}",
                               "X-RateLimit-Reset-After": reset_after,
                               "X-RateLimit-Scope": "global" if failure.global_ else "user"}
                    if failure.global_:
                        headers["X-RateLimit-Global"] = "true"
                    body = {"message": failure.message or "You are being rate limited.",
                            "retry_after": failure.retry_after, "global": failure.global_}
                    if failure.code:
                        body["code"] = failure.code
                    return DiscordError(429, body["message"], failure.code, headers=headers, body=body)
                return DiscordError(failure.status, failure.message or _status_text(failure.status), failure.code)
        return None

    async def _download(self, request: web.Request) -> web.Response:
        self.downloads.append(int(request.match_info["attachment"]))
        stored = self._blobs.get(int(request.match_info["attachment"]))
        if stored is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, headers={"Content-Type": stored.content_type or "application/octet-stream"})

    # -- users, guild, channels ---------------------------------------------------------------
    def _user(self, user_id: int, username: str | None = None, *, bot: bool = False) -> dict[str, Any]:
        user = self.users.get(int(user_id))
        if user is None:
            name = username or f"user{user_id}"
            user = {"id": str(user_id), "username": name, "discriminator": "0", "global_name": name.title(),
                    "avatar": None, "bot": bot, "system": False, "public_flags": 0, "flags": 0,
                    "banner": None, "accent_color": None, "avatar_decoration_data": None, "collectibles": None,
                    "primary_guild": None}
            self.users[int(user_id)] = user
        return user

    def _get_me(self, r: _Request) -> dict[str, Any]:
        return {**self.bot_user, "verified": True, "mfa_enabled": False, "locale": "en-US", "email": None,
                "premium_type": 0, "bio": ""}

    def _get_user(self, r: _Request) -> dict[str, Any]:
        user = self.users.get(int(r.match["user_id"]))
        if user is None:
            raise DiscordError(404, "Unknown User", 10013)
        return copy.deepcopy(user)

    def _get_guild(self, r: _Request) -> dict[str, Any]:
        if int(r.match["guild_id"]) != GUILD_ID:
            raise DiscordError(404, "Unknown Guild", 10004)
        payload = self.guild_payload()
        for key in ("members", "channels", "threads", "presences", "voice_states", "stage_instances",
                    "guild_scheduled_events", "soundboard_sounds", "joined_at", "large", "member_count",
                    "unavailable", "lazy", "embedded_activities", "activity_instances", "application_command_counts"):
            payload.pop(key, None)
        return payload

    def _get_member(self, r: _Request) -> dict[str, Any]:
        member = self.members.get(int(r.match["user_id"]))
        if int(r.match["guild_id"]) != GUILD_ID:
            raise DiscordError(404, "Unknown Guild", 10004)
        if member is None:
            raise DiscordError(404, "Unknown Member", 10007)
        return copy.deepcopy(member)

    def _channel(self, r: _Request) -> dict[str, Any]:
        channel = self.channels.get(int(r.match["channel_id"]))
        if channel is None:
            raise DiscordError(404, "Unknown Channel", 10003)
        return channel

    def _get_channel(self, r: _Request) -> dict[str, Any]:
        return copy.deepcopy(self._channel(r))

    # -- commands ------------------------------------------------------------------------------
    def _find_command(self, name: str, guild: bool) -> dict[str, Any] | None:
        pools = ([self.guild_commands.get(GUILD_ID, [])] if guild else []) + [self.global_commands]
        for pool in pools:
            for command in pool:
                if command["name"] == name and command.get("type", 1) == 1:
                    return command
        return None

    def _check_command(self, body: Any, where: str) -> None:
        if not isinstance(body, dict):
            raise _form_error(where, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
        kind = body.get("type", 1)
        name = str(body.get("name", ""))
        if not _COMMAND_NAME.match(name) or (kind == 1 and name != name.lower()):
            raise _form_error(f"{where}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        if kind == 1 and not 1 <= len(body.get("description") or "") <= 100:
            raise _form_error(f"{where}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if len(body.get("options") or []) > 25:
            raise _form_error(f"{where}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")

    def _stored_command(self, body: dict[str, Any], guild_id: int | None, old: dict[str, Any] | None) -> dict[str, Any]:
        command = {
            "id": old["id"] if old else str(snowflake_at(increment=next(self._ids))), "application_id": str(APP_ID),
            "version": str(snowflake_at(increment=next(self._ids))), "default_member_permissions": None,
            "type": 1, "name": "", "name_localizations": None, "description": "",
            "description_localizations": None, "dm_permission": True, "contexts": None,
            "integration_types": [0], "nsfw": False, "options": [],
        }
        command.update(copy.deepcopy(body))
        if guild_id is not None:
            command["guild_id"] = str(guild_id)
            command.pop("dm_permission", None)
        return command

    def _put_commands(self, r: _Request) -> list[dict[str, Any]]:
        if int(r.match["app_id"]) != APP_ID:
            raise DiscordError(403, "Missing Access", 50001)
        body = r.json if r.json is not None else []
        if not isinstance(body, list):
            raise _form_error("_", "MODEL_TYPE_CONVERT", "Only iterables may be used in a ListType")
        if len(body) > 100:
            raise _form_error("_", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        for i, command in enumerate(body):
            self._check_command(command, str(i))
        guild_id = int(r.match["guild_id"]) if "guild_id" in r.match.groupdict() else None
        if guild_id is not None and guild_id != GUILD_ID:
            raise DiscordError(403, "Missing Access", 50001)
        current = self.global_commands if guild_id is None else self.guild_commands.get(guild_id, [])
        by_key = {(c["name"], c.get("type", 1)): c for c in current}
        stored = [self._stored_command(c, guild_id, by_key.get((c["name"], c.get("type", 1)))) for c in body]
        if guild_id is None:
            self.global_commands = stored
        else:
            self.guild_commands[guild_id] = stored
        return copy.deepcopy(stored)

    def _post_command(self, r: _Request) -> dict[str, Any]:
        self._check_command(r.json, "_")
        guild_id = int(r.match["guild_id"]) if "guild_id" in r.match.groupdict() else None
        pool = self.global_commands if guild_id is None else self.guild_commands.setdefault(guild_id, [])
        old = next((c for c in pool if c["name"] == r.json["name"] and c["type"] == r.json.get("type", 1)), None)
        command = self._stored_command(r.json, guild_id, old)
        if old is not None:
            pool[pool.index(old)] = command
        else:
            pool.append(command)
        return copy.deepcopy(command)

    # -- messages ------------------------------------------------------------------------------
    def _check_message(self, body: dict[str, Any], files: list[tuple[str, str, bytes]], *, edit: bool) -> None:
        content = body.get("content")
        if content is not None and len(str(content)) > MAX_CONTENT:
            raise _form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
        if len(body.get("embeds") or []) > MAX_EMBEDS:
            raise _form_error("embeds", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length.")
        if len(files) > MAX_ATTACHMENTS:
            raise _form_error("attachments", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ATTACHMENTS} or fewer in length.")
        for _, _, data in files:
            if len(data) > self.attachment_size_limit:
                raise DiscordError(413, "Request entity too large", 40005)
        components = body.get("components") or []
        v2 = bool(int(body.get("flags") or 0) & IS_COMPONENTS_V2)
        if not v2 and len(components) > 5:
            raise _form_error("components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        for i, row in enumerate(components):
            if not v2 and row.get("type") == 1 and len(row.get("components") or []) > 5:
                raise _form_error(f"components.{i}.components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        for c in _walk_components(components):
            custom_id = c.get("custom_id")
            if custom_id is not None and not 1 <= len(str(custom_id)) <= MAX_CUSTOM_ID:
                raise _form_error("components", "BASE_TYPE_BAD_LENGTH",
                                  f"Must be between 1 and {MAX_CUSTOM_ID} in length.")
            if c.get("type") == 2 and c.get("style") != 5 and c.get("style") != 6 and not custom_id:
                raise _form_error("components", "BASE_TYPE_REQUIRED", "A custom id is required")
        if not edit and not (content or body.get("embeds") or files or components or body.get("sticker_ids")
                             or body.get("poll")):
            raise DiscordError(400, "Cannot send an empty message", 50006)

    def _attachments(self, channel_id: int, body: dict[str, Any], files: list[tuple[str, str, bytes]],
                     existing: list[StoredAttachment]) -> list[StoredAttachment]:
        """The message's attachments after this request: kept ones (by id) and new uploads."""
        declared = body.get("attachments")
        by_field = {name: (filename, data) for name, filename, data in files}
        out: list[StoredAttachment] = []
        if declared is None:
            out = list(existing)
            items = [{"id": i} for i in range(len(files))]
        else:
            old = {a.id: a for a in existing}
            items = []
            for entry in declared:
                if int(entry.get("id", -1)) in old:
                    out.append(old[int(entry["id"])])
                else:
                    items.append(entry)
        for entry in items:
            index = int(entry.get("id", 0))
            found = by_field.get(f"files[{index}]")
            if found is None:
                if declared is not None:
                    raise _form_error(f"attachments.{index}", "ATTACHMENT_NOT_FOUND", "Unknown attachment")
                continue
            filename = str(entry.get("filename") or found[0])
            out.append(self._store_attachment(channel_id, filename, found[1], entry))
        # files sent without a matching ``attachments`` entry are still uploaded (Discord accepts them)
        used = {f"files[{int(e.get('id', 0))}]" for e in items}
        for name, filename, data in files:
            if name not in used and name.startswith("file"):
                out.append(self._store_attachment(channel_id, filename, data, {}))
        return out

    def _store_attachment(self, channel_id: int, filename: str, data: bytes, entry: dict) -> StoredAttachment:
        attachment_id = snowflake_at(increment=next(self._ids))
        content_type, size = _sniff(data, filename)
        url = f"{self.base}/attachments/{channel_id}/{attachment_id}/{filename}"
        raw: dict[str, Any] = {"id": str(attachment_id), "filename": filename, "size": len(data), "url": url,
                               "proxy_url": url, "content_type": content_type,
                               "content_scan_version": 0, "placeholder_version": 1, "placeholder": "",
                               "flags": entry.get("flags", 0)}
        if entry.get("description"):
            raw["description"] = entry["description"]
        if size is not None:
            raw["width"], raw["height"] = size
        stored = StoredAttachment(attachment_id, filename, data, content_type, raw)
        self._blobs[attachment_id] = stored
        return stored

    def _new_message(self, channel_id: int, body: dict[str, Any], files: list[tuple[str, str, bytes]], *,
                     via: str, record: InteractionRecord | None = None, flags: int | None = None) -> StoredMessage:
        if via != "deferred":  # the "thinking" placeholder is the one empty message Discord makes
            self._check_message(body, files, edit=False)
        message_id = snowflake_at(increment=next(self._ids))
        wanted = int(body.get("flags") or 0) if flags is None else flags
        if record is None:
            wanted &= ~EPHEMERAL  # only interaction responses can be ephemeral
        raw: dict[str, Any] = {
            "id": str(message_id), "type": 0, "content": str(body.get("content") or ""),
            "channel_id": str(channel_id), "author": copy.deepcopy(self.bot_user), "attachments": [],
            "embeds": _embeds(body.get("embeds")), "mentions": [], "mention_roles": [], "pinned": False,
            "mention_everyone": False, "tts": bool(body.get("tts", False)), "timestamp": iso_now(),
            "edited_timestamp": None, "flags": wanted, "components": self._components(body.get("components")),
        }
        if body.get("nonce") is not None:
            raw["nonce"] = body["nonce"]
        if record is not None:
            interaction_user = copy.deepcopy(self.users[record.user_id])
            raw.update(webhook_id=str(APP_ID), application_id=str(APP_ID),
                       type=20 if record.type == APPLICATION_COMMAND else 0)
            metadata = {"id": str(record.id), "type": record.type, "user": interaction_user,
                        "authorizing_integration_owners": record.payload.get("authorizing_integration_owners", {})}
            if record.type == APPLICATION_COMMAND:
                metadata["name"] = record.payload["data"]["name"]
                metadata["command_type"] = record.payload["data"].get("type", 1)
                raw["interaction"] = {"id": str(record.id), "type": record.type, "name": metadata["name"],
                                      "user": interaction_user}
            elif record.source_message_id:
                metadata["interacted_message_id"] = str(record.source_message_id)
            raw["interaction_metadata"] = metadata
        stored = StoredMessage(message_id, channel_id, raw, via=via, interaction_id=record.id if record else None)
        stored.attachments = self._attachments(channel_id, body, files, [])
        raw["attachments"] = [a.raw for a in stored.attachments]
        self._messages[message_id] = stored
        channel = self.channels.get(channel_id)
        if channel is not None and "last_message_id" in channel and not stored.ephemeral:
            channel["last_message_id"] = str(message_id)
        return stored

    def _edit(self, stored: StoredMessage, body: dict[str, Any], files: list[tuple[str, str, bytes]]) -> StoredMessage:
        if stored.deleted:
            raise DiscordError(404, "Unknown Message", 10008)
        self._check_message(body, files, edit=True)
        raw = copy.deepcopy(stored.raw)
        if "content" in body:
            raw["content"] = str(body["content"] or "")
        if "embeds" in body:
            raw["embeds"] = _embeds(body["embeds"])
        if "components" in body:
            raw["components"] = self._components(body["components"])
        if "flags" in body and body["flags"] is not None:
            keep = raw.get("flags", 0) & (EPHEMERAL | IS_COMPONENTS_V2 | LOADING)
            raw["flags"] = keep | (int(body["flags"]) & (SUPPRESS_EMBEDS | IS_COMPONENTS_V2))
        kept_ids = None if body.get("attachments") is None else {str(a.get("id")) for a in body["attachments"]}
        kept = [a for a in stored.attachments if kept_ids is None or str(a.id) in kept_ids]
        if len(kept) + len(files) > MAX_ATTACHMENTS:
            raise _form_error("attachments", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ATTACHMENTS} or fewer in length.")
        if not (raw["content"] or raw["embeds"] or kept or files or raw["components"]):
            raise DiscordError(400, "Cannot send an empty message", 50006)
        attachments = self._attachments(stored.channel_id, body, files, stored.attachments)
        before = stored.raw
        raw["attachments"] = [a.raw for a in attachments]
        if raw.get("flags", 0) & LOADING:
            raw["flags"] &= ~LOADING  # the first edit of a "thinking" message replaces it
        else:
            raw["edited_timestamp"] = iso_now()
        stored.raw, stored.attachments = raw, attachments
        stored.history.append(before)
        stored.edits += 1
        return stored

    def _components(self, components: Any) -> list[dict[str, Any]]:
        out = copy.deepcopy(components or [])
        for c in _walk_components(out):
            c.setdefault("id", next(self._component_ids))
        return out

    def _visible(self, stored: StoredMessage) -> dict[str, Any]:
        return copy.deepcopy(stored.raw)

    async def _channel_post(self, r: _Request) -> dict[str, Any]:
        channel = self._channel(r)
        stored = self._new_message(int(channel["id"]), r.json or {}, r.files, via="channel")
        return await self._after(stored, "MESSAGE_CREATE")

    async def _after(self, stored: StoredMessage, event: str) -> dict[str, Any]:
        await self._broadcast_message(event, stored)
        return self._visible(stored)

    def _channel_message(self, r: _Request) -> StoredMessage:
        self._channel(r)
        stored = self._messages.get(int(r.match["mid"]))
        if stored is None or stored.deleted or stored.ephemeral or stored.channel_id != int(r.match["channel_id"]):
            raise DiscordError(404, "Unknown Message", 10008)
        return stored

    def _channel_get(self, r: _Request) -> dict[str, Any]:
        return self._visible(self._channel_message(r))

    async def _channel_edit(self, r: _Request) -> dict[str, Any]:
        stored = self._edit(self._channel_message(r), r.json or {}, r.files)
        return await self._after(stored, "MESSAGE_UPDATE")

    async def _channel_delete(self, r: _Request) -> None:
        stored = self._channel_message(r)
        stored.deleted = True
        await self._broadcast_delete(stored)

    async def _broadcast_delete(self, stored: StoredMessage) -> None:
        session = self._current_session()
        if session is None or stored.ephemeral or not session.intents & INTENT_GUILD_MESSAGES:
            return
        data = {"id": str(stored.id), "channel_id": str(stored.channel_id)}
        if "guild_id" in self.channels.get(stored.channel_id, {}):
            data["guild_id"] = str(GUILD_ID)
        await self.dispatch("MESSAGE_DELETE", data)

    # -- interactions --------------------------------------------------------------------------
    def _interaction_by_token(self, r: _Request) -> InteractionRecord:
        token = r.match["token"]
        record = next((i for i in self.interactions.values() if i.token == token), None)
        if record is None or int(r.match["app_id"]) != APP_ID:
            raise DiscordError(404, "Unknown Webhook", 10015)
        if time.monotonic() - record.dispatched_at > self.token_lifetime_s:
            raise DiscordError(401, "Invalid Webhook Token", 50027)
        return record

    async def _callback(self, r: _Request) -> Any:
        record = self.interactions.get(int(r.match["interaction_id"]))
        if record is None or record.token != r.match["token"]:
            raise DiscordError(404, "Unknown interaction", 10062)
        if record.acknowledged:
            raise DiscordError(400, "Interaction has already been acknowledged.", 40060)
        if time.monotonic() - record.dispatched_at > self.ack_deadline_s:
            raise DiscordError(404, "Unknown interaction", 10062)
        body = r.json or {}
        kind = body.get("type")
        data = body.get("data") or {}
        if kind in (CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE) and record.type not in (MESSAGE_COMPONENT, MODAL_SUBMIT):
            raise DiscordError(400, "Interaction callback type is not valid for this interaction", 40043)
        if kind == CB_AUTOCOMPLETE and record.type != AUTOCOMPLETE:
            raise DiscordError(400, "Interaction callback type is not valid for this interaction", 40043)
        if kind not in (CB_PONG, CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE,
                        CB_AUTOCOMPLETE, CB_MODAL, CB_LAUNCH_ACTIVITY):
            raise _form_error("type", "BASE_TYPE_CHOICES", f"Value must be one of ... got {kind!r}")
        message: StoredMessage | None = None
        event = None
        if kind == CB_MESSAGE:
            message = self._new_message(record.channel_id, data, r.files, via="callback", record=record)
            event = "MESSAGE_CREATE"
        elif kind == CB_DEFERRED_MESSAGE:
            flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
            message = self._new_message(record.channel_id, {"content": ""}, [], via="deferred", record=record,
                                        flags=flags)
            event = "MESSAGE_CREATE"
        elif kind in (CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE):
            message = self._messages.get(record.source_message_id or 0)
            if message is None:
                raise DiscordError(404, "Unknown Message", 10008)
            if kind == CB_UPDATE_MESSAGE:
                self._edit(message, data, r.files)
                event = "MESSAGE_UPDATE"
        record.callback_type, record.callback_data = kind, copy.deepcopy(data)
        record.callback_files = {name: blob for name, _, blob in r.files}
        record.callback_at = time.monotonic()
        if message is not None:
            record.original_id = message.id
        if event is not None and message is not None:
            await self._broadcast_message(event, message)
        if "with_response" not in r.query or r.query["with_response"].lower() in ("0", "false"):
            return None
        out: dict[str, Any] = {"interaction": {"id": str(record.id), "type": record.type,
                                               "response_message_loading": kind == CB_DEFERRED_MESSAGE,
                                               "response_message_ephemeral": bool(message and message.ephemeral)}}
        if message is not None:
            out["interaction"]["response_message_id"] = str(message.id)
        out["resource"] = {"type": kind}
        if message is not None and kind in (CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_UPDATE_MESSAGE):
            out["resource"]["message"] = self._visible(message)
        return out

    async def _followup(self, r: _Request) -> Any:
        record = self._interaction_by_token(r)
        if not record.acknowledged:
            raise DiscordError(404, "Unknown Webhook", 10015)
        body = r.json or {}
        original = self._messages.get(record.original_id or 0)
        if original is not None and original.loading and record.callback_type == CB_DEFERRED_MESSAGE:
            # Discord: the first followup after a "thinking" defer replaces the loading message,
            # and the defer decided whether it is ephemeral.
            self._check_message(body, r.files, edit=False)
            stored = self._edit(original, body, r.files)
            stored.via = "followup"
            event = "MESSAGE_UPDATE"
        else:
            flags = int(body.get("flags") or 0) & (EPHEMERAL | SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2)
            stored = self._new_message(record.channel_id, body, r.files, via="followup", record=record, flags=flags)
            event = "MESSAGE_CREATE"
        record.followup_ids.append(stored.id)
        await self._broadcast_message(event, stored)
        if r.query.get("wait", "false").lower() in ("0", "false"):
            return None
        return self._visible(stored)

    def _webhook_message(self, r: _Request) -> tuple[InteractionRecord, StoredMessage]:
        record = self._interaction_by_token(r)
        mid = r.match["mid"]
        if mid == "@original":
            if record.original_id is None:
                raise DiscordError(404, "Unknown Message", 10008)
            stored = self._messages[record.original_id]
        else:
            stored = self._messages.get(int(mid))
            if stored is None or stored.id not in (record.original_id, *record.followup_ids):
                raise DiscordError(404, "Unknown Message", 10008)
        if stored.deleted:
            raise DiscordError(404, "Unknown Message", 10008)
        return record, stored

    def _webhook_get(self, r: _Request) -> dict[str, Any]:
        return self._visible(self._webhook_message(r)[1])

    async def _webhook_edit(self, r: _Request) -> dict[str, Any]:
        _, stored = self._webhook_message(r)
        self._edit(stored, r.json or {}, r.files)
        await self._broadcast_message("MESSAGE_UPDATE", stored)
        return self._visible(stored)

    async def _webhook_delete(self, r: _Request) -> None:
        _, stored = self._webhook_message(r)
        stored.deleted = True
        await self._broadcast_delete(stored)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _json(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer whose Content-Type is exactly ``application/json`` (discord.py compares it)."""
    out = dict(headers or {})
    out["Content-Type"] = "application/json"
    return web.Response(body=json.dumps(payload).encode(), status=status, headers=out)


async def _read_body(request: web.Request) -> tuple[Any, list[tuple[str, str, bytes]]]:
    ctype = request.content_type
    if ctype.startswith("multipart/"):
        body: Any = None
        parts: list[tuple[str, str, bytes]] = []
        reader = await request.multipart()
        async for part in reader:
            data = await part.read(decode=False)
            if part.name == "payload_json":
                body = json.loads(bytes(data).decode())
            elif part.filename is not None:
                parts.append((part.name or "", part.filename, bytes(data)))
            else:
                body = body or {}
                body[part.name or ""] = bytes(data).decode()
        return body, parts
    raw = await request.read()
    if not raw:
        return None, []
    if ctype == "application/json":
        return json.loads(raw), []
    raise ValueError(f"unexpected Content-Type {ctype!r}")


def _bot_token(header: str | None) -> str | None:
    if header and header.startswith("Bot "):
        return header[4:]
    return None


def _bucket_for(path: str) -> str:
    template = re.sub(r"/\d{5,}", "/:id", path)
    template = re.sub(r"/webhooks/:id/[^/]+", "/webhooks/:id/:token", template)
    template = re.sub(r"/interactions/:id/[^/]+", "/interactions/:id/:token", template)
    return format(zlib.crc32(template.encode()), "08x") * 4


def _status_text(status: int) -> str:
    return {400: "400: Bad Request", 401: "401: Unauthorized", 403: "Missing Permissions", 404: "404: Not Found",
            500: "500: Internal Server Error", 502: "502: Bad Gateway", 503: "503: Service Unavailable"}.get(
        status, f"{status}: Error")


def _role(role_id: int, name: str, position: int, permissions: int, *, color: int = 0, hoist: bool = False,
          managed: bool = False) -> dict[str, Any]:
    return {"id": str(role_id), "name": name, "description": None, "permissions": str(permissions),
            "position": position, "color": color,
            "colors": {"primary_color": color, "secondary_color": None, "tertiary_color": None},
            "hoist": hoist, "managed": managed, "mentionable": False, "icon": None, "unicode_emoji": None,
            "flags": 0}


class RefusedByClient(Exception):
    """Discord's client would not send this command: an option value breaks its declaration."""


def _client_refusal(option: dict[str, Any], value: Any) -> str | None:
    """Why Discord's client refuses ``value`` for ``option``; None when it sends it."""
    if option.get("choices") and value not in [choice["value"] for choice in option["choices"]]:
        return f"{value!r} is not one of the choices"
    if "min_value" in option and value < option["min_value"]:
        return f"{value} is below {option['min_value']}"
    if "max_value" in option and value > option["max_value"]:
        return f"{value} is above {option['max_value']}"
    if "min_length" in option and len(value) < option["min_length"]:
        return f"shorter than {option['min_length']} characters"
    if "max_length" in option and len(value) > option["max_length"]:
        return f"longer than {option['max_length']} characters"
    return None


def _option_type(value: Any) -> int:
    if isinstance(value, dict):
        return OPTION_ATTACHMENT
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


def _walk_components(components: Any) -> list[dict[str, Any]]:
    """Every component, nested ones included (action rows, containers, sections)."""
    out: list[dict[str, Any]] = []
    for c in components or []:
        out.append(c)
        out.extend(_walk_components(c.get("components")))
        if isinstance(c.get("accessory"), dict):
            out.append(c["accessory"])
    return out


def _embeds(embeds: Any) -> list[dict[str, Any]]:
    out = copy.deepcopy(embeds or [])
    for e in out:
        e.setdefault("type", "rich")
        e.setdefault("content_scan_version", 0)
    return out


def _sniff(data: bytes, filename: str) -> tuple[str | None, tuple[int, int] | None]:
    """(content type, (width, height) for images) as Discord reports them."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return "image/png", struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return "image/gif", struct.unpack("<HH", data[6:10])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                break
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2):
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return "image/jpeg", (width, height)
            i += 2 + length
        return "image/jpeg", None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", None
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return {"json": "application/json; charset=utf-8", "txt": "text/plain; charset=utf-8",
            "zip": "application/zip", "pdf": "application/pdf"}.get(ext), None
