"""What adapters call: submit, status, cancel, regenerate, ban/unban, mystats.

The service owns the rules: input limits, moderation, bans, quotas and roles. It writes
jobs to the store and never draws anything itself; the worker does that. Every refusal
is a ``StoryError`` whose message comes from the catalogue in the user's language.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.config import AppConfig, StorySettings
from bot.errors import BadRequest, RetryLater
from bot.exports import EXPORT_KINDS, BoardExports, ExportFile
from bot.jobs.status_refs import StatusRefs
from bot.messages import Lang, resolve_language, text
from bot.ops.storage import DiskSpace, owned_folder, remove_folder
from bot.pictures import PictureRules, Upload
from bot.quotas import Limits, Refused, refusal_error
from bot.store.records import Job, NewJob, Sighting, User
from bot.store.store import Store
from engine.limits import (
    ASPECTS,
    MAX_FRAMES,
    MAX_SEED,
    MIN_FRAMES,
    MODES,
    SEED_SPACE,
    allowed_aspects,
    allowed_frames,
    allowed_modes,
    allowed_seeds,
)
from engine.moderation import TermFilter, strip_bidi
from engine.rendering.base import ModeOff
from engine.storyboard import PictureUse

log = logging.getLogger(__name__)

_ALLOWED_CONTROLS = set("\n\r\t")
OVERVIEW_LINES = 30  # /queue lists this many jobs: the whole queue would overflow a chat message (4096 on Telegram)


@dataclass(frozen=True)
class Requester:
    """Who is asking, and where the answer goes."""

    platform: str
    user_id: str
    chat_id: str
    display_name: str = ""
    locale: str | None = None
    roles: tuple[str, ...] = ()  # platform role ids (Discord), for moderator roles

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True)
class StoryOptions:
    mode: str | None = None
    frames: int | None = None
    seed: int | None = None
    lora: bool | None = None  # False: --no-lora, draw the user's own character without the LoRA
    aspect: str | None = None  # the frames' shape; None: [story] default_aspect


@dataclass(frozen=True)
class StoryRequest:
    requester: Requester
    text: str
    options: StoryOptions = StoryOptions()
    out_dir: Path | None = None  # CLI only: where the board is written
    source_ref: str | None = None  # the platform's id of the message: a redelivered message is one job, not two
    picture: Upload | None = None  # the user's own character picture, fetched once the rest passes


def _paused_note(paused: bool, lang: Lang) -> str:
    return "\n" + text("queue_paused_disk", lang) if paused else ""


@dataclass(frozen=True)
class Submitted:
    job_id: int
    position: int
    lang: Lang
    paused: bool = False  # no job starts now: the server is short of disk space
    notes: tuple[str, ...] = ()  # catalogue keys of what the user should know about their job

    @property
    def text(self) -> str:
        lines = [text("queued", self.lang, job=self.job_id, position=self.position)]
        lines += [text(key, self.lang) for key in self.notes]
        return "\n".join(lines) + _paused_note(self.paused, self.lang)


@dataclass(frozen=True)
class JobView:
    job: Job
    position: int | None
    lang: Lang
    paused: bool = False

    @property
    def text(self) -> str:
        if self.job.status == "queued":
            status = text("status_queued", self.lang, position=self.position)
        else:
            status = text(f"status_{self.job.status}", self.lang)
        # the job number names the board; server paths are never shown
        detail = f": {self.job.title}" if self.job.status == "done" and self.job.title else ""
        paused = self.paused and self.job.status == "queued"
        return text("status_line", self.lang, job=self.job.id, status=status, detail=detail) + _paused_note(
            paused, self.lang)


@dataclass(frozen=True)
class Board:
    job: Job
    grid_path: Path
    frame_paths: tuple[Path, ...]
    lang: Lang


@dataclass(frozen=True)
class ExportTicket:
    """An export the service has allowed; ``file`` makes it (or finds it made) and may take seconds."""

    exports: BoardExports
    board: Board
    kind: str

    @property
    def lang(self) -> Lang:
        return self.board.lang

    async def file(self) -> ExportFile:
        folder = self.board.grid_path.parent
        return await self.exports.get(folder, self.kind, job_id=self.board.job.id)


@dataclass(frozen=True)
class Stats:
    user: User
    queued: int
    remaining: int
    lang: Lang

    @property
    def text(self) -> str:
        u = self.user
        return text(
            "mystats", self.lang, submitted=u.jobs_submitted, delivered=u.boards_delivered,
            refusals=u.refusals, queued=self.queued, remaining=self.remaining,
        )


def _shorten(value: str, limit: int) -> str:
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


class StoryRules:
    """The rules every story meets wherever it comes from: a chat, the console, ``story`` or ``plan``."""

    def __init__(self, settings: StorySettings) -> None:
        self.settings = settings
        self.banned = TermFilter(settings.banned_terms)  # the engine checks the LLM's plan with the same terms

    def check_text(self, raw: str) -> str:
        """Return the story, stripped; raise BadRequest with a clear reason otherwise."""
        story = strip_bidi(raw or "").strip()  # bidi controls would reorder titles and captions on the board
        if not story:
            raise BadRequest("err_empty")
        if len(story) > self.settings.max_chars:
            raise BadRequest("err_too_long", length=len(story), max=self.settings.max_chars)
        if any(unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS for ch in story):
            raise BadRequest("err_control_chars")
        if not any(unicodedata.category(ch).startswith("L") for ch in story):
            raise BadRequest("err_no_letters")
        if self.banned.find(story) is not None:
            raise BadRequest("err_banned_terms")
        return story

    @staticmethod
    def check_mode(mode: str) -> str:
        if mode not in MODES:
            raise BadRequest("err_bad_option", option="--mode", allowed=allowed_modes())
        return mode

    @staticmethod
    def check_frames(frames: int) -> int:
        if not MIN_FRAMES <= frames <= MAX_FRAMES:
            raise BadRequest("err_bad_option", option="--frames", allowed=allowed_frames())
        return frames

    @staticmethod
    def check_aspect(aspect: str) -> str:
        if aspect not in ASPECTS:
            raise BadRequest("err_bad_option", option="--aspect", allowed=allowed_aspects())
        return aspect

    @staticmethod
    def check_seed(seed: int) -> int:
        if not 0 <= seed <= MAX_SEED:
            raise BadRequest("err_bad_option", option="--seed", allowed=allowed_seeds())
        return seed


class StoryService:
    def __init__(self, store: Store, config: AppConfig, *, modes_off: Mapping[str, ModeOff] | None = None,
                 status_refs: StatusRefs | None = None,
                 picture_use: Callable[[str], PictureUse | None] | None = None) -> None:
        self.store = store
        self.status_refs = status_refs or StatusRefs()  # shared with the worker (bot/app.py)
        self.config = config
        self.rules = StoryRules(config.story)
        self._modes_off = dict(modes_off or {})  # render modes this bot's engine cannot draw, and why
        self._picture_use = picture_use or (lambda mode: None)  # what a user's picture does, per mode
        self.pictures = PictureRules(config.story.max_picture_mb, config.storage.outputs)
        self._moderators = frozenset(config.roles.moderators)
        self._moderator_roles = frozenset(config.roles.moderator_roles)
        self.limits = Limits(config.queue, max_retries=config.validation.max_retries)
        self.disk = DiskSpace.of(config.storage)
        self.exports = BoardExports(config.export)  # one cache of made files for every adapter
        self._last_resend: dict[str, float] = {}  # requester key → when their last board re-send went out

    # -- helpers -------------------------------------------------------------------------
    def is_moderator(self, requester: Requester) -> bool:
        """A listed user, or a member holding a listed role. Decided here, never by a button."""
        if requester.key in self._moderators:
            return True
        return any(f"{requester.platform}:{role}" in self._moderator_roles for role in requester.roles)

    async def _user(self, requester: Requester) -> tuple[User, Lang]:
        """Who is asking, read and never written: a command that only looks writes nothing. Someone
        not seen before is ``User.unseen`` (owns nothing); the user row is written with the first
        job they queue (``Store.enqueue``), in that job's transaction."""
        sighting = _sighting(requester)
        user = await self.store.get_user(requester.platform, requester.user_id) or User.unseen(sighting)
        return user, resolve_language(requester.locale or user.locale)

    async def _owned_job(self, requester: Requester, user: User, job_id: int) -> Job:
        job = await self.store.get_job(job_id)
        if job is None:
            raise BadRequest("err_not_found", job=job_id)
        if job.user_id != user.id and not self.is_moderator(requester):
            raise BadRequest("err_forbidden", job=job_id)
        return job

    async def queue_position(self, job_id: int) -> int | None:
        return await self.store.queue_position(job_id)

    def paused(self) -> bool:
        """True while the worker claims nothing for want of disk space (the same rule it follows)."""
        return self.disk.shortfall() is not None

    async def outstanding(self, platform: str) -> int:
        """Jobs not yet finished and delivered for ``platform`` (the console waits on this)."""
        return await self.store.outstanding(platform)

    # -- submit ----------------------------------------------------------------------------
    async def submit(self, request: StoryRequest) -> Submitted:
        user, lang = await self._user(request.requester)
        if user.banned:
            await self.store.count_refusal(user.id)
            raise BadRequest("err_user_banned")
        try:
            story = self.rules.check_text(request.text)
        except BadRequest as exc:
            if exc.key == "err_banned_terms":
                await self.store.count_refusal(_sighting(request.requester))
                log.info("refused story from %s: banned term", request.requester.key)
            raise
        options = self.check_options(request.options)
        if not options.lora and request.picture is None:
            raise BadRequest("err_no_lora_needs_picture")
        # fetched only now: a banned user, a refused story or a bad option downloads nothing
        picture = await self.pictures.receive(request.picture) if request.picture is not None else None
        job = NewJob(
            user_id=user.id, platform=request.requester.platform, chat_id=request.requester.chat_id,
            language=lang, kind="story", story=story, mode=options.mode, frames=options.frames, seed=options.seed,
            out_dir=str(request.out_dir) if request.out_dir else None, source_ref=request.source_ref,
            renders=self.limits.renders("story", options.frames),
            character_image=str(picture) if picture else None, lora=options.lora, aspect=options.aspect,
        )
        return await self._enqueue(request.requester, job, lang, notes=self._picture_notes(job))

    def _picture_notes(self, job: NewJob) -> tuple[str, ...]:
        """What the user's picture will not do on this bot, said when the job is queued."""
        if job.character_image is None:
            return ()
        use = self._picture_use(job.mode)
        return (f"note_picture_{use}",) if use in ("checks", "checks_no_ip_adapter", "inset") else ()

    async def _enqueue(self, requester: Requester, job: NewJob, lang: Lang,
                       notes: tuple[str, ...] = ()) -> Submitted:
        now = self.store.now()
        caps = self.limits.caps_for(moderator=self.is_moderator(requester), now=now)
        outcome = await self.store.enqueue(job, caps=caps, sighting=_sighting(requester))
        if isinstance(outcome, Refused):
            log.info("refused a %s from %s: %s cap (%d)", job.kind, requester.key, outcome.cap, outcome.limit)
            raise refusal_error(outcome, now)
        job_id = outcome
        position = await self.queue_position(job_id) or 1
        log.info("job %d queued (%s, %s, position %d)", job_id, job.kind, requester.key, position)
        return Submitted(job_id=job_id, position=position, lang=lang, paused=self.paused(), notes=notes)

    def check_options(self, options: StoryOptions) -> StoryOptions:
        mode = self.check_mode_available(self.rules.check_mode(options.mode or self.config.story.default_mode))
        frames = self.rules.check_frames(
            options.frames if options.frames is not None else self.config.story.default_frames)
        seed = self.rules.check_seed(options.seed if options.seed is not None else secrets.randbelow(SEED_SPACE))
        aspect = self.rules.check_aspect(options.aspect or self.config.story.default_aspect)
        return StoryOptions(mode=mode, frames=frames, seed=seed, lora=options.lora is not False, aspect=aspect)

    def check_mode_available(self, mode: str) -> str:
        """Refuse a mode this bot's engine cannot draw now, naming the weights that are missing."""
        off = self._modes_off.get(mode)
        if off is None:
            return mode
        if off.weights:
            raise BadRequest("err_mode_weights_missing", mode=mode, weights=off.weights)
        raise BadRequest("err_mode_switched_off", mode=mode)

    # -- status / cancel -------------------------------------------------------------------
    async def status(self, requester: Requester, job_id: int | None = None) -> JobView:
        user, lang = await self._user(requester)
        if job_id is None:
            job = await self.store.latest_job(user.id)
            if job is None:
                raise BadRequest("err_no_jobs")
        else:
            job = await self._owned_job(requester, user, job_id)
        position = await self.queue_position(job.id) if job.status == "queued" else None
        return JobView(job=job, position=position, lang=lang, paused=self.paused())

    async def cancel(self, requester: Requester, job_id: int) -> str:
        user, lang = await self._user(requester)
        job = await self._owned_job(requester, user, job_id)
        updated = await self.store.request_cancel(job.id)
        if updated is None:
            status = text(f"status_{job.status}", lang)
            raise BadRequest("err_not_cancellable", job=job.id, status=status)
        log.info("job %d: cancel by %s (%s)", job.id, requester.key, updated.status)
        key = "job_cancelled" if updated.status == "cancelled" else "cancel_requested"
        return text(key, lang, job=job.id)

    # -- regenerate ------------------------------------------------------------------------
    async def regenerate(self, requester: Requester, job_id: int, frame: int | None = None) -> Submitted:
        """Queue a new job linked to ``job_id``: the whole board, or one frame with the rest kept."""
        user, lang = await self._user(requester)
        if user.banned:
            raise BadRequest("err_user_banned")
        parent = await self._owned_job(requester, user, job_id)
        if parent.status != "done" or not parent.report_path:
            raise BadRequest("err_not_done", job=parent.id)
        self.rules.check_text(parent.story)  # the banned terms may have grown since the board was drawn
        self.check_mode_available(parent.mode)
        n_frames = len(await self.store.frames(parent.id))
        if frame is not None and not 1 <= frame <= n_frames:
            raise BadRequest("err_frame_range", job=parent.id, frames=n_frames, frame=frame)
        kind = "regen_frame" if frame else "regen_board"
        job = NewJob(
            user_id=user.id, platform=requester.platform, chat_id=requester.chat_id, language=lang,
            kind=kind, story=parent.story, mode=parent.mode, frames=n_frames, seed=secrets.randbelow(SEED_SPACE),
            parent_id=parent.id, redo_frame=frame, renders=self.limits.renders(kind, n_frames),
            character_image=parent.character_image, lora=parent.lora,  # the same character as the board
            aspect=parent.aspect,  # and the same shape
        )
        return await self._enqueue(requester, job, lang)

    # -- moderation ------------------------------------------------------------------------
    async def ban(self, requester: Requester, platform: str, user_id: str, reason: str = "") -> str:
        return await self._set_ban(requester, platform, user_id, True, reason)

    async def unban(self, requester: Requester, platform: str, user_id: str) -> str:
        return await self._set_ban(requester, platform, user_id, False, "")

    async def _set_ban(self, requester: Requester, platform: str, user_id: str, banned: bool, reason: str) -> str:
        _, lang = await self._user(requester)
        if not self.is_moderator(requester):
            raise BadRequest("err_moderators_only")
        target = await self.store.get_user(platform, user_id)
        if target is None:
            target = await self.store.touch_user(platform, user_id, "", None)
        cancelled = await self.store.set_banned(target.id, banned, reason or None)
        log.info("%s %s %s", requester.key, "banned" if banned else "unbanned", target.key)
        if banned:
            return text("banned_ok", lang, user=target.key, cancelled=cancelled)
        return text("unbanned_ok", lang, user=target.key)

    async def purge(self, requester: Requester, job_id: int) -> str:
        """Moderators: delete a finished board on request: its folder, frames and rows."""
        _, lang = await self._user(requester)
        if not self.is_moderator(requester):
            raise BadRequest("err_moderators_only")
        job = await self.store.get_job(job_id)
        if job is None:
            raise BadRequest("err_not_found", job=job_id)
        if job.status in ("queued", "running"):
            raise BadRequest("err_purge_active", job=job_id)
        await self.store.delete_jobs([job.id])
        await asyncio.to_thread(remove_folder, owned_folder(self.config.storage.outputs, job))
        log.info("job %d purged by %s", job.id, requester.key)
        return text("purged_ok", lang, job=job.id)

    # -- what adapters need around a job ---------------------------------------------------
    def set_status_ref(self, job_id: int, ref: str) -> None:
        """Remember where the adapter shows this job's progress; the worker reads it from memory."""
        self.status_refs.put(job_id, ref)

    async def board(self, requester: Requester, job_id: int) -> Board:
        """A finished board's files, for its buttons: the owner, a moderator or someone in the chat
        it was posted to may look."""
        user, lang = await self._user(requester)
        job = await self._visible_job(requester, user, job_id)
        if job.status != "done" or not job.grid_path:
            raise BadRequest("err_not_done", job=job_id)
        frames = await self.store.frames(job_id)
        return Board(job=job, grid_path=Path(job.grid_path), frame_paths=tuple(Path(f.path) for f in frames),
                     lang=lang)

    async def resend_board(self, requester: Requester, job_id: int) -> Board:
        """``board`` for "Full resolution", which uploads every frame again: once per user per
        ``queue.resend_cooldown_s``."""
        board = await self.board(requester, job_id)
        self._take_resend_turn(requester)
        return board

    async def export(self, requester: Requester, job_id: int, kind: str) -> ExportTicket:
        """A board's PDF or MP4, for its buttons: the rules of "Full resolution" (``resend_board``),
        as it is an upload too. Checked now; the file is made (or found) by ``ExportTicket.file``."""
        if kind not in EXPORT_KINDS:
            raise BadRequest("err_bad_button")
        return ExportTicket(self.exports, await self.resend_board(requester, job_id), kind)

    async def _visible_job(self, requester: Requester, user: User, job_id: int) -> Job:
        """A job its owner, a moderator or a member of the chat it was posted in may look at."""
        job = await self.store.get_job(job_id)
        if job is None:
            raise BadRequest("err_not_found", job=job_id)
        same_chat = job.platform == requester.platform and job.chat_id == requester.chat_id
        if job.user_id != user.id and not same_chat and not self.is_moderator(requester):
            raise BadRequest("err_not_your_chat", job=job_id)
        return job

    def _take_resend_turn(self, requester: Requester) -> None:
        """Re-sends upload every frame again; one per user per cooldown keeps a group's upload budget."""
        cooldown = self.config.queue.resend_cooldown_s
        if not cooldown or self.is_moderator(requester):
            return
        now = self.store.now()
        last = self._last_resend.get(requester.key)
        if last is not None and now - last < cooldown:
            raise RetryLater("err_resend_cooldown", seconds=math.ceil(cooldown - (now - last)))
        if len(self._last_resend) > 10_000:  # forget turns that are over, so the map stays small
            self._last_resend = {key: at for key, at in self._last_resend.items() if now - at < cooldown}
        self._last_resend[requester.key] = now

    async def queue_overview(self, requester: Requester) -> str:
        """Moderators: every queued and running job with its owner and position."""
        _, lang = await self._user(requester)
        if not self.is_moderator(requester):
            raise BadRequest("err_moderators_only")
        jobs = await self.store.active_jobs()
        if not jobs:
            return text("queue_empty", lang)
        lines = [text("queue_header", lang, count=len(jobs))]
        for job in jobs[:OVERVIEW_LINES]:
            owner = await self.store.user_by_id(job.user_id)
            position = await self.store.queue_position(job.id) if job.status == "queued" else None
            where = text("status_running", lang) if job.status == "running" else text(
                "status_queued", lang, position=position or "?")
            lines.append(text("queue_line", lang, job=job.id, owner=owner.key if owner else "?", status=where,
                              story=_shorten(job.story, 40)))
        if len(jobs) > OVERVIEW_LINES:
            lines.append(text("queue_more", lang, count=len(jobs) - OVERVIEW_LINES))
        return "\n".join(lines) + _paused_note(self.paused(), lang)

    # -- stats -----------------------------------------------------------------------------
    async def mystats(self, requester: Requester) -> Stats:
        user, lang = await self._user(requester)
        queued = await self.store.count_user_jobs(user.id, "queued")
        caps = self.limits.caps_for(moderator=self.is_moderator(requester), now=self.store.now())
        room = [caps.queued_total - await self.store.count_queued()]
        if caps.queued_per_user is not None:
            room.append(caps.queued_per_user - queued)
        if caps.jobs_per_day is not None:
            room.append(caps.jobs_per_day - await self.store.count_user_jobs_since(user.id, caps.since))
        return Stats(user=user, queued=queued, remaining=max(0, min(room)), lang=lang)


def _sighting(requester: Requester) -> Sighting:
    return Sighting(requester.platform, requester.user_id, requester.display_name, requester.locale)
