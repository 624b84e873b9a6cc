"""The rows the store hands out and takes in: users, jobs, frames, deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiosqlite


@dataclass(frozen=True)
class User:
    id: int
    platform: str
    platform_user_id: str
    display_name: str
    locale: str | None
    first_seen: float
    last_seen: float
    jobs_submitted: int
    boards_delivered: int
    refusals: int
    banned: bool
    ban_reason: str | None

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.platform_user_id}"

    @classmethod
    def unseen(cls, sighting: Sighting) -> User:
        """Someone with no row yet: id 0 (SQLite's ids start at 1) owns no job and counts nothing."""
        return cls(id=0, platform=sighting.platform, platform_user_id=sighting.platform_user_id,
                   display_name=sighting.display_name, locale=sighting.locale, first_seen=0.0, last_seen=0.0,
                   jobs_submitted=0, boards_delivered=0, refusals=0, banned=False, ban_reason=None)


@dataclass(frozen=True)
class Sighting:
    """Who sent a command, as the platform names them: written to ``users`` with the job it queues."""

    platform: str
    platform_user_id: str
    display_name: str = ""
    locale: str | None = None


@dataclass(frozen=True)
class Job:
    id: int
    user_id: int
    platform: str
    chat_id: str
    language: str
    kind: str
    parent_id: int | None
    redo_frame: int | None
    story: str
    mode: str
    frames: int | None
    seed: int
    out_dir: str | None
    status: str
    cancel_requested: bool
    attempts: int
    lease_owner: str | None
    lease_expires_at: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    title: str | None
    grid_path: str | None
    report_path: str | None
    error_type: str | None
    error_message: str | None
    status_ref: str | None = None
    source_ref: str | None = None
    character_image: str | None = None  # the stored path of the user's character picture
    lora: bool = True
    aspect: str = "1:1"


@dataclass(frozen=True)
class NewJob:
    user_id: int  # 0 when enqueue is given the requester's Sighting: it fills this in
    platform: str
    chat_id: str
    language: str
    kind: str
    story: str
    mode: str
    frames: int | None
    seed: int
    parent_id: int | None = None
    redo_frame: int | None = None
    out_dir: str | None = None
    source_ref: str | None = None  # the platform's id of the message that asked for it
    renders: int = 0  # the most SDXL renders it may cost (bot.quotas), for the daily caps
    character_image: str | None = None  # bot.pictures stored it; every frame is checked against it
    lora: bool = True
    aspect: str = "1:1"  # the frames' shape (engine.limits.ASPECTS)


@dataclass(frozen=True)
class FrameRow:
    idx: int
    path: str
    seed: int
    prompt: str
    attempts: int
    identity: float | None
    accepted: bool


@dataclass(frozen=True)
class Delivery:
    id: int
    job_id: int
    platform: str
    chat_id: str
    status: str
    attempts: int
    sending_since: float | None = None
    interrupted: int = 0


@dataclass(frozen=True)
class Finished:
    """A stored result: its delivery, queued in the same transaction, and who gets mentioned."""

    delivery: Delivery
    owner_id: str  # the owner's platform user id


@dataclass(frozen=True)
class QueuedEntry:
    """A queued job as the round-robin order sees it."""

    job_id: int
    user_id: int
    user_last_claimed_at: float | None


def row_to(cls: type, row: aiosqlite.Row) -> Any:
    data = dict(row)
    for name in ("banned", "cancel_requested", "accepted", "lora"):
        if name in data:
            data[name] = bool(data[name])
    return cls(**{k: data[k] for k in cls.__dataclass_fields__})
