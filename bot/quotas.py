"""The cost limits every job meets, declared once: the CLI, the console, Telegram and Discord
all submit through ``StoryService``, which asks ``Limits`` for the caps of a requester and
hands them to ``Store.enqueue``; the store checks them in the same transaction as the insert,
so two quick submits never squeeze past a cap together.

A job's cost is its worst case in SDXL renders: every frame re-rolled ``validation.max_retries``
times. The daily caps are a rolling 24 hours, so "try again at" is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import QueueSettings
from bot.errors import RetryLater

DAY_S = 86_400.0


@dataclass(frozen=True)
class Caps:
    """What one enqueue must respect; None = that cap does not apply (a moderator's exemption)."""

    queued_total: int
    queued_per_user: int | None
    queued_per_chat: int | None
    jobs_per_day: int | None
    regen_renders_per_day: int | None
    since: float  # the rolling day: jobs created after this count


@dataclass(frozen=True)
class Refused:
    """The cap that stopped an enqueue, its value, and when a slot frees up (daily caps)."""

    cap: str
    limit: int
    retry_at: float | None = None
    used: int | None = None  # renders spent in the rolling day (the regeneration budget)
    cost: int | None = None  # renders the refused job could have cost


_REFUSAL_KEYS = {
    "queued_total": "err_queue_busy",
    "queued_per_user": "err_queue_full",
    "queued_per_chat": "err_chat_queue_full",
    "jobs_per_day": "err_daily_quota",
    "regen_renders_per_day": "err_regen_budget",
}


class Limits:
    def __init__(self, queue: QueueSettings, *, max_retries: int) -> None:
        self.queue = queue
        self.attempts_per_frame = 1 + max_retries

    def renders(self, kind: str, frames: int) -> int:
        """The most SDXL renders a job may spend: each frame drawn, then re-rolled."""
        drawn = 1 if kind == "regen_frame" else frames
        return drawn * self.attempts_per_frame

    def caps_for(self, *, moderator: bool, now: float) -> Caps:
        q = self.queue
        exempt = moderator and q.moderators_exempt
        return Caps(
            queued_total=q.max_queued_total,
            queued_per_user=None if exempt else q.max_queued_per_user,
            queued_per_chat=None if exempt else q.max_queued_per_chat,
            jobs_per_day=None if exempt or not q.jobs_per_day else q.jobs_per_day,
            regen_renders_per_day=None if exempt or not q.regen_renders_per_day else q.regen_renders_per_day,
            since=now - DAY_S,
        )


def refusal_error(refused: Refused, now: float) -> RetryLater:
    """The reply for a cap, with the wait until it frees up when that is known."""
    params: dict[str, object] = {"max": refused.limit}
    if refused.retry_at is not None:
        params["hours"], params["minutes"] = _hours_minutes(refused.retry_at - now)
    if refused.cost is not None:
        params["used"], params["cost"] = refused.used, refused.cost
    return RetryLater(_REFUSAL_KEYS[refused.cap], **params)


def _hours_minutes(seconds: float) -> tuple[int, int]:
    """The wait a user reads; a partial minute counts as a whole one, so it is never "0 min"."""
    minutes = max(1, int(-(-seconds // 60)))
    return divmod(minutes, 60)


@dataclass(frozen=True)
class CapFigures:
    """What the caps are measured against, read by ``Store.enqueue`` in the insert's own transaction."""

    existing: int | None  # a job already made from the same chat message
    queued_total: int
    queued_by_user: int
    queued_in_chat: int  # counted up to the per-chat cap
    cap_th_newest_today: float | None  # when the user's cap-th newest job in the rolling day was made
    regen_renders_today: int


def first_cap_broken(kind: str, renders: int, caps: Caps, figures: CapFigures) -> Refused | None:
    """The first cap a job of ``kind``, costing at most ``renders``, would break, in the order the
    replies are ranked."""
    if figures.queued_total >= caps.queued_total:
        return Refused("queued_total", caps.queued_total)
    if caps.queued_per_user is not None and figures.queued_by_user >= caps.queued_per_user:
        return Refused("queued_per_user", caps.queued_per_user)
    if caps.queued_per_chat is not None and figures.queued_in_chat >= caps.queued_per_chat:
        return Refused("queued_per_chat", caps.queued_per_chat)
    if caps.jobs_per_day is not None and figures.cap_th_newest_today is not None:
        # a slot frees when that job leaves the rolling day
        return Refused("jobs_per_day", caps.jobs_per_day, retry_at=figures.cap_th_newest_today + DAY_S)
    used = figures.regen_renders_today
    over = caps.regen_renders_per_day is not None and used + renders > caps.regen_renders_per_day
    if kind != "story" and over:
        return Refused("regen_renders_per_day", caps.regen_renders_per_day, used=used, cost=renders)
    return None
