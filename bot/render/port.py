"""The engine port: where a claimed job's board is drawn.

The worker in ``bot/jobs/runner.py`` does not care which implementation it holds:

* ``LocalEngine`` runs ``StoryEngine`` on this process's single engine thread (the GPU here);
* ``bot.render.arq_client.ArqEngine`` sends the request to GPU workers through Redis (``engine.backend = "arq"``).

Both take the same ``BoardRequest``, report the same ``ProgressEvent``s, stop on the same
signals and raise the same errors, and both return a ``Storyboard`` whose files are in
``out_dir`` on this host.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine.board_files import Storyboard
from engine.limits import MODES
from engine.rendering.base import ModeOff
from engine.storyboard import BoardRequest, ProgressEvent, StoryEngine

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

    async def render(
        self, job_key: str, request: BoardRequest, out_dir: Path, *, on_progress: ProgressSink, stop: StopSignals
    ) -> Storyboard:
        """Draw ``request`` into ``out_dir``. Raises ``engine.errors.Cancelled`` when stopped,
        ``EngineUnavailable`` when the engine went away mid-job, or the engine's own error."""
        ...

    async def close(self) -> None: ...


class LocalEngine:
    """``engine.backend = "local"``: the engine in this process, on its one dedicated thread."""

    name = "local"

    def __init__(self, engine: StoryEngine, executor: ThreadPoolExecutor) -> None:
        self.engine = engine
        self.executor = executor

    def describe(self) -> str:
        reasons = self.engine.reasons
        line = (f"planner={self.engine.planner.name} ({reasons.get('planner', '')}); "
                f"renderer={self.engine.renderer.name} ({reasons.get('renderer', '')})")
        if "ref_guided" in reasons:
            line += f"; ref-guided={reasons['ref_guided']}"
        if "gpu" in reasons:
            line += f"; gpu={reasons['gpu']}"
        return line

    async def availability(self) -> Availability:
        return Availability(slots=1)

    def modes_off(self) -> dict[str, ModeOff]:
        return {mode: off for mode in MODES if (off := self.engine.mode_off(mode)) is not None}

    async def render(
        self, job_key: str, request: BoardRequest, out_dir: Path, *, on_progress: ProgressSink, stop: StopSignals
    ) -> Storyboard:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # the engine thread's log lines carry the job id too
        return await loop.run_in_executor(
            self.executor, context.run, self._run, request, out_dir, on_progress, stop.any
        )

    def _run(self, request: BoardRequest, out_dir: Path, on_progress: ProgressSink,
             should_cancel: Callable[[], bool]) -> Storyboard:
        return self.engine.run(request, out_dir, on_progress=on_progress, should_cancel=should_cancel)

    async def close(self) -> None:
        return None
