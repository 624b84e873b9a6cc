"""The small protocol through which ``bot/`` talks to chats, without importing adapters.

The composition root hands the worker a ``ChatGateway``; adapters implement it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

Stage = Literal["planning", "rendering", "step", "validating", "composing", "failed", "cancelled", "waiting"]


@dataclass(frozen=True)
class JobUpdate:
    """Progress of one job, for the chat that asked for it. ``text`` is ready to show."""

    job_id: int
    platform: str
    chat_id: str
    lang: str
    stage: Stage
    text: str
    frame: int | None = None
    total: int | None = None
    status_ref: str | None = None  # the adapter's own handle on the job's status message


@dataclass(frozen=True)
class BoardDelivery:
    """A finished storyboard to post. ``text`` is the localized caption."""

    job_id: int
    platform: str
    chat_id: str
    lang: str
    title: str
    text: str
    grid_path: Path
    report_path: Path
    frame_paths: tuple[Path, ...]
    mode: str
    seed: int
    owner_id: str = ""  # the platform user id of the job's author
    status_ref: str | None = None


class ChatGateway(Protocol):
    async def notify(self, update: JobUpdate) -> None: ...

    async def deliver(self, delivery: BoardDelivery) -> None: ...
