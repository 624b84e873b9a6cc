"""The engine port: where a claimed job's board is drawn.

The worker in ``bot/jobs/runner.py`` does not care which implementation it holds:

* ``bot.render.local.LocalEngine`` runs ``StoryEngine`` on this process's single engine thread (the GPU here);
* ``bot.render.arq_client.ArqEngine`` sends the request to GPU workers through Redis (``engine.backend = "arq"``).

Both take the same ``BoardRequest``, report the same ``ProgressEvent``s, stop on the same
signals and raise the same errors, and both return a ``Storyboard`` whose files are in
``out_dir`` on this host.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine.board_files import Storyboard
from engine.rendering.base import ModeOff
from engine.storyboard import BoardRequest, PictureUse, ProgressEvent

ProgressSink = Callable[[ProgressEvent], None]  # thread-safe: may be called from any thread


class EngineUnavailable(Exception):
    """The engine cannot be reached right now (Redis down, no worker). The job waits; it does not fail."""


class ResultTooLarge(Exception):
    """A finished board's files are larger than ``[arq] max_result_mb``: refused, the job fails cleanly."""


@dataclass(frozen=True)
class Availability:
    """How many jobs may render at once now; 0 with a reason while the engine is unreachable."""

    slots: int
    reason: str = ""

    @property
    def up(self) -> bool:
        return self.slots > 0


@dataclass
class StopSignals:
    """Why a render should stop. ``cancel``: the user asked, the work is thrown away.
    ``detach``: this bot stops waiting (shutdown, lease lost); a remote render may go on."""

    cancel: threading.Event
    detach: threading.Event

    @classmethod
    def new(cls) -> StopSignals:
        return cls(threading.Event(), threading.Event())

    def any(self) -> bool:
        return self.cancel.is_set() or self.detach.is_set()


class EnginePort(Protocol):
    name: str

    def describe(self) -> str:
        """One line for the start-up log: what draws, and where."""
        ...

    async def availability(self) -> Availability: ...

    def modes_off(self) -> dict[str, ModeOff]:
        """The render modes known to be off, so the service can refuse them at once; a mode not
        listed may still be refused by the engine that draws the job."""
        ...

    def picture_use(self, mode: str) -> PictureUse | None:
        """What a user's character picture will do on a board in ``mode``; None: not known here."""
        ...

    async def render(
        self, job_key: str, request: BoardRequest, out_dir: Path, *, on_progress: ProgressSink, stop: StopSignals
    ) -> Storyboard:
        """Draw ``request`` into ``out_dir``. Raises ``engine.errors.Cancelled`` when stopped,
        ``EngineUnavailable`` when the engine went away mid-job, or the engine's own error."""
        ...

    async def close(self) -> None: ...
